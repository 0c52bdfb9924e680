// SPDX-License-Identifier: MIT
/*
 * pipeline._linearize: the linearizability checker's C core (lin.h) for
 * Python. A module of its own: it needs no libbpf and no arena, and the
 * runtime (pipeline._core) does not carry it. The records are read from any
 * buffer (bytes, a memoryview of a file or of the arena) with the GIL
 * released while the check runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>
#include <string.h>

#include "lin.h"

/* The records, 8-byte aligned (copied when the buffer is not). */
struct recs {
	Py_buffer view;
	const struct ds_hist_rec *r;
	void *copy;
	size_t n;
};

static int get_recs(PyObject *obj, struct recs *rs)
{
	memset(rs, 0, sizeof(*rs));
	if (PyObject_GetBuffer(obj, &rs->view, PyBUF_C_CONTIGUOUS) < 0)
		return -1;
	if (rs->view.len % (Py_ssize_t)sizeof(struct ds_hist_rec)) {
		PyErr_Format(PyExc_ValueError, "a history is whole %zu-byte records; %zd bytes is not",
			     sizeof(struct ds_hist_rec), rs->view.len);
		PyBuffer_Release(&rs->view);
		return -1;
	}
	rs->n = (size_t)rs->view.len / sizeof(struct ds_hist_rec);
	if ((uintptr_t)rs->view.buf % _Alignof(struct ds_hist_rec)) {
		rs->copy = malloc(rs->view.len ? (size_t)rs->view.len : 1);
		if (!rs->copy) {
			PyBuffer_Release(&rs->view);
			PyErr_NoMemory();
			return -1;
		}
		memcpy(rs->copy, rs->view.buf, (size_t)rs->view.len);
		rs->r = rs->copy;
	} else {
		rs->r = rs->view.buf;
	}
	return 0;
}

static void put_recs(struct recs *rs)
{
	free(rs->copy);
	PyBuffer_Release(&rs->view);
}

static PyObject *result(const struct lin_out *o)
{
	PyObject *idx;
	uint32_t i;

	if (o->verdict == LIN_NO_MEMORY)
		return PyErr_NoMemory();
	idx = PyTuple_New(o->nidx);
	if (!idx)
		return NULL;
	for (i = 0; i < o->nidx; i++) {
		PyObject *x = PyLong_FromUnsignedLongLong(o->idx[i]);

		if (!x) {
			Py_DECREF(idx);
			return NULL;
		}
		PyTuple_SET_ITEM(idx, i, x);
	}
	return Py_BuildValue("{si si sK sK sK sK sK sK sK sK si sK sN ss}", "verdict", o->verdict, "what",
			     o->what, "checked", (unsigned long long)o->checked, "ignored",
			     (unsigned long long)o->ignored, "unchecked", (unsigned long long)o->unchecked,
			     "partitions", (unsigned long long)o->partitions, "steps",
			     (unsigned long long)o->steps, "key", (unsigned long long)o->key, "key_ops",
			     (unsigned long long)o->key_ops, "prefix", (unsigned long long)o->prefix,
			     "state_present", o->state_present, "state_value",
			     (unsigned long long)o->state_value, "records", idx, "error", o->err);
}

static PyObject *check_keyed(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"records", "ignore_values", "initial", "budget", NULL};
	PyObject *records, *initial = Py_None;
	int ignore_values = 0;
	unsigned long long budget = 0;
	Py_buffer init = {0};
	struct lin_out out;
	struct recs rs;
	size_t ninit = 0;

	(void)self;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|pOK", kwlist, &records, &ignore_values, &initial,
					 &budget))
		return NULL;
	if (initial != Py_None) {
		if (PyObject_GetBuffer(initial, &init, PyBUF_C_CONTIGUOUS) < 0)
			return NULL;
		if (init.len % 16 || (uintptr_t)init.buf % 8) {
			PyBuffer_Release(&init);
			PyErr_SetString(PyExc_ValueError, "initial: aligned (key, value) pairs of 64-bit words");
			return NULL;
		}
		ninit = (size_t)init.len / 16;
	}
	if (get_recs(records, &rs) < 0) {
		if (initial != Py_None)
			PyBuffer_Release(&init);
		return NULL;
	}
	Py_BEGIN_ALLOW_THREADS
	lin_check_keyed(rs.r, rs.n, ignore_values ? LIN_IGNORE_VALUES : 0,
			ninit ? (const uint64_t(*)[2])init.buf : NULL, ninit, budget, &out);
	Py_END_ALLOW_THREADS
	put_recs(&rs);
	if (initial != Py_None)
		PyBuffer_Release(&init);
	return result(&out);
}

static PyObject *check_seq(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"records", "lifo", "budget", NULL};
	PyObject *records;
	unsigned long long budget = 0;
	int lifo = 0;
	struct lin_out out;
	struct recs rs;

	(void)self;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|pK", kwlist, &records, &lifo, &budget))
		return NULL;
	if (get_recs(records, &rs) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	lin_check_seq(rs.r, rs.n, lifo, budget, &out);
	Py_END_ALLOW_THREADS
	put_recs(&rs);
	return result(&out);
}

static PyMethodDef methods[] = {
	{"check_keyed", (PyCFunction)(void (*)(void))check_keyed, METH_VARARGS | METH_KEYWORDS,
	 "check_keyed(records, ignore_values=False, initial=None, budget=0) -> dict"},
	{"check_seq", (PyCFunction)(void (*)(void))check_seq, METH_VARARGS | METH_KEYWORDS,
	 "check_seq(records, lifo=False, budget=0) -> dict"},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef lin_module = {
	PyModuleDef_HEAD_INIT, "pipeline._linearize",
	"The linearizability checker's C core (see pipeline.linearize).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__linearize(void)
{
	PyObject *m = PyModule_Create(&lin_module);

	if (!m)
		return NULL;
	if (PyModule_AddIntConstant(m, "RECORD_SIZE", (long)sizeof(struct ds_hist_rec)) ||
	    PyModule_AddIntConstant(m, "IDX_MAX", LIN_IDX_MAX)) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
