/* SPDX-License-Identifier: MIT */
/*
 * The stress driver's timed loop (python -m pipeline stress): one user
 * thread runs operations on one instance for a number of operations or
 * until a deadline, drawing them itself (op mix, key distribution), with
 * everything verification needs written as it goes into buffers that the
 * loop owns or that are shared with the driver:
 *   - per key, successful inserts minus successful deletes (keyed role), in
 *     a counter array of the thread's own (net_own: plain updates, no
 *     cache line shared with another agent) or shared by every user agent
 *     (atomic adds);
 *   - the values popped, in order (consumer role);
 *   - optionally one struct ds_hist_rec per operation (include/ds/history.h);
 *   - the latency of one operation in 2^sample_shift.
 * Nothing is checked in the loop but the value a search or delete returns
 * against the key (values are inserted equal to their keys); the rest is
 * checked after the run from these buffers.
 *
 * The control block is an array of u64 in memory shared with the driver
 * (AP_CTL_*): start, stop and drain flags, the deadline, and per agent a
 * slot of one cache line with its progress and the key it is changing, so
 * that the driver can read what a worker killed mid-run had done.
 */
#ifndef AP_RUNLOOP_H
#define AP_RUNLOOP_H

#include <stdint.h>

#include "ds/history.h"
#include "ds/batch.h"

enum ap_role {
	AP_ROLE_KEYED = 0,    /* insert/delete/search by mix[] on keys */
	AP_ROLE_PRODUCER = 1, /* push producer << AP_SEQ_BITS | sequence */
	AP_ROLE_CONSUMER = 2, /* pop until the drain flag is up and the structure is empty */
};

#define AP_SEQ_BITS 40

/* The control block, in u64 words. */
#define AP_CTL_GO 0       /* nonzero: start */
#define AP_CTL_STOP 1     /* nonzero: every agent stops at its next check */
#define AP_CTL_DRAIN 2    /* nonzero: producers are done; consumers stop when empty */
#define AP_CTL_DEADLINE 3 /* CLOCK_MONOTONIC ns, or 0 */
#define AP_CTL_SLOT0 8
#define AP_CTL_SLOT_WORDS 8 /* one cache line per agent */
/* words of a slot */
#define AP_SLOT_PROGRESS 0 /* operations done so far */
#define AP_SLOT_INFLIGHT 1 /* key + 1 of the insert or delete running now, or 0 */
#define AP_SLOT_STATE 2    /* 1 running, 2 finished */

/* how often the loop looks at the control block and the clock */
#define AP_CHECK_EVERY 1024
/* a consumer in the drain gives up on a queue that stays BUSY this long */
#define AP_DRAIN_STUCK_NS 1000000000ULL

struct ap_runloop {
	/* in */
	uint64_t ds;
	uint32_t type;
	uint32_t role; /* enum ap_role */
	uint64_t ops;  /* keyed: operations; producer: values pushed; 0: no bound */
	uint32_t mix[3]; /* insert, delete, search weights */
	uint64_t key_lo, keys; /* keys key_lo .. key_lo + keys - 1 */
	double theta;          /* 0: uniform; 0 < theta < 1: zipf, rank r is key key_lo + r */
	uint64_t seed;
	uint64_t producer;     /* producer role: the id in the values' high bits */
	int32_t *net;          /* keys counters, or NULL */
	uint32_t net_own;      /* net is this thread's alone */
	uint64_t *control;     /* the control block */
	uint32_t slot;
	uint32_t agent;        /* struct ds_hist_rec.agent */
	uint32_t sample_shift; /* time one operation in 2^sample_shift */
	uint32_t *samples;     /* latencies in ns (saturated), sample_cap of them */
	uint64_t sample_cap;
	struct ds_hist_rec *hist; /* hist_cap records; a full buffer ends the loop */
	uint64_t hist_cap;
	/* out */
	uint64_t done;
	uint64_t res[4][8]; /* per kind (insert, delete, search, pop) per enum ds_result */
	uint64_t bad_values;
	uint64_t n_samples, n_hist;
	uint64_t *popped; /* consumer role: malloc'd, n_popped values; the caller frees it */
	uint64_t n_popped;
	uint64_t pushed;
	uint64_t ns;
	uint64_t cpu_ns; /* the thread's CPU time over the same span */
	int err; /* 0, or a positive errno (ENOMEM: popped could not grow) */
	int stuck; /* consumer: the queue stayed BUSY for AP_DRAIN_STUCK_NS after the drain began */
};

/* Runs the loop on the calling thread's context c (no GIL needed). */
void ap_runloop(struct ds_ctx *c, struct ap_runloop *r);

#endif
