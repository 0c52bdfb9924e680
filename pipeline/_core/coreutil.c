// SPDX-License-Identifier: MIT
#define _GNU_SOURCE
#include "coreutil.h"

#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>

PyObject *ap_core_error;

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
