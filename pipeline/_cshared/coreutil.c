// SPDX-License-Identifier: MIT
#define _GNU_SOURCE
#include "coreutil.h"

#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <bpf/libbpf.h>

PyObject *ap_core_error;

int ap_add_core_error(PyObject *m)
{
	PyObject *mod = PyImport_ImportModule("pipeline._coreerror");

	if (!mod)
		return -1;
	Py_XDECREF(ap_core_error);
	ap_core_error = PyObject_GetAttrString(mod, "CoreError");
	Py_DECREF(mod);
	if (!ap_core_error)
		return -1;
	Py_INCREF(ap_core_error);
	if (PyModule_AddObject(m, "CoreError", ap_core_error)) {
		Py_DECREF(ap_core_error);
		return -1;
	}
	return 0;
}

PyObject *ap_raise(int code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	PyObject *args;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	args = Py_BuildValue("(is)", code < 0 ? -code : code, msg);
	if (args) {
		PyErr_SetObject(ap_core_error ? ap_core_error : PyExc_OSError, args);
		Py_DECREF(args);
	}
	return NULL;
}

int ap_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (!code)
		return -EINVAL;
	return code < 0 ? code : -code;
}

void ap_pin_to_cpu(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static int drop_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	(void)fmt;
	(void)ap;
	return 0;
}

void ap_libbpf_quiet(void)
{
	libbpf_print_fn_t prev = libbpf_set_print(drop_print);
	Dl_info info;

	/* libbpf's own printer lives in libbpf.so: anything else is a hook
	 * another module installed */
	if (prev && prev != drop_print && dladdr((void *)prev, &info) && info.dli_fname &&
	    !strstr(info.dli_fname, "libbpf"))
		libbpf_set_print(prev);
}
