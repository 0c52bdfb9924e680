/* SPDX-License-Identifier: MIT */
/*
 * A recorded history: one record per completed operation, written by the
 * agent that ran it (a user worker thread, or a kernel program) into a
 * buffer of its own, read after the run by the verification and the
 * linearizability checker.
 *
 * Times are CLOCK_MONOTONIC nanoseconds: bpf_ktime_get_ns() in the kernel
 * is the same clock, so user and kernel records order against each other.
 * t_inv is read before the operation starts and t_resp after it returns, so
 * the operation took effect somewhere in [t_inv, t_resp].
 *
 * The layout is fixed, 40 bytes with no padding, because BPF programs write
 * it into the arena and Python reads it with the struct format "<QQQQIBBH".
 */
#ifndef DS_HISTORY_H
#define DS_HISTORY_H

#include "ds_api.h"

/* struct ds_hist_rec.agent: kernel agents have this bit set, the rest is the
 * kernel thread's index; user agents are worker * 256 + thread. */
#define DS_HIST_KERNEL 0x80000000U

struct ds_hist_rec {
	ap_u64 t_inv;  /* CLOCK_MONOTONIC ns, before the call */
	ap_u64 t_resp; /* CLOCK_MONOTONIC ns, after it returned */
	ap_u64 key;    /* the key; for queues and stacks the value pushed or popped */
	ap_u64 value;  /* maps: the value inserted, found or deleted; else 0 */
	ap_u32 agent;  /* who ran it (DS_HIST_KERNEL | index, or worker * 256 + thread) */
	ap_u8 op;      /* enum ds_op */
	ap_u8 result;  /* enum ds_result */
	ap_u16 flags;  /* 0; reserved */
};

_Static_assert(sizeof(struct ds_hist_rec) == 40, "struct ds_hist_rec is read as <QQQQIBBH");

#endif /* DS_HISTORY_H */
