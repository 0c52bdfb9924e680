/* SPDX-License-Identifier: MIT */
/*
 * A concurrent workload that records its history for the linearizability
 * checker (pipeline/linearize.py): threads start at a barrier and work on one
 * structure in a userspace arena; each records every operation it completes
 * (struct ds_hist_rec, include/ds/history.h: CLOCK_MONOTONIC before the call
 * and after it returns) into a buffer of its own, and at the end all records
 * go to one file.
 *
 *   lin_driver msqueue|mpmc|stack THREADS OPS FILE   half the threads (at
 *       least one) add OPS distinct values each, the others remove until the
 *       producers are done and the structure answers empty
 *   lin_driver hash THREADS OPS FILE      every thread runs OPS inserts,
 *       deletes and searches on 32 keys in a hash of 2 buckets (long chains,
 *       so that searches walk past nodes being deleted)
 *
 * tests/test_linearize.py builds it as is, and with -DDS_TEST_BROKEN_QUEUE_DUP
 * or -DDS_TEST_BROKEN_HASH_MISS (include/ds/ds_api.h), the broken variants the
 * checker must reject.
 */
#include "tcommon.h"
#include "ds/history.h"

#define KEYS 32

static struct ds_space *sp_global;

struct shared {
	const struct ds_meta *m;
	ap_u64 d;
	int threads, producers;
	ap_u64 ops;
	int producers_left;
	pthread_barrier_t go;
	struct ds_hist_rec **recs;
	ap_u64 *nrecs;
	ap_u64 cap;
};

static int record(struct shared *s, int t, ap_u64 t_inv, ap_u64 key, ap_u64 val, int op, int r)
{
	struct ds_hist_rec *h;

	if (s->nrecs[t] >= s->cap)
		return -1;
	h = &s->recs[t][s->nrecs[t]++];
	h->t_inv = t_inv;
	h->t_resp = arena_now_ns();
	h->key = key;
	h->value = val;
	h->agent = (ap_u32)t;
	h->op = (ap_u8)op;
	h->result = (ap_u8)r;
	h->flags = 0;
	return 0;
}

static int run_op(struct ds_ctx *c, struct shared *s, int t, int op, ap_u64 key, ap_u64 val, ap_u64 *k,
		  ap_u64 *v)
{
	ap_u64 t_inv;
	int r;

	*k = *v = 0;
	ds_enter(c);
	t_inv = arena_now_ns();
	r = ds_apply(c, s->m->id, s->d, (ap_u32)op, key, val, k, v);
	if (op == DS_OP_POP)
		key = *k, val = *v;
	else if (op != DS_OP_INSERT)
		val = *v;
	if (record(s, t, t_inv, key, val, op, r))
		r = -1;
	ds_exit(c);
	return r;
}

static void *queue_worker(struct t_thread *t)
{
	struct shared *s = (struct shared *)t->arg;
	struct ds_ctx c;
	ap_u64 i, k, v;
	int r;

	REQUIRE(ds_user_attach(sp_global, &c) == DS_OK, "attach");
	pthread_barrier_wait(&s->go);
	if (t->index < s->producers) {
		for (i = 0; i < s->ops; i++) {
			ap_u64 val = ((ap_u64)(t->index + 1) << 32) | (i + 1);

			/* BUSY and FULL (mpmc) took no effect: recorded, and tried again */
			while ((r = run_op(&c, s, t->index, DS_OP_INSERT, val, 0, &k, &v)) == DS_BUSY ||
			       r == DS_FULL)
				sched_yield();
			REQUIRE(r == DS_OK, "enqueue -> %d", r);
		}
		__atomic_fetch_sub(&s->producers_left, 1, __ATOMIC_SEQ_CST);
	} else {
		for (;;) {
			int done = __atomic_load_n(&s->producers_left, __ATOMIC_SEQ_CST) == 0;

			r = run_op(&c, s, t->index, DS_OP_POP, 0, 0, &k, &v);
			if (r < 0)
				break; /* this thread's buffer is full: stop here, history complete */
			if (r == DS_NOT_FOUND) {
				if (done)
					break;
				sched_yield();
			}
		}
	}
	ds_user_detach(&c);
	return NULL;
}

