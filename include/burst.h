/* SPDX-License-Identifier: MIT */
/* The context of the burst generator (SEC("syscall") burst in producer.bpf.c):
 * userspace passes it to bpf_prog_test_run_opts and reads the counts back. */
#ifndef AP_BURST_H
#define AP_BURST_H

#include "arena/arena.h"

/* Events per call at most: a long bpf_loop is not preempted (docs/platform.md). */
#define AP_BURST_MAX_PER_CALL (1 << 16)

struct ap_burst_args {
	ap_u64 count;     /* in: events to produce in this call */
	ap_u64 published; /* out: events published */
	ap_u64 dropped;   /* out: events dropped (queue full or busy) */
};

#if ARENA_IS_BPF
/* Runs one_event count times with bpf_loop, whose context must live on the
 * stack, and reports the counts back into the program's context. */
#define ap_burst_run(args, one_event)                                          \
	({                                                                     \
		struct ap_burst_args ___local = {};                            \
		___local.count = (args)->count;                                \
		if (___local.count > AP_BURST_MAX_PER_CALL)                    \
			___local.count = AP_BURST_MAX_PER_CALL;                \
		bpf_loop(___local.count, (one_event), &___local, 0);           \
		(args)->count = ___local.count;                                \
		(args)->published = ___local.published;                        \
		(args)->dropped = ___local.dropped;                            \
		0;                                                             \
	})
#endif

#endif
