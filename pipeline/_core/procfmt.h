/* SPDX-License-Identifier: MIT */
/*
 * The process context of an event, from the process table (include/proc.h),
 * added by the drain while it formats a batch: hash searches in the arena,
 * no system call. One epoch section covers the whole batch.
 */
#ifndef AP_PROCFMT_H
#define AP_PROCFMT_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "ds/space.h"
#include "proc.h"

#define AP_ANCESTORS_MAX 64
/* bytes an executable's fields may take: name, escaped path, its base64 and
 * the truncation flag */
#define AP_PROCFMT_EXE_MAX (96 + AP_PROC_EXE_CAP * 6 + (AP_PROC_EXE_CAP + 2) / 3 * 4)
/* bytes the fields may add to a line with `depth` ancestors: the process's
 * and its parent's exe and parent_comm, each ancestor's pid, escaped comm
 * and exe */
#define AP_PROCFMT_LINE(depth)                                                                 \
	(96 + AP_COMM_LEN * 6 + 2 * AP_PROCFMT_EXE_MAX +                                       \
	 (size_t)(depth) * (48 + AP_COMM_LEN * 6 + AP_PROCFMT_EXE_MAX))
#define AP_PROCFMT_MAX AP_PROCFMT_LINE(AP_ANCESTORS_MAX)

struct ap_procfmt {
	struct ds_ctx c;
	uint64_t table; /* the hash instance, 0: off */
	uint32_t depth; /* ancestors listed at most */
	int attached;
	/* the table's counters in the root: keep, the exited stack, reaped */
	struct ap_proc_counts *counts;
	/* exited entries taken from the stack and not reaped yet, linked by
	 * exit_next (the reader owns that link once it took them) */
	uint64_t pending;
	uint64_t npending;
};

/* Enter / leave the batch's epoch section; begin returns 0 when the batch
 * may look things up. */
int ap_procfmt_begin(struct ap_procfmt *pf);
void ap_procfmt_end(struct ap_procfmt *pf);

/* Writes `,"proc":...,"exe":...,"parent_comm":...,"parent_exe":...,
 * "ancestors":[...]` at out for ev; returns the bytes (at most
 * AP_PROCFMT_LINE(pf->depth)). */
size_t ap_procfmt_fields(struct ap_procfmt *pf, char *out, const struct ap_event *ev);

/* Delete and retire every exited entry no queued event can need any more:
 * those whose exit_mark is at most head, the queue's consumer position
 * after a drain (every event reserved before their exit is formatted).
 * Returns how many. */
uint64_t ap_procfmt_reap(struct ap_procfmt *pf, uint64_t head);

#endif
