/* SPDX-License-Identifier: MIT */
/*
 * Giving a space's free pages back to the kernel. Userspace cannot free
 * arena pages (only bpf_arena_free_pages can), so it asks the sleepable
 * program ds_trim (bpf/ds_ops.bpf.c), run with bpf_prog_test_run_opts,
 * with this context. Kernel batches of ds_run_NAME also trim at their end
 * when the free stack is above its high watermark (DS_TRIM_AUTO_BUDGET
 * pages at most per batch). The allocator's side: include/arena/alloc.h.
 */
#ifndef DS_TRIM_H
#define DS_TRIM_H

#include "arena/arena.h"

/* pages a kernel batch gives back at most, after its operations */
#define DS_TRIM_AUTO_BUDGET 256
/* pages one ds_trim call takes at most (bpf_arena_free_pages is called per
 * page, and a long kernel call is not preempted: docs/platform.md) */
#define DS_TRIM_MAX_BUDGET 4096

struct ds_trim_args {
	/* in */
	ap_u64 heap;   /* struct arena_heap address */
	ap_u64 budget; /* pages to take at most (1..DS_TRIM_MAX_BUDGET) */
	ap_u32 force;  /* 1: down to trim_keep even below trim_high */
	ap_s32 status; /* out: 0, or -1 for a bad heap address */
	/* out */
	ap_u64 given;       /* pages given back by this call */
	ap_u64 quarantined; /* pages waiting for their grace period */
	ap_u64 free_pages;  /* left on the free stack */
};

#endif /* DS_TRIM_H */