static void *hash_worker(struct t_thread *t)
{
	struct shared *s = (struct shared *)t->arg;
	ap_u64 rng = 0x9e3779b97f4a7c15ULL * (ap_u64)(t->index + 1), i, k, v;
	struct ds_ctx c;

	REQUIRE(ds_user_attach(sp_global, &c) == DS_OK, "attach");
	pthread_barrier_wait(&s->go);
	for (i = 0; i < s->ops; i++) {
		ap_u64 x = t_rand(&rng), key = x % KEYS, p = (x >> 32) % 100;
		int r;

		if (p < 35)
			r = run_op(&c, s, t->index, DS_OP_INSERT, key, ((ap_u64)(t->index + 1) << 32) | i, &k, &v);
		else if (p < 60)
			r = run_op(&c, s, t->index, DS_OP_DELETE, key, 0, &k, &v);
		else
			r = run_op(&c, s, t->index, DS_OP_SEARCH, key, 0, &k, &v);
		if (r < 0)
			break;
	}
	ds_user_detach(&c);
	return NULL;
}

int main(int argc, char **argv)
{
	struct shared s = {0};
	struct ds_config cfg = {0};
	struct ds_ctx c;
	ap_u64 total = 0;
	FILE *f;
	int i, err, queue;

	REQUIRE(argc == 5, "usage: lin_driver msqueue|mpmc|stack|hash THREADS OPS FILE");
	queue = !strcmp(argv[1], "msqueue") || !strcmp(argv[1], "mpmc") || !strcmp(argv[1], "stack");
	REQUIRE(queue || !strcmp(argv[1], "hash"), "structure %s: msqueue, mpmc, stack or hash", argv[1]);
	s.m = ds_meta_by_name(argv[1]);
	s.threads = atoi(argv[2]);
	s.ops = strtoull(argv[3], NULL, 0);
	REQUIRE(s.m && s.threads >= 2 && s.threads <= 64 && s.ops > 0 && s.ops < (1ULL << 31), "bad arguments");
	s.producers = queue ? s.threads / 2 : s.threads;
	s.producers_left = s.producers;
	/* a consumer records at most every value plus as many empty answers; a
	 * producer every value plus its retries */
	s.cap = queue ? 4 * s.ops * (ap_u64)s.producers + 1024 : s.ops;
	s.recs = calloc((size_t)s.threads, sizeof(*s.recs));
	s.nrecs = calloc((size_t)s.threads, sizeof(*s.nrecs));
	REQUIRE(s.recs && s.nrecs, "calloc");
	for (i = 0; i < s.threads; i++) {
		s.recs[i] = malloc(s.cap * sizeof(**s.recs));
		REQUIRE(s.recs[i], "malloc");
	}
	t_map_arena();
	sp_global = t_space(16, 100000, 0);
	REQUIRE(ds_user_attach(sp_global, &c) == DS_OK, "attach");
	cfg.capacity = queue ? 1024 : 2; /* mpmc: slots; hash: buckets */
	s.d = ds_create(sp_global, &c, s.m->id, &cfg, "lin", &err);
	REQUIRE(s.d, "create: %d", err);
	pthread_barrier_init(&s.go, NULL, (unsigned)s.threads);
	t_run_threads(s.threads, queue ? queue_worker : hash_worker, &s);
	pthread_barrier_destroy(&s.go);
	f = fopen(argv[4], "wb");
	REQUIRE(f, "%s: %s", argv[4], strerror(errno));
	for (i = 0; i < s.threads; i++) {
		REQUIRE(fwrite(s.recs[i], sizeof(**s.recs), s.nrecs[i], f) == s.nrecs[i], "write");
		total += s.nrecs[i];
		free(s.recs[i]);
	}
	REQUIRE(fclose(f) == 0, "close");
	ds_user_detach(&c);
	printf("lin_driver: %s %llu records\n", s.m->name, (unsigned long long)total);
	free(s.recs);
	free(s.nrecs);
	return 0;
}
