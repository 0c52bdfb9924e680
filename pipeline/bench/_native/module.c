// SPDX-License-Identifier: MIT
/*
 * pipeline.bench._native: the native benchmarks, a module of their own so
 * the runtime (pipeline._core) carries none of their code. The transport
 * benchmark (transport.c) opens its own capture session (session.c, built
 * into this module too); the data-structure benchmark (dsbench.c) drives
 * the same batch loop (include/ds/batch.h ds_exec) and kernel batches
 * (dsops.c) as pipeline._ds. Everything runs with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "coreutil.h"
#include "dsbench.h"
#include "session.h"
#include "transport.h"

static PyObject *transport_dict(const struct ap_transport_result *r)
{
	return Py_BuildValue("{sKsKsKsKsKsKsd}", "events", (unsigned long long)r->events,
			     "delivered", (unsigned long long)r->delivered, "dropped",
			     (unsigned long long)r->dropped, "duplicates",
			     (unsigned long long)r->duplicates, "strays", (unsigned long long)r->strays,
			     "unseen", (unsigned long long)r->unseen, "seconds", r->seconds);
}

/* bench_arena(events, per_call=4096, prod_cpu=0, cons_cpu=1, arena_pages=32768,
 *             queue_capacity=65536) -> dict: a capture session of its own,
 * enabled, its burst program as the producer and its queue consumed in C */
static PyObject *native_bench_arena(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "events", "per_call", "prod_cpu", "cons_cpu", "arena_pages",
				  "queue_capacity", NULL };
	unsigned long long events, per_call = 4096, pages = 32768, cap = 65536;
	int pc = 0, cc = 1, ret;
	struct ap_transport_result r = { 0 };
	struct ap_session s;
	char err[AP_ERR_LEN];

	if (!PyArg_ParseTupleAndKeywords(args, kw, "K|KiiKK", kwlist, &events, &per_call, &pc, &cc,
					 &pages, &cap))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	ret = ap_session_open(&s, pages, cap, err, sizeof(err));
	if (!ret) {
		ap_session_enable(&s, 1);
		ret = ap_bench_arena(&s, events, per_call, pc, cc, &r, err, sizeof(err));
		ap_session_close(&s);
	}
	Py_END_ALLOW_THREADS
	if (ret)
		return ap_raise(ret, "%s", err);
	return transport_dict(&r);
}

/* bench_ringbuf(events, per_call=4096, ring_bytes=32 MiB, prod_cpu=0, cons_cpu=1) -> dict */
static PyObject *native_bench_ringbuf(PyObject *Py_UNUSED(m), PyObject *args)
{
	unsigned long long events, per_call = 4096, ring = 32ULL << 20;
	int pc = 0, cc = 1, ret;
	struct ap_transport_result r = { 0 };
	char err[AP_ERR_LEN];

	if (!PyArg_ParseTuple(args, "K|KKii", &events, &per_call, &ring, &pc, &cc))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	ret = ap_bench_ringbuf(events, per_call, ring, pc, cc, &r, err, sizeof(err));
	Py_END_ALLOW_THREADS
	if (ret)
		return ap_raise(ret, "%s", err);
	return transport_dict(&r);
}

static PyMethodDef native_methods[] = {
	{ "bench_arena", (PyCFunction)(void (*)(void))native_bench_arena, METH_VARARGS | METH_KEYWORDS,
	  "bench_arena(events, per_call=4096, prod_cpu=0, cons_cpu=1, arena_pages=32768, "
	  "queue_capacity=65536) -> dict: the arena queue transport" },
	{ "bench_ringbuf", native_bench_ringbuf, METH_VARARGS,
	  "bench_ringbuf(events, per_call=4096, ring_bytes=32MiB, prod_cpu=0, cons_cpu=1) -> dict" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef native_module = {
	PyModuleDef_HEAD_INIT, "pipeline.bench._native", "The native benchmarks of arena-pipeline.", -1,
	native_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
	PyObject *m = PyModule_Create(&native_module);

	if (!m)
		return NULL;
	ap_libbpf_quiet();
	if (ap_add_core_error(m) || ap_dsbench_add_to_module(m)) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
