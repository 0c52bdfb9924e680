/* SPDX-License-Identifier: MIT */
/*
 * Shared by the C tests: a userspace arena (an anonymous mapping at
 * ARENA_BASE, standing in for the BPF arena map in the pure-userspace
 * tests), checks that report where they failed, threads, a clock.
 */
#ifndef TCOMMON_H
#define TCOMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ds/space.h"
#include "ds/batch.h"

static int t_failures;

#define CHECK(cond, ...)                                                              \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                 \
			fputc('\n', stderr);                                          \
			t_failures++;                                                 \
		}                                                                     \
	} while (0)

#define REQUIRE(cond, ...)                                                            \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "FATAL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                 \
			fputc('\n', stderr);                                          \
			exit(1);                                                      \
		}                                                                     \
	} while (0)

/* pages of the test arena (1 GiB of address space, backed on touch) */
#define T_ARENA_PAGES 262144ULL

/* Map a userspace arena at ARENA_BASE (only for tests without a BPF map).
 * Shared, so that a forked child works on the same memory, as a process
 * mapping the real arena would. */
static inline void t_map_arena(void)
{
	void *p = mmap((void *)ARENA_BASE, T_ARENA_PAGES * ARENA_PAGE_SIZE, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);

	REQUIRE(p == (void *)ARENA_BASE, "mmap at %#llx: %s", (unsigned long long)ARENA_BASE, strerror(errno));
}

/* A space over pages [first, first + n) of the test arena. */
static inline struct ds_space *t_space(ap_u64 first, ap_u64 n, ap_u64 heap_flags)
{
	struct ds_space *sp = ds_space_init(first, n, 2, 4, heap_flags);

	REQUIRE(sp, "ds_space_init");
	return sp;
}

static inline double t_now(void)
{
	return (double)arena_now_ns() / 1e9;
}

static inline ap_u64 t_rand(ap_u64 *s)
{
	return arena_xorshift64(s);
}

/*
 * Bounded waits. A loop that waits for other threads (a consumer for
 * values, a producer for room) watches a counter that moves while the run
 * makes progress; after T_STALL_S seconds without a change it gives up, so
 * that a lost or malformed value fails with a message naming what is
 * missing instead of hanging until the harness kills the process.
 */
#define T_STALL_S 20

struct t_stall {
	ap_u64 last;
	double since; /* 0: not started */
};

/* 1 once value has not changed for T_STALL_S seconds of calls. */
static inline int t_stalled(struct t_stall *st, ap_u64 value)
{
	double now = t_now();

	if (st->since == 0 || value != st->last) {
		st->last = value;
		st->since = now;
		return 0;
	}
	return now - st->since > T_STALL_S;
}

/* Run fn(i) on n threads and wait for them. */
struct t_thread {
	pthread_t tid;
	int index;
	void *arg;
	void *(*fn)(struct t_thread *);
};

static void *t_trampoline(void *p)
{
	struct t_thread *t = (struct t_thread *)p;

	return t->fn(t);
}

static inline void t_run_threads(int n, void *(*fn)(struct t_thread *), void *arg)
{
	struct t_thread *ts = (struct t_thread *)calloc((size_t)n, sizeof(*ts));
	int i;

	REQUIRE(ts, "calloc");
	for (i = 0; i < n; i++) {
		ts[i].index = i;
		ts[i].arg = arg;
		ts[i].fn = fn;
		REQUIRE(pthread_create(&ts[i].tid, NULL, t_trampoline, &ts[i]) == 0, "pthread_create");
	}
	for (i = 0; i < n; i++)
		pthread_join(ts[i].tid, NULL);
	free(ts);
}

/* One operation o on the structure of type at d, value key * 10, in an
 * epoch section of its own; okey/oval may be NULL. */
static inline int t_op1(struct ds_ctx *c, ap_u32 type, ap_u64 d, ap_u32 o, ap_u64 key, ap_u64 *okey, ap_u64 *oval)
{
	ap_u64 k = 0, v = 0;
	int r;

	ds_enter(c);
	r = ds_apply(c, type, d, o, key, key * 10, &k, &v);
	ds_exit(c);
	if (okey)
		*okey = k;
	if (oval)
		*oval = v;
	return r;
}

static inline int t_done(const char *name)
{
	if (t_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, t_failures);
		return 1;
	}
	printf("%s: ok\n", name);
	return 0;
}

/* 1 when the object data at p reads as freed: ASan builds ask the shadow
 * (reading freed data there is a report), others look for the pattern a heap
 * with ARENA_HEAP_POISON fills freed objects with. */
static inline int t_poisoned(const void *p)
{
#ifdef ARENA_ASAN
	return __asan_address_is_poisoned(p);
#else
	return __atomic_load_n((const ap_u64 *)p, __ATOMIC_RELAXED) == ARENA_POISON;
#endif
}

static inline int t_cmp_u64(const void *a, const void *b)
{
	ap_u64 x = *(const ap_u64 *)a, y = *(const ap_u64 *)b;

	return x < y ? -1 : x > y;
}

#endif
