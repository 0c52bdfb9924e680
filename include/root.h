/* SPDX-License-Identifier: MIT */
/*
 * The arena root: the page at ARENA_ROOT_OFFSET, laid out by userspace before
 * any program is attached and found at the same address by every side.
 */
#ifndef AP_ROOT_H
#define AP_ROOT_H

#include "arena/arena.h"
#include "event.h"
#include "evq.h"

#define AP_ROOT_MAGIC 0x6170697065617270ULL /* "praepipa" */
#define AP_ROOT_VERSION 1

/* Kernel-side filters: an event that does not pass is not produced at all
 * (it takes no sequence number). */
struct ap_filter {
	ap_u32 pid;        /* only this tgid, when nonzero */
	ap_u32 ignore_pid; /* never this tgid (the pipeline itself), when nonzero */
	ap_u32 has_comm;   /* only tasks whose comm equals comm */
	ap_u32 pad;
	char comm[AP_COMM_LEN];
};

struct ap_root {
	ap_u64 magic;
	ap_u32 version;
	ap_u32 enabled; /* producers do nothing until userspace sets this */
	ap_u64 arena_pages;
	ap_u64 ready_ns; /* monotonic time the producers were enabled */
	struct ap_filter filter;
	struct evq evq;
};

#define AP_ROOT() ARENA_AT(struct ap_root, ARENA_ROOT_OFFSET)

#endif /* AP_ROOT_H */
