/* SPDX-License-Identifier: MIT */
/* The context of the burst generator (SEC("syscall") burst in producer.bpf.c):
 * userspace passes it to bpf_prog_test_run_opts and reads the counts back. */
#ifndef AP_BURST_H
#define AP_BURST_H

#include "arena/arena.h"

/* Events per call at most: a long bpf_loop is not preempted (PLATFORM.md). */
#define AP_BURST_MAX_PER_CALL (1 << 16)

struct ap_burst_args {
	ap_u64 count;     /* in: events to produce in this call */
	ap_u64 published; /* out: events published */
	ap_u64 dropped;   /* out: events dropped (queue full or busy) */
};

#endif
