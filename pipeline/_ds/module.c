// SPDX-License-Identifier: MIT
/*
 * pipeline._ds: the arena data-structure library (include/ds) from Python,
 * a module of its own beside the runtime (pipeline._core). It shares no C
 * state with the other modules: CoreError comes from pipeline._coreerror,
 * and "one arena per process" is checked on the address space itself
 * (ap_arena_base_free), which every module sees alike.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "coreutil.h"
#include "ds.h"

static struct PyModuleDef ds_module = {
	PyModuleDef_HEAD_INIT, "pipeline._ds", "The arena data structures of arena-pipeline.", -1, NULL,
	NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ds(void)
{
	PyObject *m = PyModule_Create(&ds_module);

	if (!m)
		return NULL;
	ap_libbpf_quiet();
	if (ap_add_core_error(m) || ap_ds_add_to_module(m)) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
