/* SPDX-License-Identifier: MIT */
/*
 * pipeline._ds.DsArena: the arena data structures (include/ds) from
 * Python. One arena map of its own (bpf/ds_ops.bpf.c), mapped at ARENA_BASE:
 *
 *   page 0          the NULL guard (never handed out)
 *   page 1          struct ap_ds_root: what another process needs to find
 *                   the data-structure space after attaching to the pin
 *   pages 2..       the space (include/ds/space.h): directory, heap, epochs
 */
#ifndef AP_DS_H
#define AP_DS_H

#include <Python.h>
#include <stdint.h>

#define AP_DS_ROOT_MAGIC 0x746f6f7273646170ULL /* "padsroot" */
#define AP_DS_ROOT_PAGE 1
#define AP_DS_SPACE_FIRST 2

struct ap_ds_root {
	uint64_t magic;
	uint64_t version;
	uint64_t arena_pages;
	uint64_t space_first_page;
	uint64_t space_pages;
	uint64_t creator_pid;
};

/* Adds DsArena, the ds constants and ds_meta() to the module (which must
 * already hold CoreError). Returns 0, or -1 with an exception set. */
int ap_ds_add_to_module(PyObject *m);

#endif
