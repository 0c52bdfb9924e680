/* SPDX-License-Identifier: MIT */
/*
 * race: this project's structures, in the BPF arena and on plain memory,
 * against their counterparts from Concurrency Kit and liburcu.
 *
 * Every run happens in a child process of its own (a fresh heap, a fresh
 * mapping at ARENA_BASE: a BPF arena map, or an anonymous mapping for the
 * plain build of the same headers), and checks what it delivered: count,
 * sum, (key, value) pairing, FIFO or LIFO order, the keyed structures'
 * answers against a model per thread. A failed check makes the harness
 * exit 1. Rounds alternate the contenders (rotated order) and report the
 * median and the range.
 *
 * Usage: race [--quick] [--rounds N] [--only NAME,...] [--workload W] [--ops N]
 *             [--json FILE|-]
 *   --quick    small runs, 2 rounds (the test suite's smoke run)
 *   --rounds   rounds per contender (>= 1; default 5)
 *   --only     structures to race: spsc, mpmc, msqueue, mpsc, stack, hash,
 *              skiplist
 *   --workload one workload only: st, pc, mix or scan
 *   --ops      operations per run, every workload (1000 to 10^9): two runs
 *              that differ only in --ops, counted under callgrind, give the
 *              instructions per operation without the set-up's
 *   --json     write the figures as one JSON object (- for stdout, the
 *              table then goes to stderr)
 * Exit: 0; 1 a check failed; 2 bad arguments or no arena (needs root).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "ds/space.h"
#include "ds/batch.h"
#include "contenders.h"

#define ARENA_PAGES 262144ULL /* 1 GiB of address space, backed on touch */
#define BURST 32
#define MAX_RUNS 64

enum mem { MEM_NONE, MEM_ARENA, MEM_PLAIN };
enum wl { WL_ST, WL_PC, WL_MIX, WL_SCAN, WL_RM1, WL_RM2 };

static const char *const wl_name[] = {"1 thread", "1 producer + 1 consumer", "2 threads mixed", "range scan",
				       "read-mostly, 1 thread", "read-mostly, 2 threads"};
static const char *const wl_key[] = {"st", "pc", "mix", "scan", "rm1", "rm2"};
/* what a figure is: lower is better for ns, higher for M/s */
static const char *const wl_unit[] = {"ns/iter", "M items/s", "M ops/s", "ns/scan", "M ops/s", "M ops/s"};

/* operations per run: queue pairs on one thread, keyed iterations on one
 * thread, items from producer to consumer, operations per mixing thread,
 * scans */
struct sizes {
	ap_u64 st, kst, pc, mix, scan;
};
static struct sizes sz = {4000000, 1000000, 2000000, 1000000, 100000};

struct outcome {
	int ok;
	double value;
	char err[200];
};

/* ---- checks ---- */

static struct outcome *cur;

