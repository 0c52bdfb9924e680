/* SPDX-License-Identifier: MIT */
/*
 * The process table (include/proc.h) from userspace: seeding entries and
 * taking a consistent copy of the live table. Both run inside the caller's
 * epoch section (ds_enter), so no entry they touch is freed under them.
 */
#ifndef AP_DS_PROCTAB_H
#define AP_DS_PROCTAB_H

#include <stddef.h>
#include <stdint.h>

#include "ds/registry.h"
#include "proc.h"

struct ap_proc_seeded {
	uint64_t inserted; /* new entries, flagged AP_PROC_SEEDED */
	uint64_t present;  /* the kernel had the pid already (it forked since): left as it is */
	uint64_t nomem;    /* no memory for the entry or its node */
};

/* Inserts n entries (pid, fields) into the table's hash. */
void ap_proc_seed(struct ds_ctx *c, uint64_t table, const struct ap_proc *in, size_t n,
		  struct ap_proc_seeded *out);

/* Copies up to cap entries of the table into out (each read whole under its
 * sequence word); returns how many, or -1 when the walk itself failed. */
long ap_proc_snapshot(struct ds_ctx *c, uint64_t table, struct ap_proc *out, size_t cap);

#endif
