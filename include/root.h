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
#include "filter.h"
#include "proc.h"

#define AP_ROOT_MAGIC 0x6170697065617270ULL /* "praepipa" */
#define AP_ROOT_VERSION 3

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
	/* The data-structure space (include/ds/space.h: allocator, epochs,
	 * directory of instances) laid out after the queue's slots, in pages of
	 * this same arena; what a process attaching through the pins reads to
	 * find it. ds_pages 0: no space. */
	ap_u64 ds_first_page;
	ap_u64 ds_pages;
	ap_u64 creator_pid;
	/* the process table (proc.h), kept by bpf/proctab.bpf.c when attached */
	struct ap_proc_counts proc;
	/* The path, uid and cgroup filters (include/filter.h): filter_seq
	 * counts half-steps (2g: generation g in force; odd: the next one is
	 * being written), filter_tabs is the arena address of the two tables,
	 * filter_seed the per-run seed of the prefix hash; filter_unjudged
	 * counts events emitted unjudged because the tables changed under them
	 * AP_FILTER_MAX_RETRIES times. */
	ap_u64 filter_seq;
	ap_u64 filter_tabs;
	ap_u64 filter_seed;
	ap_u64 filter_unjudged;
};

#define AP_ROOT() ARENA_AT(struct ap_root, ARENA_ROOT_OFFSET)

_Static_assert(sizeof(struct ap_root) <= ARENA_PAGE_SIZE, "the root fits its page");

#endif /* AP_ROOT_H */