#define FAIL(...)                                                              \
	do {                                                                   \
		if (cur->ok) {                                                 \
			cur->ok = 0;                                           \
			snprintf(cur->err, sizeof(cur->err), __VA_ARGS__);    \
		}                                                              \
	} while (0)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void pin(int cpu)
{
	cpu_set_t set;
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	CPU_ZERO(&set);
	CPU_SET(n > 0 ? cpu % n : 0, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static ap_u64 val_of(ap_u64 k)
{
	return k * 3 + 1;
}

/* keys: a bijection of the sequence onto [1, 2^47], so that neighbours in
 * the sequence land far apart, never 0 */
static ap_u64 key_of(ap_u64 seq)
{
	return ((seq * 0x9e3779b97f4a7c15ULL) & ((1ULL << 47) - 1)) + 1;
}

/* ---- queue workloads: one function per contender, every call inlined ---- */

struct qops {
	void (*setup)(ap_u64 cap);
	void (*tinit)(struct tctx *t, int role);
	void (*tfini)(struct tctx *t);
	void (*enter)(struct tctx *t);
	void (*exit)(struct tctx *t);
	int (*push)(struct tctx *t, ap_u64 k, ap_u64 v);
	int (*pop)(struct tctx *t, ap_u64 *k, ap_u64 *v);
	int lifo;
};

/* RACE_SELF_TEST=lose: the single-thread queue workload throws one item
 * away behind the checks' back; =double: it pushes one item twice. So the
 * test suite can see the checks fail. */
static int lose_one, double_one;

/* one thread: bursts of BURST pushes then BURST pops; per push+pop pair */
static __always_inline void q_st(const struct qops *q, ap_u64 n)
{
	struct tctx t;
	ap_u64 i, j, k, v, sum = 0, popped = 0;
	double t0, t1;

	q->setup(RACE_CAP);
	pin(0);
	q->tinit(&t, DS_HELD_PRODUCER | DS_HELD_CONSUMER);
	n -= n % BURST;
	t0 = now_s();
	for (i = 0; i < n; i += BURST) {
		q->enter(&t);
		for (j = 0; j < BURST; j++)
			if (!q->push(&t, i + j, val_of(i + j)))
				FAIL("push %llu refused", (unsigned long long)(i + j));
		if (lose_one && i == BURST)
			q->pop(&t, &k, &v);
		if (double_one && i == BURST && !q->push(&t, i, val_of(i)))
			FAIL("push %llu refused", (unsigned long long)i);
		for (j = 0; j < BURST; j++) {
			ap_u64 want = q->lifo ? i + BURST - 1 - j : i + j;

			if (!q->pop(&t, &k, &v)) {
				FAIL("pop %llu: empty", (unsigned long long)want);
				continue;
			}
			if (k != want || v != val_of(k))
				FAIL("popped (%llu, %llu), expected key %llu", (unsigned long long)k,
				     (unsigned long long)v, (unsigned long long)want);
			sum += k;
			popped++;
		}
		q->exit(&t);
	}
	t1 = now_s();
	q->enter(&t);
	if (q->pop(&t, &k, &v))
		FAIL("left behind: key %llu", (unsigned long long)k);
	q->exit(&t);
	if (popped != n || sum != n * (n - 1) / 2)
		FAIL("popped %llu (sum %llu) of %llu", (unsigned long long)popped, (unsigned long long)sum,
		     (unsigned long long)n);
	q->tfini(&t);
	cur->value = (t1 - t0) * 1e9 / (double)n;
}

struct pc_arg {
	const struct qops *q;
	ap_u64 n;
	pthread_barrier_t *go;
	double t_start, t_end;
	ap_u64 count, sum, bad;
	ap_u64 first_bad_k, first_bad_want;
	unsigned char *seen;
};

static __always_inline void *q_producer(const struct qops *q, struct pc_arg *a)
{
	struct tctx t;
	ap_u64 i;

	pin(0);
	q->tinit(&t, DS_HELD_PRODUCER);
	pthread_barrier_wait(a->go);
	a->t_start = now_s();
	for (i = 0; i < a->n;) {
		ap_u64 end = i + BURST < a->n ? i + BURST : a->n;

		q->enter(&t);
		while (i < end) {
			if (q->push(&t, i, val_of(i)))
				i++;
			else
				arena_cpu_relax();
		}
		q->exit(&t);
	}
	q->tfini(&t);
	return NULL;
}

static __always_inline void *q_consumer(const struct qops *q, struct pc_arg *a)
{
	struct tctx t;
	ap_u64 k, v, want = 0;

	pin(1);
	q->tinit(&t, DS_HELD_CONSUMER);
	pthread_barrier_wait(a->go);
	while (a->count < a->n) {
		ap_u64 got = 0;

		q->enter(&t);
		while (got < BURST && a->count < a->n) {
			if (!q->pop(&t, &k, &v)) {
				arena_cpu_relax();
				got++;
				continue;
			}
			got++;
			if (v != val_of(k) || k >= a->n || (!q->lifo && k != want) || (q->lifo && a->seen[k]++)) {
				if (!a->bad++) {
					a->first_bad_k = k;
					a->first_bad_want = want;
				}
			}
			want = k + 1;
			a->count++;
			a->sum += k;
		}
		q->exit(&t);
	}
	a->t_end = now_s();
	q->tfini(&t);
	return NULL;
}

static __always_inline void q_pc(const struct qops *q, ap_u64 n, void *(*prod)(void *), void *(*cons)(void *))
{
	pthread_barrier_t go;
	pthread_t tp, tc;
	struct pc_arg a = {.q = q, .n = n, .go = &go};
	struct tctx t;
	ap_u64 k, v;

	q->setup(RACE_CAP);
	if (q->lifo) {
		a.seen = (unsigned char *)calloc(n, 1);
		if (!a.seen)
			race_die("calloc");
	}
	pthread_barrier_init(&go, NULL, 2);
	pthread_create(&tp, NULL, prod, &a);
	pthread_create(&tc, NULL, cons, &a);
	pthread_join(tp, NULL);
	pthread_join(tc, NULL);
	if (a.bad)
		FAIL("%llu bad deliveries; first: key %llu where %llu was due", (unsigned long long)a.bad,
		     (unsigned long long)a.first_bad_k, (unsigned long long)a.first_bad_want);
	if (a.count != n || a.sum != n * (n - 1) / 2)
		FAIL("delivered %llu (sum %llu) of %llu", (unsigned long long)a.count, (unsigned long long)a.sum,
		     (unsigned long long)n);
	q->tinit(&t, DS_HELD_CONSUMER);
	q->enter(&t);
	if (q->pop(&t, &k, &v))
		FAIL("left behind: key %llu", (unsigned long long)k);
	q->exit(&t);
	q->tfini(&t);
	cur->value = (double)n / (a.t_end - a.t_start) / 1e6;
	free(a.seen);
}

/* ---- keyed workloads ---- */

struct kops {
	void (*setup)(ap_u64 cap);
	void (*tinit)(struct tctx *t, int role);
	void (*tfini)(struct tctx *t);
	void (*enter)(struct tctx *t);
	void (*exit)(struct tctx *t);
	int (*insert)(struct tctx *t, ap_u64 k, ap_u64 v);
	int (*search)(struct tctx *t, ap_u64 k, ap_u64 *v);
	int (*del)(struct tctx *t, ap_u64 k, ap_u64 *v);
};

#define WINDOW 4096

/* one thread, a sliding window of WINDOW keys: per iteration insert the
 * next key, search one in the window, delete the oldest */
static __always_inline void k_st(const struct kops *o, ap_u64 n)
{
	struct tctx t;
	ap_u64 i, v = 0, rng = 0x2545f4914f6cdd1dULL, sum = 0;
	double t0, t1;

	o->setup(RACE_BUCKETS);
	pin(0);
	o->tinit(&t, 0);
	o->enter(&t);
	for (i = 0; i < WINDOW; i++)
		if (o->insert(&t, key_of(i), val_of(key_of(i))) != 1)
			FAIL("prefill %llu", (unsigned long long)i);
	o->exit(&t);
	n -= n % BURST;
	t0 = now_s();
	for (i = 0; i < n; i++) {
		ap_u64 s = i + 1 + arena_xorshift64(&rng) % WINDOW, kn = key_of(i + WINDOW), ko = key_of(i);

		if ((i & (BURST - 1)) == 0)
			o->enter(&t);
		if (o->insert(&t, kn, val_of(kn)) != 1)
			FAIL("insert of new key %llu", (unsigned long long)kn);
		if (o->search(&t, key_of(s), &v) != 1 || v != val_of(key_of(s)))
			FAIL("search of present key %llu", (unsigned long long)key_of(s));
		if (o->del(&t, ko, &v) != 1 || v != val_of(ko))
			FAIL("delete of present key %llu", (unsigned long long)ko);
		sum += v;
		if ((i & (BURST - 1)) == BURST - 1)
			o->exit(&t);
	}
	t1 = now_s();
	o->enter(&t);
	for (i = 0; i < WINDOW + 2; i++) {
		ap_u64 k = key_of(n - 1 + i);
		int want = i >= 1 && i <= WINDOW;

		if (o->search(&t, k, &v) != want)
			FAIL("after the run: key of sequence %llu %s", (unsigned long long)(n - 1 + i),
			     want ? "missing" : "present");
	}
	o->exit(&t);
	{
		ap_u64 want = 0;

		for (i = 0; i < n; i++)
			want += val_of(key_of(i));
		if (sum != want)
			FAIL("deleted values sum %llu, expected %llu", (unsigned long long)sum,
			     (unsigned long long)want);
	}
	o->tfini(&t);
	cur->value = (t1 - t0) * 1e9 / (double)n;
}

#define MIX_KEYS 65536 /* keys of all threads together */

struct mix_arg {
	const struct kops *o;
	int id;
	ap_u64 n;
	int nthreads;    /* thread id owns keys nthreads * j + id, j < MIX_KEYS / nthreads */
	int read_mostly; /* 90% search, 5% insert, 5% delete; else 50/25/25 */
	pthread_barrier_t *go;
	unsigned char *model; /* MIX_KEYS / nthreads */
	double t_start, t_end;
	ap_u64 bad;
	char what[120];
};

/* Thread id owns sequence numbers nthreads j + id, so the threads share the
 * buckets (and their cache lines) but each can check every answer against a
 * model of its own keys. The mix: 50% search, 25% insert, 25% delete on a
 * random j, or read-mostly 90/5/5 (the stress command's workload of that
 * name); half the keys present at the start. */
static __always_inline void *k_mixer(const struct kops *o, struct mix_arg *a)
{
	struct tctx t;
	const ap_u64 nt = (ap_u64)a->nthreads, keys = MIX_KEYS / nt;
	ap_u64 i, v = 0, rng = 0x9e3779b97f4a7c15ULL * (ap_u64)(a->id + 1);

	pin(a->id);
	o->tinit(&t, 0);
	o->enter(&t);
	for (i = 0; i < keys; i += 2) {
		ap_u64 k = key_of(nt * i + (ap_u64)a->id);

		if (o->insert(&t, k, val_of(k)) != 1 && !a->bad++)
			snprintf(a->what, sizeof(a->what), "prefill of %llu", (unsigned long long)k);
		a->model[i] = 1;
	}
	o->exit(&t);
	pthread_barrier_wait(a->go);
	a->t_start = now_s();
	for (i = 0; i < a->n; i++) {
		ap_u64 x = arena_xorshift64(&rng), j = (x >> 8) % keys, k = key_of(nt * j + (ap_u64)a->id);
		/* 0, 1: search; 2: insert; 3: delete. w20 is uniform in 0..19 from
		 * the high half (j takes bits 8 up), so read-mostly is 18/1/1 in 20 */
		ap_u32 w20 = (ap_u32)(((x >> 32) * 20) >> 32), what = a->read_mostly ? (w20 < 18 ? 0 : w20 == 18 ? 2 : 3)
										 : (ap_u32)(x & 3);
		int r, want;

		if ((i & (BURST - 1)) == 0)
			o->enter(&t);
		if (what < 2) {
			r = o->search(&t, k, &v);
			want = a->model[j];
			if (r == 1 && v != val_of(k))
				r = 2;
		} else if (what == 2) {
			r = o->insert(&t, k, val_of(k));
			want = !a->model[j];
			a->model[j] = 1;
		} else {
			r = o->del(&t, k, &v);
			want = a->model[j];
			if (r == 1 && v != val_of(k))
				r = 2;
			a->model[j] = 0;
		}
		if (r != want && !a->bad++)
			snprintf(a->what, sizeof(a->what), "op %u on key %llu gave %d, expected %d", what,
				 (unsigned long long)k, r, want);
		if ((i & (BURST - 1)) == BURST - 1)
			o->exit(&t);
	}
	if (a->n & (BURST - 1))
		o->exit(&t);
	a->t_end = now_s();
	o->tfini(&t);
	return NULL;
}

static __always_inline void k_mix(const struct kops *o, ap_u64 n, void *(*fn)(void *), int nthreads,
				  int read_mostly)
{
	pthread_barrier_t go;
	pthread_t th[2];
	struct mix_arg a[2];
	struct tctx t;
	const ap_u64 keys = MIX_KEYS / (ap_u64)nthreads;
	ap_u64 j, v;
	int i;

	o->setup(RACE_BUCKETS);
	chs_writers_lock = nthreads > 1;
	pthread_barrier_init(&go, NULL, (unsigned int)nthreads);
	for (i = 0; i < nthreads; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		a[i].o = o;
		a[i].id = i;
		a[i].n = n;
		a[i].nthreads = nthreads;
		a[i].read_mostly = read_mostly;
		a[i].go = &go;
		a[i].model = (unsigned char *)calloc(keys, 1);
		if (!a[i].model)
			race_die("calloc");
		pthread_create(&th[i], NULL, fn, &a[i]);
	}
	for (i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	o->tinit(&t, 0);
	for (i = 0; i < nthreads; i++) {
		if (a[i].bad)
			FAIL("thread %d: %llu wrong answers; first: %s", i, (unsigned long long)a[i].bad, a[i].what);
		o->enter(&t);
		for (j = 0; j < keys; j++) {
			ap_u64 k = key_of((ap_u64)nthreads * j + (ap_u64)i);
			int r = o->search(&t, k, &v);

			if (r != a[i].model[j] || (r == 1 && v != val_of(k)))
				FAIL("after the run: key %llu %s", (unsigned long long)k,
				     a[i].model[j] ? "missing" : "present");
			if ((j & (BURST - 1)) == BURST - 1) {
				o->exit(&t);
				o->enter(&t);
			}
		}
		o->exit(&t);
	}
	o->tfini(&t);
	/* from the first thread's start to the last one's end */
	{
		double t0 = a[0].t_start, t1 = a[0].t_end;

		for (i = 1; i < nthreads; i++) {
			t0 = a[i].t_start < t0 ? a[i].t_start : t0;
			t1 = a[i].t_end > t1 ? a[i].t_end : t1;
		}
		cur->value = (double)((ap_u64)nthreads * n) / (t1 - t0) / 1e6;
	}
	for (i = 0; i < nthreads; i++)
		free(a[i].model);
}

/* the skip list's ordered scans: windows of 64 consecutive keys out of 65536 */
static void scan_skiplist(ap_u64 n)
{
	struct tctx t;
	struct ds_kv *out;
	ap_u64 i, rng = 7, cnt;

	o_skiplist_setup(0);
	o_skiplist_tinit(&t, 0);
	out = (struct ds_kv *)arena_heap_alloc(&o_sp->heap, 64 * sizeof(struct ds_kv), 0);
	if (!out)
		race_die("alloc");
	o_enter(&t);
	for (i = 0; i < 65536; i++) {
		if (o_skiplist_insert(&t, 16 * i + 16, i) != 1)
			FAIL("prefill %llu", (unsigned long long)i);
		if ((i & 31) == 31) {
			o_exit(&t);
			o_enter(&t);
		}
	}
	o_exit(&t);
	double t0 = now_s();

	for (i = 0; i < n; i++) {
		ap_u64 j = arena_xorshift64(&rng) % (65536 - 64), lo = 16 * j + 16, s = 0, m;
		int r;

		o_enter(&t);
		r = ds_skiplist_iterate(&t.c, (struct ds_skiplist *)o_d, lo, lo + 64 * 16, out, 64, &cnt);
		o_exit(&t);
		for (m = 0; m < cnt; m++)
			s += out[m].val;
		if (r != DS_OK || cnt != 64 || s != 64 * j + 64 * 63 / 2)
			FAIL("scan from %llu: result %d, %llu keys, value sum %llu", (unsigned long long)lo, r,
			     (unsigned long long)cnt, (unsigned long long)s);
	}
	cur->value = (now_s() - t0) * 1e9 / (double)n;
	o_tfini(&t);
}

/* ---- the contenders, one line each ---- */

static void nothing(struct tctx *t)
{
	(void)t;
}

/* Each contender's workloads are their own copies of the loops, with its
 * operations known at compile time (the ops tables are constants), so every
 * call is inlined; the thread functions pass the table itself, not a
 * pointer read from their argument. */
#define QOPS(var, pre, setup_, tinit_, tfini_, enter_, exit_, lifo_)                                         \
	static const struct qops var = {setup_, tinit_, tfini_, enter_, exit_, pre##_push, pre##_pop, lifo_}; \
	__attribute__((flatten)) static void *var##_prod(void *a)                                          \
	{                                                                                                  \
		return q_producer(&var, (struct pc_arg *)a);                                                     \
	}                                                                                                  \
	__attribute__((flatten)) static void *var##_cons(void *a)                                          \
	{                                                                                                  \
		return q_consumer(&var, (struct pc_arg *)a);                                                     \
	}                                                                                                  \
	__attribute__((flatten)) static void var##_run(int wl, ap_u64 n)                                   \
	{                                                                                                  \
		if (wl == WL_ST)                                                                           \
			q_st(&var, n);                                                                     \
		else                                                                                       \
			q_pc(&var, n, var##_prod, var##_cons);                                             \
	}

#define KOPS(var, pre, setup_, tinit_, tfini_, enter_, exit_)                                                  \
	static const struct kops var = {setup_, tinit_, tfini_, enter_, exit_, pre##_insert, pre##_search,   \
					pre##_del};                                                           \
	__attribute__((flatten)) static void *var##_mix(void *a)                                           \
	{                                                                                                  \
		return k_mixer(&var, (struct mix_arg *)a);                                                       \
	}                                                                                                  \
	__attribute__((flatten)) static void var##_run(int wl, ap_u64 n)                                   \
	{                                                                                                  \
		if (wl == WL_ST)                                                                           \
			k_st(&var, n);                                                                     \
		else                                                                                       \
			k_mix(&var, n, var##_mix, wl == WL_RM1 ? 1 : 2, wl != WL_MIX);                     \
	}

QOPS(q_o_spsc, o_spsc, o_spsc_setup, o_spsc_tinit, o_tfini, o_enter, o_exit, 0)
QOPS(q_o_mpmc, o_mpmc, o_mpmc_setup, o_mpmc_tinit, o_tfini, o_enter, o_exit, 0)
QOPS(q_o_msqueue, o_msqueue, o_msqueue_setup, o_msqueue_tinit, o_tfini, o_enter, o_exit, 0)
QOPS(q_o_mpsc, o_mpsc, o_mpsc_setup, o_mpsc_tinit, o_tfini, o_enter, o_exit, 0)
QOPS(q_o_stack, o_stack, o_stack_setup, o_stack_tinit, o_tfini, o_enter, o_exit, 1)
QOPS(q_ckrs, ckrs, ckr_setup, ckr_tinit, nothing, nothing, nothing, 0)
QOPS(q_ckrm, ckrm, ckr_setup, ckr_tinit, nothing, nothing, nothing, 0)
QOPS(q_ckf, ckf, ckf_setup, ck_tinit, ck_tfini, ck_enter, ck_exit, 0)
QOPS(q_cks, cks, cks_setup, ck_tinit, ck_tfini, ck_enter, ck_exit, 1)
QOPS(q_uwq, uwq, uwq_setup, u_tinit, u_tfini, u_enter, u_exit, 0)
QOPS(q_uwqs, uwqs, uwqs_setup, u_tinit, u_tfini, u_enter, u_exit, 0)
QOPS(q_ulq, ulq, ulq_setup, u_tinit, u_tfini, u_enter, u_exit, 0)
QOPS(q_uls, uls, uls_setup, u_tinit, u_tfini, u_enter, u_exit, 1)
KOPS(k_o_hash, o_hash, o_hash_setup, o_hash_tinit, o_tfini, o_enter, o_exit)
KOPS(k_o_skiplist, o_skiplist, o_skiplist_setup, o_skiplist_tinit, o_tfini, o_enter, o_exit)
KOPS(k_chs, chs, chs_setup, ck_tinit, ck_tfini, ck_enter, ck_exit)
KOPS(k_uht, uht, uht_setup, u_tinit, u_tfini, u_enter, u_exit)

static void scan_run(int wl, ap_u64 n)
{
	(void)wl;
	scan_skiplist(n);
}

struct contender {
	const char *structure;
	int wl_mask; /* 1 << enum wl */
	const char *name;
	int ours;    /* 1: one of ours (run in the arena and on plain memory) */
	void (*run)(int wl, ap_u64 n);
	const char *config; /* what it runs with */
	const char *less;   /* what it does not do that ours does ("" : nothing) */
};

#define ST_PC ((1 << WL_ST) | (1 << WL_PC))
#define ST_MIX ((1 << WL_ST) | (1 << WL_MIX))
#define KEYED_ALL (ST_MIX | (1 << WL_RM1) | (1 << WL_RM2))

static const struct contender contenders[] = {
	{"spsc", ST_PC, "spsc", 1, q_o_spsc_run, "role claimed once per thread (ds_spsc_open_producer/consumer), no check per operation; 16-byte slots", ""},
	{"spsc", ST_PC, "ck_ring spsc", 0, q_ckrs_run, "CK_RING_PROTOTYPE, 16-byte slots",
	 "no role check: a second producer or consumer is not refused"},
	{"mpmc", ST_PC, "mpmc", 1, q_o_mpmc_run, "Vyukov bounded, 32-byte cells (sequence, key, value, pad); no reclamation needed", ""},
	{"mpmc", ST_PC, "ck_ring mpmc", 0, q_ckrm_run, "CK_RING_PROTOTYPE, 16-byte slots", ""},
	{"msqueue", ST_PC, "msqueue", 1, q_o_msqueue_run, "epoch reclamation (epoch.h), arena heap", ""},
	{"msqueue", ST_PC, "ck_fifo_mpmc", 0, q_ckf_run, "ck_epoch reclamation, malloc", ""},
	{"msqueue", ST_PC, "urcu wfcqueue locked", 0, q_uwq_run,
	 "cds_wfcq_dequeue_blocking: each dequeue under the head's pthread mutex; head and tail on lines of their own, "
	 "malloc/free",
	 "dequeue not lock-free (a mutex, and it waits for a producer mid-enqueue); needs no reclamation"},
	{"msqueue", ST_PC, "urcu lfqueue", 0, q_ulq_run, "rculfqueue, urcu-memb, call_rcu frees, malloc", ""},
	{"mpsc", ST_PC, "mpsc", 1, q_o_mpsc_run,
	 "Vyukov intrusive, consumer role claimed once per thread (ds_role_attach), pops through ds_mpsc_pop_held; "
	 "arena heap, a popped node freed at once",
	 ""},
	{"mpsc", ST_PC, "urcu wfcqueue", 0, q_uwqs_run,
	 "__cds_wfcq_dequeue_blocking on a head without a mutex; head and tail on lines of their own, malloc/free",
	 "one consumer not enforced or checked (the caller's guarantee)"},
	{"stack", ST_PC, "stack", 1, q_o_stack_run, "Treiber, epoch reclamation (epoch.h), arena heap", ""},
	{"stack", ST_PC, "ck_stack upmc", 0, q_cks_run, "ck_epoch reclamation, malloc", ""},
	{"stack", ST_PC, "urcu lfstack", 0, q_uls_run, "__cds_lfs_pop under rcu_read_lock, call_rcu frees, malloc",
	 ""},
	{"hash", KEYED_ALL, "hash", 1, k_o_hash_run, "65536 buckets, epoch reclamation (epoch.h), arena heap", ""},
	{"hash", KEYED_ALL, "urcu lfht", 0, k_uht_run, "65536 buckets, no resize, urcu-memb, call_rcu frees, malloc",
	 ""},
	{"hash", KEYED_ALL, "ck_hs", 0, k_chs_run,
	 "object mode, delete-optimised, 131072 slots, ck_epoch reclamation, malloc; 2 threads: writes behind a spinlock",
	 "single writer (SPMC): concurrent writers need the caller's lock"},
	{"skiplist", ST_MIX, "skiplist", 1, k_o_skiplist_run, "8 levels, epoch reclamation, arena heap", ""},
	{"skiplist", ST_MIX, "hash", 2, k_o_hash_run, "our hash in the arena: point operations only", "unordered"},
	{"skiplist", 1 << WL_SCAN, "skiplist", 1, scan_run, "iterate 64 keys of 65536", ""},
};
#define NCONT (sizeof(contenders) / sizeof(contenders[0]))

/* ---- one run, in a child ---- */

static int map_memory(enum mem m)
{
	void *p;

	if (m == MEM_ARENA) {
		LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = BPF_F_MMAPABLE, .map_extra = ARENA_BASE);
		int fd = bpf_map_create(BPF_MAP_TYPE_ARENA, "race_arena", 0, 0, (__u32)ARENA_PAGES, &o);

		if (fd < 0)
			return -errno;
		p = mmap((void *)ARENA_BASE, ARENA_PAGES * ARENA_PAGE_SIZE, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED, fd, 0);
	} else {
		p = mmap((void *)ARENA_BASE, ARENA_PAGES * ARENA_PAGE_SIZE, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
	}
	if (p != (void *)ARENA_BASE)
		return -errno;
	o_sp = ds_space_init(16, ARENA_PAGES - 32, (ap_u32)sysconf(_SC_NPROCESSORS_CONF), 0, 0);
	return o_sp ? 0 : -EINVAL;
}

static ap_u64 size_of(const struct contender *c, int wl)
{
	if (wl == WL_ST)
		return c->wl_mask & (1 << WL_MIX) ? sz.kst : sz.st;
	return wl == WL_PC ? sz.pc : wl == WL_MIX || wl == WL_RM1 || wl == WL_RM2 ? sz.mix : sz.scan;
}

static void *no_work(void *arg)
{
	return arg;
}

/* glibc takes its mutexes (wfcqueue's dequeue lock) and malloc's shared bins
 * without atomics until a process first starts a second thread
 * (__libc_single_threaded), and a fork child inherits the flag: a run forked
 * before the cache-line bounce (--workload st, opcount.py) would time the
 * counterparts as no concurrent program runs them, a run forked after it as
 * every one does. Each run starts and joins a thread first, so that both are
 * the latter. */
static void threaded_process(void)
{
	pthread_t th;

	if (pthread_create(&th, NULL, no_work, NULL) || pthread_join(th, NULL))
		race_die("pthread_create");
}

static struct outcome run_child(const struct contender *c, int wl, enum mem m)
{
	struct outcome o = {0};
	int fds[2], status;
	pid_t pid;

	if (pipe(fds))
		race_die("pipe");
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		race_die("fork");
	if (pid == 0) {
		struct outcome r = {.ok = 1};
		int e = 0;

		close(fds[0]);
		cur = &r;
		if (m != MEM_NONE)
			e = map_memory(m);
		if (e)
			snprintf(r.err, sizeof(r.err), "cannot map the %s at %#llx: %s",
				 m == MEM_ARENA ? "arena" : "plain memory", (unsigned long long)ARENA_BASE, strerror(-e));
		else {
			threaded_process();
			c->run(wl, size_of(c, wl));
		}
		if (e)
			r.ok = -1;
		if (write(fds[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
			_exit(4);
		_exit(0);
	}
	close(fds[1]);
	if (read(fds[0], &o, sizeof(o)) != (ssize_t)sizeof(o)) {
		o.ok = 0;
		snprintf(o.err, sizeof(o.err), "the run died before reporting");
	}
	close(fds[0]);
	waitpid(pid, &status, 0);
	if (o.ok == 1 && (!WIFEXITED(status) || WEXITSTATUS(status)))
		snprintf(o.err, sizeof(o.err), "the run exited with status %#x", status), o.ok = 0;
	return o;
}

/* ---- rounds, figures, output ---- */

struct row {
	const struct contender *c;
	int wl;
	enum mem mem;
	char label[64];
	double v[MAX_RUNS];
	int nv;
	double med, lo, hi;
};

static struct row rows[96];
static int nrows;

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int lower_better(int wl)
{
	return wl == WL_ST || wl == WL_SCAN;
}

static int wanted(const char *only, const char *name)
{
	const char *p = only;
	size_t n = strlen(name);

	if (!only)
		return 1;
	while ((p = strstr(p, name))) {
		if ((p == only || p[-1] == ',') && (p[n] == ',' || !p[n]))
			return 1;
		p += n;
	}
	return 0;
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

/* ratio of a to b, >= 1 when a is at least as good */
static double better_ratio(int wl, double a, double b)
{
	if (a <= 0 || b <= 0)
		return 0;
	return lower_better(wl) ? b / a : a / b;
}

static void machine(char *cpu, size_t len)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[256];

	snprintf(cpu, len, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *p = strchr(line, ':');

		if (!strncmp(line, "model name", 10) && p) {
			snprintf(cpu, len, "%s", p + 2);
			cpu[strcspn(cpu, "\n")] = 0;
			break;
		}
	}
	fclose(f);
}

/* the 1-minute load average: what else the machine was running */
static double loadavg(void)
{
	FILE *f = fopen("/proc/loadavg", "r");
	double l = -1;

	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = -1;
		fclose(f);
	}
	return l;
}

static double load_start;

/* One cache line bounced between CPU 0 and CPU 1: what a write that the
 * other CPU reads next costs on this machine, the price every shared
 * structure pays for each line both threads touch and one of them writes. */
#define BOUNCES 200000
static _Alignas(64) volatile ap_u64 bounce_line;
static double line_ns;

static void *bouncer(void *arg)
{
	ap_u64 i;

	(void)arg;
	pin(1);
	for (i = 1; i < 2 * BOUNCES; i += 2) {
		while (bounce_line != i)
			arena_cpu_relax();
		bounce_line = i + 1;
	}
	return NULL;
}

static double line_transfer_ns(void)
{
	cpu_set_t was;
	pthread_t th;
	double t0, ns;
	ap_u64 i;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2 || sched_getaffinity(0, sizeof(was), &was))
		return 0;
	bounce_line = 0;
	pin(0);
	if (pthread_create(&th, NULL, bouncer, NULL)) {
		sched_setaffinity(0, sizeof(was), &was);
		return 0;
	}
	t0 = now_s();
	for (i = 0; i < 2 * BOUNCES; i += 2) {
		while (bounce_line != i)
			arena_cpu_relax();
		bounce_line = i + 1;
	}
	pthread_join(th, NULL);
	ns = (now_s() - t0) * 1e9 / (2.0 * BOUNCES);
	/* the runs fork from this thread: they start unpinned, as before */
	sched_setaffinity(0, sizeof(was), &was);
	return ns;
}

static void output(FILE *tf, FILE *jf, int rounds, int quick)
{
	double load_end = loadavg();
	char cpu[128];
	struct utsname u;
	int i;

	machine(cpu, sizeof(cpu));
	uname(&u);
	fprintf(tf, "race: %s, %ld CPUs online, Linux %s, load average %.2f at the start, %.2f at the end; "
		"%d rounds%s; median [min-max]\n", cpu, sysconf(_SC_NPROCESSORS_ONLN), u.release, load_start, load_end,
		rounds, quick ? " (quick)" : "");
	if (line_ns > 0)
		fprintf(tf, "a cache line from CPU 0 to CPU 1 and back: %.0f ns one way (at the start)\n", line_ns);
	fprintf(tf, "%-9s %-24s %-22s %-6s %10s %21s %8s  %s\n", "structure", "workload", "contender", "memory",
		"median", "range", "vs best", "unit");
	for (i = 0; i < nrows; i++) {
		struct row *r = &rows[i];
		char range[48];

		snprintf(range, sizeof(range), "[%.2f-%.2f]", r->lo, r->hi);
		fprintf(tf, "%-9s %-24s %-22s %-6s %10.2f %21s", r->c->structure, wl_name[r->wl], r->c->name,
			r->mem == MEM_ARENA ? "arena" : r->mem == MEM_PLAIN ? "plain" : "heap", r->med, range);
		if (r->c->ours == 1) {
			double best = 0;
			int j;

			for (j = 0; j < nrows; j++)
				if (!rows[j].c->ours || rows[j].c->ours == 2)
					if (!strcmp(rows[j].c->structure, r->c->structure) && rows[j].wl == r->wl &&
					    (best == 0 || better_ratio(r->wl, rows[j].med, best) > 1))
						best = rows[j].med;
			if (best > 0)
				fprintf(tf, " %7.2fx", better_ratio(r->wl, r->med, best));
			else
				fprintf(tf, " %8s", "-");
		} else {
			fprintf(tf, " %8s", "");
		}
		fprintf(tf, "  %s\n", wl_unit[r->wl]);
	}
	/* what a second thread adds: 1.0x is no gain, 2.0x is perfect scaling */
	for (i = 0; i < nrows; i++) {
		struct row *r = &rows[i];
		int j;

		if (r->wl != WL_RM2)
			continue;
		for (j = 0; j < nrows; j++)
			if (rows[j].wl == WL_RM1 && rows[j].c == r->c && rows[j].mem == r->mem && rows[j].med > 0)
				fprintf(tf, "scaling  %-9s %-22s %-6s read-mostly, 2 threads / 1 thread: %.2fx\n",
					r->c->structure, r->c->name,
					r->mem == MEM_ARENA ? "arena" : r->mem == MEM_PLAIN ? "plain" : "heap",
					r->med / rows[j].med);
	}
	fprintf(tf, "configurations:\n");
	for (i = 0; i < (int)NCONT; i++) {
		const struct contender *c = &contenders[i];

		if (i && !strcmp(contenders[i - 1].name, c->name) && !strcmp(contenders[i - 1].structure, c->structure))
			continue;
		fprintf(tf, "  %-9s %-20s %s%s%s\n", c->structure, c->name, c->config, *c->less ? "; does less: " : "",
			c->less);
	}
	if (!jf)
		return;
	fprintf(jf, "{\"machine\": {\"cpu\": ");
	json_str(jf, cpu);
	fprintf(jf, ", \"cpus_online\": %ld, \"kernel\": ", sysconf(_SC_NPROCESSORS_ONLN));
	json_str(jf, u.release);
	fprintf(jf, ", \"loadavg_start\": %.2f, \"loadavg_end\": %.2f, \"line_transfer_ns\": %.1f}, ", load_start,
		load_end, line_ns);
	fprintf(jf, "\"rounds\": %d, \"quick\": %s, \"sizes\": {\"st\": %llu, \"keyed_st\": %llu, \"pc\": %llu, "
		"\"mix\": %llu, \"scan\": %llu}, \"exact\": true, \"rows\": [",
		rounds, quick ? "true" : "false", (unsigned long long)sz.st, (unsigned long long)sz.kst,
		(unsigned long long)sz.pc,
		(unsigned long long)sz.mix, (unsigned long long)sz.scan);
	for (i = 0; i < nrows; i++) {
		struct row *r = &rows[i];
		int j;

		fprintf(jf, "%s\n {\"structure\": \"%s\", \"workload\": \"%s\", \"contender\": ", i ? "," : "",
			r->c->structure, wl_key[r->wl]);
		json_str(jf, r->c->name);
		fprintf(jf, ", \"ours\": %s, \"memory\": \"%s\", \"unit\": \"%s\", \"lower_is_better\": %s, "
			"\"median\": %.4f, \"min\": %.4f, \"max\": %.4f, \"samples\": [",
			r->c->ours == 1 ? "true" : "false",
			r->mem == MEM_ARENA ? "arena" : r->mem == MEM_PLAIN ? "plain" : "heap", wl_unit[r->wl],
			lower_better(r->wl) ? "true" : "false", r->med, r->lo, r->hi);
		for (j = 0; j < r->nv; j++)
			fprintf(jf, "%s%.4f", j ? ", " : "", r->v[j]);
		fprintf(jf, "], \"config\": ");
		json_str(jf, r->c->config);
		fprintf(jf, ", \"does_less\": ");
		json_str(jf, r->c->less);
		fprintf(jf, "}");
	}
	fprintf(jf, "\n]}\n");
}

static void usage(void)
{
	fprintf(stderr, "usage: race [--quick] [--rounds N] [--only spsc,mpmc,msqueue,mpsc,stack,hash,skiplist] "
			"[--workload st|pc|mix|scan|rm1|rm2] [--ops N] [--json FILE|-]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *only = NULL, *json = NULL;
	int rounds = 5, quick = 0, i, rd, failed = 0, only_wl = -1;
	ap_u64 ops = 0;
	FILE *jf = NULL, *tf = stdout;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			quick = 1;
		} else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
			char *end;
			long n = strtol(argv[++i], &end, 10);

			if (*end || n < 1 || n > MAX_RUNS) {
				fprintf(stderr, "race: --rounds takes 1 to %d, not %s\n", MAX_RUNS, argv[i]);
				return 2;
			}
			rounds = (int)n;
		} else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
			only = argv[++i];
		} else if (!strcmp(argv[i], "--workload") && i + 1 < argc) {
			for (only_wl = 0; only_wl <= WL_RM2 && strcmp(wl_key[only_wl], argv[i + 1]); only_wl++)
				;
			if (only_wl > WL_RM2) {
				fprintf(stderr, "race: --workload takes st, pc, mix or scan, not %s\n", argv[i + 1]);
				return 2;
			}
			i++;
		} else if (!strcmp(argv[i], "--ops") && i + 1 < argc) {
			char *end;
			unsigned long long n = strtoull(argv[++i], &end, 10);

			if (*end || n < 1000 || n > 1000000000ULL) {
				fprintf(stderr, "race: --ops takes 1000 to 1000000000, not %s\n", argv[i]);
				return 2;
			}
			ops = n;
		} else if (!strcmp(argv[i], "--json") && i + 1 < argc) {
			json = argv[++i];
		} else {
			usage();
		}
	}
	lose_one = getenv("RACE_SELF_TEST") && !strcmp(getenv("RACE_SELF_TEST"), "lose");
	double_one = getenv("RACE_SELF_TEST") && !strcmp(getenv("RACE_SELF_TEST"), "double");
	if (quick) {
		sz = (struct sizes){64000, 16000, 40000, 20000, 2000};
		if (rounds == 5)
			rounds = 2;
	}
	if (ops)
		sz = (struct sizes){ops, ops, ops, ops, ops};
	if (only) {
		static const char *const known[] = {"spsc", "mpmc", "msqueue", "mpsc", "stack", "hash", "skiplist"};
		char *copy = strdup(only), *tok, *save = NULL;

		for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			size_t k;

			for (k = 0; k < sizeof(known) / sizeof(known[0]) && strcmp(known[k], tok); k++)
				;
			if (k == sizeof(known) / sizeof(known[0])) {
				fprintf(stderr, "race: --only: no structure named %s (spsc, mpmc, msqueue, mpsc, stack, "
						"hash, skiplist)\n", tok);
				return 2;
			}
		}
		free(copy);
	}
	if (json) {
		if (!strcmp(json, "-")) {
			jf = stdout;
			tf = stderr;
		} else if (!(jf = fopen(json, "w"))) {
			fprintf(stderr, "race: cannot write %s: %s\n", json, strerror(errno));
			return 2;
		}
	}
	load_start = loadavg();
	/* only where two threads share lines: opcount.py runs one-thread
	 * workloads under callgrind, which would crawl through the bounces */
	if (only_wl < 0 || only_wl == WL_PC || only_wl == WL_MIX || only_wl == WL_RM2)
		line_ns = line_transfer_ns();
	/* the rows: ours in the arena and on plain memory, the others on the heap */
	for (i = 0; i < (int)NCONT; i++) {
		const struct contender *c = &contenders[i];
		int wl, m;

		if (!wanted(only, c->structure))
			continue;
		for (wl = 0; wl <= WL_RM2; wl++) {
			if (!(c->wl_mask & (1 << wl)) || (only_wl >= 0 && wl != only_wl))
				continue;
			for (m = 0; m < (c->ours == 1 ? 2 : 1); m++) {
				struct row *r = &rows[nrows++];

				r->c = c;
				r->wl = wl;
				r->mem = c->ours == 1 ? (m ? MEM_PLAIN : MEM_ARENA) : c->ours == 2 ? MEM_ARENA : MEM_NONE;
			}
		}
	}
	/* rounds: every (structure, workload) group runs its contenders in an
	 * order rotated by one each round */
	for (rd = 0; rd < rounds; rd++) {
		int start = 0;

		while (start < nrows) {
			int end = start, k;

			while (end < nrows && !strcmp(rows[end].c->structure, rows[start].c->structure))
				end++;
			for (k = 0; k < end - start; k++) {
				struct row *r = &rows[start + (k + rd) % (end - start)];
				struct outcome o = run_child(r->c, r->wl, r->mem);

				if (o.ok == -1) {
					fprintf(stderr, "race: %s (run as root: the arena is a BPF map)\n", o.err);
					return 2;
				}
				if (!o.ok) {
					fprintf(stderr, "race: FAILED %s %s (%s, %s): %s\n", r->c->structure, r->c->name,
						wl_name[r->wl], r->mem == MEM_ARENA ? "arena" : "plain/heap", o.err);
					failed = 1;
					continue;
				}
				r->v[r->nv++] = o.value;
			}
			start = end;
		}
	}
	for (i = 0; i < nrows; i++) {
		struct row *r = &rows[i];
		double s[MAX_RUNS];

		if (!r->nv)
			continue;
		memcpy(s, r->v, sizeof(double) * (size_t)r->nv);
		qsort(s, (size_t)r->nv, sizeof(double), cmp_d);
		r->lo = s[0];
		r->hi = s[r->nv - 1];
		r->med = r->nv & 1 ? s[r->nv / 2] : (s[r->nv / 2 - 1] + s[r->nv / 2]) / 2;
	}
	if (failed) {
		fprintf(stderr, "race: exactness checks failed: no figures\n");
		return 1;
	}
	output(tf, jf, rounds, quick);
	if (jf && jf != stdout)
		fclose(jf);
	return 0;
}
