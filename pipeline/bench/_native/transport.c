// SPDX-License-Identifier: MIT
/*
 * Both transports run the same way: a producer thread on prod_cpu runs the
 * burst program (per_call events a call) until `events` sequence numbers are
 * used up; a consumer thread on cons_cpu busy-polls its transport, reading
 * each record's sequence number into a bitmap. The run ends when the
 * consumer has read everything the producer published.
 */
#define _GNU_SOURCE
#include "transport.h"

#include "coreutil.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bench_ringbuf.skel.h"
#include "burst.h"

struct run {
	/* producer */
	int prog_fd;
	uint64_t events, per_call;
	int prod_cpu, cons_cpu;
	_Atomic uint64_t published, dropped;
	_Atomic int producer_done;
	int producer_err;
	/* consumer */
	uint64_t seq_base;
	uint64_t *seen; /* bitmap over [seq_base, seq_base + events) */
	uint64_t delivered, duplicates, strays;
	struct evq *q;            /* arena */
	struct ring_buffer *ring; /* ring buffer */
};


static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *producer(void *arg)
{
	struct run *r = arg;
	uint64_t left = r->events;

	ap_pin_to_cpu(r->prod_cpu);
	while (left) {
		struct ap_burst_args a = { .count = left < r->per_call ? left : r->per_call };
		LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &a, .ctx_size_in = sizeof(a));

		if (bpf_prog_test_run_opts(r->prog_fd, &opts) || opts.retval) {
			r->producer_err = errno ? errno : EINVAL;
			break;
		}
		atomic_fetch_add(&r->published, a.published);
		atomic_fetch_add(&r->dropped, a.dropped);
		left -= a.count;
	}
	atomic_store(&r->producer_done, 1);
	return NULL;
}

static inline void note_seq(struct run *r, uint64_t seq)
{
	uint64_t i = seq - r->seq_base;

	if (i >= r->events) {
		r->strays++;
		return;
	}
	if (r->seen[i / 64] & (1ULL << (i % 64)))
		r->duplicates++;
	r->seen[i / 64] |= 1ULL << (i % 64);
	r->delivered++;
}

static int finished(struct run *r)
{
	return atomic_load(&r->producer_done) && r->delivered >= atomic_load(&r->published);
}

static void note_event(const struct ap_event *ev, void *ctx)
{
	note_seq(ctx, ev->seq);
}

static void *arena_consumer(void *arg)
{
	struct run *r = arg;

	ap_pin_to_cpu(r->cons_cpu);
	for (;;) {
		if (evq_consume(r->q, 1 << 16, note_event, r))
			continue;
		if (finished(r))
			break;
		__builtin_ia32_pause();
	}
	return NULL;
}

static int ring_record(void *ctx, void *data, size_t size)
{
	struct run *r = ctx;

	if (size >= sizeof(struct ap_event_head))
		note_seq(r, ((const struct ap_event_head *)data)->seq);
	return 0;
}

static void *ring_consumer(void *arg)
{
	struct run *r = arg;

	ap_pin_to_cpu(r->cons_cpu);
	for (;;) {
		if (ring_buffer__consume(r->ring) > 0)
			continue;
		if (finished(r))
			break;
		__builtin_ia32_pause();
	}
	return NULL;
}

static int run_pair(struct run *r, void *(*consumer)(void *), struct ap_transport_result *res,
		    char *err, size_t errlen)
{
	pthread_t pt, ct;
	double t0;
	uint64_t i, seen = 0;

	r->seen = calloc((r->events + 63) / 64, sizeof(uint64_t));
	if (!r->seen) {
		snprintf(err, errlen, "out of memory for %llu sequence numbers",
			 (unsigned long long)r->events);
		return -ENOMEM;
	}
	t0 = now_s();
	/* consumer first: it must be polling before the producer starts */
	pthread_create(&ct, NULL, consumer, r);
	pthread_create(&pt, NULL, producer, r);
	pthread_join(pt, NULL);
	pthread_join(ct, NULL);
	res->seconds = now_s() - t0;
	for (i = 0; i < (r->events + 63) / 64; i++)
		seen += (uint64_t)__builtin_popcountll(r->seen[i]);
	free(r->seen);
	if (r->producer_err) {
		snprintf(err, errlen, "running the burst program failed: %s",
			 strerror(r->producer_err));
		return -r->producer_err;
	}
	res->events = r->events;
	res->delivered = r->delivered;
	res->dropped = atomic_load(&r->dropped);
	res->duplicates = r->duplicates;
	res->strays = r->strays;
	/* numbers neither read nor counted as dropped */
	res->unseen = seen + res->dropped <= r->events ? r->events - seen - res->dropped : 0;
	return 0;
}

int ap_bench_arena(struct ap_session *s, uint64_t events, uint64_t per_call, int prod_cpu,
		   int cons_cpu, struct ap_transport_result *res, char *err, size_t errlen)
{
	struct run r = { 0 };

	r.prog_fd = ap_session_burst_fd(s);
	r.events = events;
	r.per_call = per_call ? per_call : 4096;
	r.prod_cpu = prod_cpu;
	r.cons_cpu = cons_cpu;
	r.q = s->q;
	r.seq_base = arena_atomic_load(&s->q->seq, ARENA_ACQUIRE);
	return run_pair(&r, arena_consumer, res, err, errlen);
}

int ap_bench_ringbuf(uint64_t events, uint64_t per_call, uint64_t ring_bytes, int prod_cpu,
		     int cons_cpu, struct ap_transport_result *res, char *err, size_t errlen)
{
	struct bench_ringbuf_bpf *skel = bench_ringbuf_bpf__open();
	struct run r = { 0 };
	int ret;

	if (!skel) {
		snprintf(err, errlen, "cannot open the ring buffer benchmark: %s", strerror(errno));
		return -errno;
	}
	bpf_map__set_max_entries(skel->maps.events, (uint32_t)ring_bytes);
	ret = bench_ringbuf_bpf__load(skel);
	if (ret) {
		ret = -errno;
		snprintf(err, errlen, "cannot load the ring buffer benchmark: %s", strerror(-ret));
		bench_ringbuf_bpf__destroy(skel);
		return ret;
	}
	r.ring = ring_buffer__new(bpf_map__fd(skel->maps.events), ring_record, &r, NULL);
	if (!r.ring) {
		ret = -errno;
		snprintf(err, errlen, "cannot open the ring buffer: %s", strerror(-ret));
		bench_ringbuf_bpf__destroy(skel);
		return ret;
	}
	r.prog_fd = bpf_program__fd(skel->progs.ring_burst);
	r.events = events;
	r.per_call = per_call ? per_call : 4096;
	r.prod_cpu = prod_cpu;
	r.cons_cpu = cons_cpu;
	r.seq_base = skel->bss->next_seq;
	ret = run_pair(&r, ring_consumer, res, err, errlen);
	ring_buffer__free(r.ring);
	bench_ringbuf_bpf__destroy(skel);
	return ret;
}
