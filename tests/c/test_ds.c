/* SPDX-License-Identifier: MIT */
/*
 * Every registered structure from userspace threads, through the registry's
 * dispatch (so a new registry line is covered without touching this file):
 *   - semantics, single-threaded: keyed structures (insert, duplicate,
 *     search, delete, ordered iterate and pop), FIFO and LIFO order,
 *     capacity of bounded queues;
 *   - keyed, concurrent: disjoint and contended inserts and deletes with
 *     exact counts, then random operations on per-thread key ranges
 *     checked against per-thread models; the final contents compared key by
 *     key;
 *   - queues and stacks, concurrent: producers push (producer, sequence)
 *     values, consumers pop; every value comes out exactly once and, for
 *     FIFO structures, each consumer sees each producer's values in order;
 *   - verify after every phase, and no memory left behind once reclamation
 *     has run.
 *   - contended (first argument `contended`): the queues that take several
 *     producers, with more producers than CPUs and spinning consumers; the
 *     keyed structures with reclamation, with every thread inserting,
 *     deleting and searching the same few keys. Short runs meant for the
 *     ThreadSanitizer build, which reports what these races expose.
 * Usage: test_ds [name|all] [scale divisor] (default: all, 1), or
 *        test_ds contended [name|all] [scale divisor] [repeat] (default: all,
 *        1, 1; repeat runs each structure's contended run that many times).
 */
#include "tcommon.h"

static struct ds_space *sp;

static int op(struct ds_ctx *c, const struct ds_meta *m, ap_u64 ds, ap_u32 o, ap_u64 key, ap_u64 val,
	      ap_u64 *okey, ap_u64 *oval)
{
	ap_u64 k = 0, v = 0;
	int r;

	ds_enter(c);
	r = ds_apply(c, m->id, ds, o, key, val, &k, &v);
	ds_exit(c);
	if (okey)
		*okey = k;
	if (oval)
		*oval = v;
	return r;
}

static int verify(struct ds_ctx *c, const struct ds_meta *m, ap_u64 ds, struct ds_verify *v)
{
	int r = ds_verify_type(c, m->id, ds, v);

	CHECK(r == DS_OK, "%s: verify -> %d (where %llu)", m->name, r, (unsigned long long)v->where);
	return r;
}

static ap_u64 create(struct ds_ctx *c, const struct ds_meta *m, ap_u64 capacity)
{
	struct ds_config cfg = {.capacity = capacity};
	int err;
	ap_u64 d = ds_create(sp, c, m->id, &cfg, NULL, &err);

	REQUIRE(d, "%s: create: %d", m->name, err);
	return d;
}

static ap_u64 val_of(ap_u64 key)
{
	return key * 7 + 3;
}

/* ---- single-threaded semantics ---- */

static void unit_keyed(struct ds_ctx *c, const struct ds_meta *m)
{
	ap_u64 d = create(c, m, 256), k, v, i, n = 0;
	struct ds_kv *out = (struct ds_kv *)arena_heap_alloc(&sp->heap, 64 * sizeof(struct ds_kv), 0);
	struct ds_verify vf;
	int ordered = !!(m->flags & DS_F_ORDERED);

	for (i = 0; i < 50; i++)
		CHECK(op(c, m, d, DS_OP_INSERT, (i * 37) % 101, val_of((i * 37) % 101), 0, 0) == DS_OK, "%s insert",
		      m->name);
	CHECK(op(c, m, d, DS_OP_INSERT, 37, 1, 0, 0) == DS_EXISTS, "%s duplicate insert", m->name);
	CHECK(op(c, m, d, DS_OP_SEARCH, 74, 0, 0, &v) == DS_OK && v == val_of(74), "%s search", m->name);
	CHECK(op(c, m, d, DS_OP_SEARCH, 1000, 0, 0, &v) == DS_NOT_FOUND, "%s search absent", m->name);
	CHECK(op(c, m, d, DS_OP_DELETE, 74, 0, 0, &v) == DS_OK && v == val_of(74), "%s delete", m->name);
	CHECK(op(c, m, d, DS_OP_DELETE, 74, 0, 0, &v) == DS_NOT_FOUND, "%s delete twice", m->name);
	CHECK(op(c, m, d, DS_OP_SEARCH, 74, 0, 0, &v) == DS_NOT_FOUND, "%s search deleted", m->name);
	verify(c, m, d, &vf);
	CHECK(vf.count == 49, "%s count %llu", m->name, (unsigned long long)vf.count);
	ds_enter(c);
	CHECK(ds_iterate_type(c, m->id, d, 10, 40, out, 64, &n) == DS_OK, "%s iterate", m->name);
	ds_exit(c);
	for (i = 0; i < n; i++) {
		CHECK(out[i].key >= 10 && out[i].key < 40 && out[i].val == val_of(out[i].key), "%s iterate item",
		      m->name);
		if (ordered && i)
			CHECK(out[i].key > out[i - 1].key, "%s iterate order", m->name);
	}
	for (k = 10, i = 0; k < 40; k++) {
		ap_u64 j, hit = 0;

		for (j = 0; j < 50; j++)
			hit |= (j * 37) % 101 == k && k != 74;
		i += hit;
	}
	CHECK(n == i, "%s iterate count %llu, expected %llu", m->name, (unsigned long long)n, (unsigned long long)i);
	if (m->ops & DS_OP_BIT(DS_OP_POP)) {
		ap_u64 prev = 0;

		for (i = 0; i < 49; i++) {
			CHECK(op(c, m, d, DS_OP_POP, 0, 0, &k, &v) == DS_OK && v == val_of(k), "%s pop", m->name);
			if (ordered && i)
				CHECK(k > prev, "%s pop order", m->name);
			prev = k;
		}
		CHECK(op(c, m, d, DS_OP_POP, 0, 0, &k, &v) == DS_NOT_FOUND, "%s pop empty", m->name);
	}
	arena_free(out);
}

/* ds_hash_delete_val as the process table's reaper uses it: it chose to
 * delete 5 -> A, and a fork replaced that with 5 -> B before its delete
 * ran (the interleaving forced, step by step): B stays. */
static void unit_hash_delete_val(void)
{
	struct ds_ctx c;
	struct ds_hash *h;
	ap_u64 v = 0;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	h = (struct ds_hash *)create(&c, ds_meta_of(DS_TYPE_hash), 16);
	ds_enter(&c);
	CHECK(ds_hash_insert(&c, h, 5, 0xA) == DS_OK, "delete_val: insert");
	CHECK(ds_hash_delete(&c, h, 5, &v) == DS_OK && v == 0xA, "delete_val: the fork's delete");
	CHECK(ds_hash_insert(&c, h, 5, 0xB) == DS_OK, "delete_val: the fork's insert");
	CHECK(ds_hash_delete_val(&c, h, 5, 0xA) == DS_NOT_FOUND, "delete_val: a replaced value is left");
	CHECK(ds_hash_search(&c, h, 5, &v) == DS_OK && v == 0xB, "delete_val: the new value stays");
	CHECK(ds_hash_delete_val(&c, h, 6, 0xB) == DS_NOT_FOUND, "delete_val: an absent key");
	CHECK(ds_hash_delete_val(&c, h, 5, 0xB) == DS_OK, "delete_val: its own value goes");
	CHECK(ds_hash_search(&c, h, 5, &v) == DS_NOT_FOUND, "delete_val: gone");
	ds_exit(&c);
	ds_user_detach(&c);
}

static void unit_queue(struct ds_ctx *c, const struct ds_meta *m)
{
	ap_u64 cap = 64, d = create(c, m, cap), k, v, i, n = 200;
	int lifo = !!(m->flags & DS_F_LIFO), bounded = !!(m->flags & DS_F_BOUNDED);
	struct ds_verify vf;

	CHECK(op(c, m, d, DS_OP_POP, 0, 0, &k, &v) == DS_NOT_FOUND, "%s pop empty", m->name);
	if (bounded)
		n = cap;
	for (i = 0; i < n; i++)
		CHECK(op(c, m, d, DS_OP_INSERT, i, val_of(i), 0, 0) == DS_OK, "%s push %llu", m->name,
		      (unsigned long long)i);
	if (bounded)
		CHECK(op(c, m, d, DS_OP_INSERT, 999, 0, 0, 0) == DS_FULL, "%s push when full", m->name);
	verify(c, m, d, &vf);
	CHECK(vf.count == n, "%s count %llu", m->name, (unsigned long long)vf.count);
	CHECK(op(c, m, d, DS_OP_SEARCH, 1, 0, 0, &v) == DS_INVALID, "%s search is not an operation", m->name);
	{
		/* FIFO, LIFO, or (neither flag) any order: then compare sorted */
		int unordered = !(m->flags & (DS_F_FIFO | DS_F_LIFO)), bad = 0;
		ap_u64 *got = (ap_u64 *)calloc(n, sizeof(*got));

		for (i = 0; i < n; i++) {
			ap_u64 want = lifo ? n - 1 - i : i;

			if (op(c, m, d, DS_OP_POP, 0, 0, &k, &v) != DS_OK || v != val_of(k) ||
			    (!unordered && k != want))
				bad++;
			got[i] = k;
		}
		if (unordered) {
			qsort(got, n, sizeof(*got), t_cmp_u64);
			for (i = 0; i < n; i++)
				bad += got[i] != i;
		}
		CHECK(bad == 0, "%s: %d pops out of order or wrong", m->name, bad);
		free(got);
	}
	CHECK(op(c, m, d, DS_OP_POP, 0, 0, &k, &v) == DS_NOT_FOUND, "%s pop drained", m->name);
	/* wrap around a bounded ring a few times */
	for (i = 0; i < 5 * cap; i++) {
		CHECK(op(c, m, d, DS_OP_INSERT, i, val_of(i), 0, 0) == DS_OK, "%s push (wrap)", m->name);
		CHECK(op(c, m, d, DS_OP_POP, 0, 0, &k, &v) == DS_OK && k == i, "%s pop (wrap)", m->name); /* one in */
	}
	verify(c, m, d, &vf);
	CHECK(vf.count == 0, "%s empty at the end", m->name);
}

/*
 * mpmc: a context's guess of its next ticket (struct ds_hint) is only where
 * an operation looks first. Guesses ahead of the index and behind it, by
 * one, by a lap and far off, must not change one answer: an empty queue's
 * pop stays DS_NOT_FOUND (not DS_BUSY), a full queue's push DS_FULL, and
 * every push and pop lands on its own ticket, in order. And a thread
 * guesses only while it has the index to itself: a claim by another
 * context in between turns its guessing off for one operation.
 */
static void unit_mpmc_guess(struct ds_ctx *c, const struct ds_meta *m)
{
	const ap_u64 cap = 8;
	const ap_u64 off[] = {1, cap - 1, cap, cap + 1, 3 * cap, 1ULL << 63, -1ULL, -cap, -(cap + 1)};
	ap_u64 d = create(c, m, cap), k, v, i, j, next = 0, bad;
	struct ds_mpmc *q = ARENA_PTR(struct ds_mpmc, d);
	struct ds_verify vf;
	struct ds_ctx other;

	for (j = 0; j < sizeof(off) / sizeof(off[0]); j++) {
		bad = 0;
		c->pop_hint = (struct ds_hint){d | 1, q->deq + off[j]};
		CHECK(op(c, m, d, DS_OP_POP, 0, 0, &k, &v) == DS_NOT_FOUND, "mpmc: pop of empty, guess %+lld",
		      (long long)off[j]);
		for (i = 0; i < cap; i++) {
			c->push_hint = (struct ds_hint){d | 1, q->enq + off[j]};
			bad += op(c, m, d, DS_OP_INSERT, next + i, val_of(next + i), 0, 0) != DS_OK;
		}
		c->push_hint = (struct ds_hint){d | 1, q->enq + off[j]};
		CHECK(op(c, m, d, DS_OP_INSERT, 999, 0, 0, 0) == DS_FULL, "mpmc: push to full, guess %+lld",
		      (long long)off[j]);
		for (i = 0; i < cap; i++) {
			c->pop_hint = (struct ds_hint){d | 1, q->deq + off[j]};
			bad += op(c, m, d, DS_OP_POP, 0, 0, &k, &v) != DS_OK || k != next + i || v != val_of(k);
		}
		CHECK(bad == 0, "mpmc: %llu pushes or pops wrong, guess %+lld", (unsigned long long)bad,
		      (long long)off[j]);
		next += cap;
	}
	verify(c, m, d, &vf);
	CHECK(vf.count == 0 && q->enq == next && q->deq == next, "mpmc: %llu left, enq %llu deq %llu of %llu",
	      (unsigned long long)vf.count, (unsigned long long)q->enq, (unsigned long long)q->deq,
	      (unsigned long long)next);

	/* when it guesses: from its second push on, until another context's push */
	REQUIRE(ds_user_attach(sp, &other) == DS_OK, "attach");
	c->push_hint.at = 0;
	CHECK(op(c, m, d, DS_OP_INSERT, 1, val_of(1), 0, 0) == DS_OK && c->push_hint.at == d,
	      "mpmc: a first push guesses next (hint %#llx)", (unsigned long long)c->push_hint.at);
	CHECK(op(c, m, d, DS_OP_INSERT, 2, val_of(2), 0, 0) == DS_OK && c->push_hint.at == (d | 1),
	      "mpmc: a second push does not guess next (hint %#llx)", (unsigned long long)c->push_hint.at);
	CHECK(op(&other, m, d, DS_OP_INSERT, 3, val_of(3), 0, 0) == DS_OK, "mpmc: the other context's push");
	CHECK(op(c, m, d, DS_OP_INSERT, 4, val_of(4), 0, 0) == DS_OK && c->push_hint.at == d &&
		      c->push_hint.pos == q->enq,
	      "mpmc: a push after another's guesses next (hint %#llx at %llu, enq %llu)",
	      (unsigned long long)c->push_hint.at, (unsigned long long)c->push_hint.pos,
	      (unsigned long long)q->enq);
	CHECK(op(c, m, d, DS_OP_INSERT, 5, val_of(5), 0, 0) == DS_OK && c->push_hint.at == (d | 1),
	      "mpmc: guessing does not come back (hint %#llx)", (unsigned long long)c->push_hint.at);
	for (i = 1; i <= 5; i++)
		CHECK(op(i == 3 ? &other : c, m, d, DS_OP_POP, 0, 0, &k, &v) == DS_OK && k == i && v == val_of(k),
		      "mpmc: pop %llu after the guesses", (unsigned long long)i);
	ds_user_detach(&other);
}

/* ---- keyed, concurrent ---- */

#define KT 4
#define KRANGE 512
/* sizes, divided by the scale argument (sanitizer runs) and, for the O(n)
 * list, by 6 more */
static ap_u64 KOWN = 3000, KSHARED = 3000, KRANDOM = 30000, QN = 40000;
static ap_u64 scale_div = 1;

struct kshared {
	const struct ds_meta *m;
	ap_u64 d;
	pthread_barrier_t bar;
	ap_u64 ok_shared_ins[KT], ok_shared_del[KT], sum_shared_del[KT];
	unsigned char model[KT][KRANGE]; /* phase C: who holds what, per thread */
};

static ap_u64 own_key(int t, ap_u64 i)
{
	return 1000000ULL * (ap_u64)(t + 1) + i;
}

static void *keyed_worker(struct t_thread *t)
{
	struct kshared *s = (struct kshared *)t->arg;
	struct ds_ctx c;
	ap_u64 i, v, seed = 31 + (ap_u64)t->index;
	int r;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	/* A: own keys, and everyone races for the shared ones (offset order) */
	for (i = 0; i < KOWN; i++)
		CHECK(op(&c, s->m, s->d, DS_OP_INSERT, own_key(t->index, i), val_of(own_key(t->index, i)), 0, 0) ==
			      DS_OK,
		      "%s own insert", s->m->name);
	for (i = 0; i < KSHARED; i++) {
		ap_u64 k = 1 + (i + (ap_u64)t->index * 97) % KSHARED;

		r = op(&c, s->m, s->d, DS_OP_INSERT, k, val_of(k), 0, 0);
		CHECK(r == DS_OK || r == DS_EXISTS, "%s shared insert -> %d", s->m->name, r);
		s->ok_shared_ins[t->index] += r == DS_OK;
	}
	pthread_barrier_wait(&s->bar);
	pthread_barrier_wait(&s->bar); /* main verifies */
	/* B: everyone races to delete the shared keys; own even keys go */
	for (i = 0; i < KSHARED; i++) {
		ap_u64 k = 1 + (i + (ap_u64)t->index * 131) % KSHARED;

		r = op(&c, s->m, s->d, DS_OP_DELETE, k, 0, 0, &v);
		CHECK(r == DS_OK || r == DS_NOT_FOUND, "%s shared delete -> %d", s->m->name, r);
		if (r == DS_OK) {
			s->ok_shared_del[t->index]++;
			s->sum_shared_del[t->index] += v;
		}
	}
	for (i = 0; i < KOWN; i += 2)
		CHECK(op(&c, s->m, s->d, DS_OP_DELETE, own_key(t->index, i), 0, 0, &v) == DS_OK &&
			      v == val_of(own_key(t->index, i)),
		      "%s own delete", s->m->name);
	pthread_barrier_wait(&s->bar);
	pthread_barrier_wait(&s->bar);
	/* C: random operations on a private range, against a private model */
	for (i = 0; i < KRANDOM; i++) {
		ap_u64 x = t_rand(&seed), j = x % KRANGE, k = 2000000000ULL + (ap_u64)t->index * KRANGE + j;
		unsigned char *has = &s->model[t->index][j];

		switch ((x >> 32) % 3) {
		case 0:
			r = op(&c, s->m, s->d, DS_OP_INSERT, k, val_of(k), 0, 0);
			CHECK(r == (*has ? DS_EXISTS : DS_OK), "%s random insert -> %d", s->m->name, r);
			*has = 1;
			break;
		case 1:
			r = op(&c, s->m, s->d, DS_OP_DELETE, k, 0, 0, &v);
			CHECK(r == (*has ? DS_OK : DS_NOT_FOUND), "%s random delete -> %d", s->m->name, r);
			*has = 0;
			break;
		default:
			r = op(&c, s->m, s->d, DS_OP_SEARCH, k, 0, 0, &v);
			CHECK(r == (*has ? DS_OK : DS_NOT_FOUND) && (!*has || v == val_of(k)),
			      "%s random search -> %d", s->m->name, r);
		}
	}
	ds_user_detach(&c);
	return NULL;
}

static void conc_keyed(struct ds_ctx *c, const struct ds_meta *m)
{
	struct kshared *s = (struct kshared *)calloc(1, sizeof(*s));
	struct ds_verify v;
	ap_u64 ins = 0, del = 0, sum = 0, expect_sum = 0, i, n = 0, want = 0;
	struct ds_kv *out;
	int t, j;

	s->m = m;
	s->d = create(c, m, 8192);
	pthread_barrier_init(&s->bar, NULL, KT + 1);
	{
		pthread_t th[KT];
		struct t_thread ts[KT];

		for (t = 0; t < KT; t++) {
			ts[t].index = t;
			ts[t].arg = s;
			ts[t].fn = keyed_worker;
			pthread_create(&th[t], NULL, t_trampoline, &ts[t]);
		}
		pthread_barrier_wait(&s->bar);
		for (t = 0; t < KT; t++)
			ins += s->ok_shared_ins[t];
		CHECK(ins == KSHARED, "%s: %llu successful inserts of %llu contended keys", m->name,
		      (unsigned long long)ins, (unsigned long long)KSHARED);
		verify(c, m, s->d, &v);
		CHECK(v.count == KT * KOWN + KSHARED, "%s: count %llu after inserts", m->name,
		      (unsigned long long)v.count);
		pthread_barrier_wait(&s->bar);
		pthread_barrier_wait(&s->bar);
		for (t = 0; t < KT; t++) {
			del += s->ok_shared_del[t];
			sum += s->sum_shared_del[t];
		}
		for (i = 1; i <= KSHARED; i++)
			expect_sum += val_of(i);
		CHECK(del == KSHARED && sum == expect_sum, "%s: %llu successful deletes of %llu contended keys",
		      m->name, (unsigned long long)del, (unsigned long long)KSHARED);
		verify(c, m, s->d, &v);
		CHECK(v.count == KT * (KOWN / 2), "%s: count %llu after deletes", m->name, (unsigned long long)v.count);
		pthread_barrier_wait(&s->bar);
		for (t = 0; t < KT; t++)
			pthread_join(th[t], NULL);
	}
	/* the final contents, key by key */
	verify(c, m, s->d, &v);
	for (t = 0; t < KT; t++)
		for (j = 0; j < KRANGE; j++)
			want += s->model[t][j];
	CHECK(v.count == KT * (KOWN / 2) + want, "%s: final count %llu, expected %llu", m->name,
	      (unsigned long long)v.count, (unsigned long long)(KT * (KOWN / 2) + want));
	out = (struct ds_kv *)arena_heap_alloc(&sp->heap, (KT * KRANGE + 1) * sizeof(struct ds_kv), 0);
	REQUIRE(out, "alloc");
	ds_enter(c);
	CHECK(ds_iterate_type(c, m->id, s->d, 2000000000ULL, 2000000000ULL + KT * KRANGE, out, KT * KRANGE + 1,
			      &n) == DS_OK,
	      "%s iterate", m->name);
	ds_exit(c);
	CHECK(n == want, "%s: iterate found %llu random-phase keys, model has %llu", m->name, (unsigned long long)n,
	      (unsigned long long)want);
	for (i = 0; i < n; i++) {
		ap_u64 off = out[i].key - 2000000000ULL;

		CHECK(off < KT * KRANGE && s->model[off / KRANGE][off % KRANGE] && out[i].val == val_of(out[i].key),
		      "%s: key %llu not in the model", m->name, (unsigned long long)out[i].key);
		if ((m->flags & DS_F_ORDERED) && i)
			CHECK(out[i].key > out[i - 1].key, "%s: iterate out of order", m->name);
	}
	arena_free(out);
	pthread_barrier_destroy(&s->bar);
	free(s);
}

/* ---- queues and stacks, concurrent ---- */

#define QP 3
#define QC 3
/* the contended run: more producers than the project's VM has CPUs (2), so
 * that producers are preempted, now and then between two steps of a push
 * that another producer then finishes (msqueue's tail swing) */
#define QP_CONTENDED 8
#define QN_CONTENDED 3000
#define QC_CONTENDED 8
#define ROUNDS_CONTENDED 6

struct qshared {
	const struct ds_meta *m;
	ap_u64 d;
	int producers, consumers;
	ap_u64 popped;            /* total, shared */
	ap_u64 popped_sum;        /* of the sequence numbers popped */
	int spin;                 /* consumers retry an empty pop at once (no yield) */
	pthread_barrier_t go;     /* every worker starts at once */
	unsigned char *seen;      /* [producer][seq] */
	ap_u64 order_errors, dups;
	int gave_up;              /* a worker saw no progress for T_STALL_S */
};

/* Say once what a stalled run is missing, and make every worker stop. */
static void q_give_up(struct qshared *s, const char *who, int index)
{
	ap_u64 total = (ap_u64)s->producers * QN;

	if (__atomic_exchange_n(&s->gave_up, 1, __ATOMIC_SEQ_CST))
		return;
	fprintf(stderr, "%s: %s %d gave up after %d s without progress: popped %llu of %llu values, "
		"sequence sum %llu of %llu\n", s->m->name, who, index, T_STALL_S,
		(unsigned long long)__atomic_load_n(&s->popped, __ATOMIC_SEQ_CST), (unsigned long long)total,
		(unsigned long long)__atomic_load_n(&s->popped_sum, __ATOMIC_SEQ_CST),
		(unsigned long long)(s->producers * (QN * (QN - 1) / 2)));
}

static void *q_worker(struct t_thread *t)
{
	struct qshared *s = (struct qshared *)t->arg;
	struct ds_ctx c;
	ap_u64 i, k, v, total = (ap_u64)s->producers * QN;
	int r;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	pthread_barrier_wait(&s->go);
	if (t->index < s->producers) {
		struct t_stall stall = {0};

		for (i = 0; i < QN && !__atomic_load_n(&s->gave_up, __ATOMIC_RELAXED); i++) {
			ap_u64 val = ((ap_u64)t->index << 32) | i;

			while ((r = op(&c, s->m, s->d, DS_OP_INSERT, i, val, 0, 0)) != DS_OK) {
				CHECK(r == DS_FULL || r == DS_BUSY, "%s push -> %d", s->m->name, r);
				if (r != DS_FULL && r != DS_BUSY)
					break;
				/* full: the consumers must be taking values out */
				if (t_stalled(&stall, __atomic_load_n(&s->popped, __ATOMIC_RELAXED))) {
					q_give_up(s, "producer", t->index);
					break;
				}
				if (__atomic_load_n(&s->gave_up, __ATOMIC_RELAXED))
					break;
				sched_yield();
			}
		}
	} else {
		struct t_stall stall = {0};
		ap_u64 last[QP_CONTENDED];
		int p;

		for (p = 0; p < QP_CONTENDED; p++)
			last[p] = ~0ULL;
		while (__atomic_load_n(&s->popped, __ATOMIC_RELAXED) < total &&
		       !__atomic_load_n(&s->gave_up, __ATOMIC_RELAXED)) {
			r = op(&c, s->m, s->d, DS_OP_POP, 0, 0, &k, &v);
			if (r != DS_OK) {
				CHECK(r == DS_NOT_FOUND || r == DS_BUSY, "%s pop -> %d", s->m->name, r);
				if (t_stalled(&stall, __atomic_load_n(&s->popped, __ATOMIC_RELAXED))) {
					q_give_up(s, "consumer", t->index - s->producers);
					break;
				}
				if (!s->spin)
					sched_yield();
				continue;
			}
			p = (int)(v >> 32);
			i = v & 0xffffffffULL;
			if (p >= s->producers || i >= QN || k != i) {
				/* malformed: counted, and it does not count as popped,
				 * so the run stalls and says what is missing */
				if (__atomic_fetch_add(&s->dups, 1, __ATOMIC_RELAXED) < 3)
					fprintf(stderr, "%s: popped a malformed value: key %llu value %#llx\n", s->m->name,
						(unsigned long long)k, (unsigned long long)v);
				continue;
			}
			if (__atomic_exchange_n(&s->seen[(ap_u64)p * QN + i], 1, __ATOMIC_RELAXED))
				__atomic_fetch_add(&s->dups, 1, __ATOMIC_RELAXED);
			if ((s->m->flags & DS_F_FIFO) && last[p] != ~0ULL && i <= last[p])
				__atomic_fetch_add(&s->order_errors, 1, __ATOMIC_RELAXED);
			last[p] = i;
			__atomic_fetch_add(&s->popped_sum, i, __ATOMIC_RELAXED);
			__atomic_fetch_add(&s->popped, 1, __ATOMIC_RELAXED);
		}
	}
	ds_user_detach(&c);
	return NULL;
}

static void conc_queue(struct ds_ctx *c, const struct ds_meta *m, int producers, int consumers, int spin)
{
	struct qshared s = {0};
	struct ds_verify v;
	ap_u64 i, missing = 0;

	s.m = m;
	s.d = create(c, m, 1024);
	s.producers = m->model == DS_MODEL_SPSC ? 1 : producers;
	s.consumers = m->model == DS_MODEL_MPMC ? consumers : 1;
	s.spin = spin;
	s.seen = (unsigned char *)calloc((size_t)s.producers * QN, 1);
	REQUIRE(s.seen, "calloc");
	pthread_barrier_init(&s.go, NULL, (unsigned)(s.producers + s.consumers));
	t_run_threads(s.producers + s.consumers, q_worker, &s);
	pthread_barrier_destroy(&s.go);
	for (i = 0; i < (ap_u64)s.producers * QN; i++) {
		if (!s.seen[i] && !missing++)
			fprintf(stderr, "%s: first value never popped: producer %llu, sequence %llu\n", m->name,
				(unsigned long long)(i / QN), (unsigned long long)(i % QN));
	}
	CHECK(missing == 0 && s.dups == 0 && !s.gave_up,
	      "%s: expected %llu values (sequence sum %llu), popped %llu (sum %llu): %llu lost, %llu duplicated "
	      "or malformed%s", m->name, (unsigned long long)(s.producers * QN),
	      (unsigned long long)(s.producers * (QN * (QN - 1) / 2)), (unsigned long long)s.popped,
	      (unsigned long long)s.popped_sum, (unsigned long long)missing, (unsigned long long)s.dups,
	      s.gave_up ? ", a worker gave up" : "");
	CHECK(s.order_errors == 0, "%s: %llu per-producer order violations", m->name,
	      (unsigned long long)s.order_errors);
	verify(c, m, s.d, &v);
	CHECK(v.count == 0, "%s: %llu left", m->name, (unsigned long long)v.count);
	free(s.seen);
}

static void run_one(const struct ds_meta *m)
{
	struct ds_ctx c;
	struct arena_heap_stats st0, st;
	struct ebr_stats es;
	int failures0 = t_failures;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	arena_heap_get_stats(&sp->heap, &st0);
	KOWN = 3000 / scale_div;
	KSHARED = 3000 / scale_div;
	KRANDOM = 30000 / scale_div;
	QN = 40000 / scale_div;
	if (!strcmp(m->name, "list")) {
		KOWN /= 6;
		KSHARED /= 6;
	}
	if (m->flags & DS_F_KEYED) {
		unit_keyed(&c, m);
		conc_keyed(&c, m);
	} else {
		unit_queue(&c, m);
		if (m->id == DS_TYPE_mpmc)
			unit_mpmc_guess(&c, m);
		conc_queue(&c, m, QP, QC, 0);
	}
	CHECK(ebr_synchronize(&sp->ebr, c.rec, 100000) == 0, "%s: synchronize", m->name);
	ebr_get_stats(&sp->ebr, &es);
	CHECK(es.pending == 0, "%s: %llu retired objects not freed", m->name, (unsigned long long)es.pending);
	arena_heap_get_stats(&sp->heap, &st);
	CHECK(st.bad_frees == st0.bad_frees, "%s: bad frees", m->name);
	CHECK(st.overruns == st0.overruns, "%s: %llu objects freed with the word past them overwritten", m->name,
	      (unsigned long long)(st.overruns - st0.overruns));
	if (t_failures != failures0)
		printf("%-9s FAILED\n", m->name);
	else
		printf("%-9s ok: %llu allocations, %llu bytes in use after (instances and keyed leftovers)\n", m->name,
		       (unsigned long long)(st.allocs - st0.allocs), (unsigned long long)st.bytes_in_use);
	ds_user_detach(&c);
}

/*
 * Keyed, contended: every thread inserts, searches and deletes the same few
 * keys, so an insert still linking a node's upper levels often meets the
 * delete of the same key (the skiplist's raced retire), while searches walk
 * over nodes being unlinked. Each thread counts its successful inserts and
 * deletes; what is left must be exactly their difference.
 */
#define KR_KEYS 4
/* per thread: the skiplist's raced retire comes some 60 times in 8 * KR_OPS
 * operations, and a wrong free there is reported in about two runs of three
 * (repeat the run to be sure) */
#define KR_OPS 60000

struct krace {
	const struct ds_meta *m;
	ap_u64 d;
	ap_u64 ins, del, bad;
	pthread_barrier_t go;
};

static void *krace_worker(struct t_thread *t)
{
	struct krace *s = (struct krace *)t->arg;
	struct ds_ctx c;
	ap_u64 i, v, seed = 77 + (ap_u64)t->index, ins = 0, del = 0, bad = 0;
	int r;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	pthread_barrier_wait(&s->go);
	for (i = 0; i < KR_OPS / scale_div; i++) {
		ap_u64 x = t_rand(&seed), k = 1 + x % KR_KEYS;

		switch ((x >> 32) % 3) {
		case 0:
			r = op(&c, s->m, s->d, DS_OP_INSERT, k, val_of(k), 0, 0);
			ins += r == DS_OK;
			bad += r != DS_OK && r != DS_EXISTS;
			break;
		case 1:
			r = op(&c, s->m, s->d, DS_OP_DELETE, k, 0, 0, &v);
			del += r == DS_OK;
			bad += (r != DS_OK && r != DS_NOT_FOUND) || (r == DS_OK && v != val_of(k));
			break;
		default:
			r = op(&c, s->m, s->d, DS_OP_SEARCH, k, 0, 0, &v);
			bad += (r != DS_OK && r != DS_NOT_FOUND) || (r == DS_OK && v != val_of(k));
		}
	}
	__atomic_fetch_add(&s->ins, ins, __ATOMIC_RELAXED);
	__atomic_fetch_add(&s->del, del, __ATOMIC_RELAXED);
	__atomic_fetch_add(&s->bad, bad, __ATOMIC_RELAXED);
	ds_user_detach(&c);
	return NULL;
}

static void run_keyed_race(const struct ds_meta *m)
{
	struct ds_ctx c;
	struct krace s = {0};
	struct ds_verify v;
	int failures0 = t_failures;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	s.m = m;
	s.d = create(&c, m, 64);
	pthread_barrier_init(&s.go, NULL, QP_CONTENDED);
	t_run_threads(QP_CONTENDED, krace_worker, &s);
	pthread_barrier_destroy(&s.go);
	verify(&c, m, s.d, &v);
	CHECK(s.bad == 0 && s.ins - s.del == v.count && v.count <= KR_KEYS,
	      "%s: %llu inserts and %llu deletes of %d shared keys left %llu, %llu wrong results", m->name,
	      (unsigned long long)s.ins, (unsigned long long)s.del, KR_KEYS, (unsigned long long)v.count,
	      (unsigned long long)s.bad);
	CHECK(ebr_synchronize(&sp->ebr, c.rec, 100000) == 0, "%s: synchronize", m->name);
	printf("%-9s %s: %d threads, %llu inserts and %llu deletes of %d shared keys\n", m->name,
	       t_failures == failures0 ? "ok" : "FAILED", QP_CONTENDED, (unsigned long long)s.ins,
	       (unsigned long long)s.del, KR_KEYS);
	ds_user_detach(&c);
}

/*
 * The contended run: QP_CONTENDED producers against spinning consumers on
 * every queue that takes several producers. A producer preempted between
 * linking its node and swinging the tail has the tail swung by another
 * producer (msqueue's helping path), and while it is off its CPU a consumer
 * pops the node, ordered after the producer's writes only by the link's
 * release (the ThreadSanitizer build reports a weaker link as a data race).
 */
static void run_contended(const struct ds_meta *m)
{
	struct ds_ctx c;
	int failures0 = t_failures, r;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	QN = QN_CONTENDED / scale_div;
	/* rounds: a helped tail swing comes with a preemption at the right
	 * instruction, a few times a round on a loaded 2-CPU machine */
	for (r = 0; r < ROUNDS_CONTENDED && t_failures == failures0; r++)
		conc_queue(&c, m, QP_CONTENDED, QC_CONTENDED, 1);
	CHECK(ebr_synchronize(&sp->ebr, c.rec, 100000) == 0, "%s: synchronize", m->name);
	printf("%-9s %s: %d rounds of %d producers, %llu values each\n", m->name,
	       t_failures == failures0 ? "ok" : "FAILED", r, QP_CONTENDED, (unsigned long long)QN);
	ds_user_detach(&c);
}

int main(int argc, char **argv)
{
	ap_u32 i;
	int ran = 0, contended = argc > 1 && !strcmp(argv[1], "contended");
	ap_u64 repeat = 1, rep;

	if (contended) {
		argv++;
		argc--;
	}
	if (argc > 2)
		scale_div = strtoull(argv[2], NULL, 0) ? strtoull(argv[2], NULL, 0) : 1;
	if (contended && argc > 3)
		repeat = strtoull(argv[3], NULL, 0) ? strtoull(argv[3], NULL, 0) : 1;
	t_map_arena();
	sp = t_space(16, 200000, ARENA_HEAP_POISON);
	for (i = 0; i < DS_TYPES_END; i++) {
		const struct ds_meta *m = ds_meta_of(i);

		if (!m || (argc > 1 && strcmp(argv[1], "all") && strcmp(argv[1], m->name)))
			continue;
		if (!contended)
			run_one(m);
		else if (!(m->flags & DS_F_KEYED) && m->model != DS_MODEL_SPSC)
			for (rep = 0; rep < repeat; rep++)
				run_contended(m);
		else if ((m->flags & DS_F_KEYED) && (m->flags & DS_F_RECLAIM))
			for (rep = 0; rep < repeat; rep++)
				run_keyed_race(m);
		else
			continue;
		ran++;
	}
	REQUIRE(ran, "no structure named %s%s", argc > 1 ? argv[1] : "?",
		contended ? " that the contended run takes (multi-producer queues, keyed with reclamation)" : "");
	if (contended)
		return t_done("test_ds");
	unit_hash_delete_val();
	{
		/* the space's directory: instances by name */
		struct ds_ctx c;
		ap_u32 type = 0;
		int err;
		ap_u64 a, b;

		REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
		a = ds_create(sp, &c, DS_TYPE_hash, NULL, "index", &err);
		b = ds_create(sp, &c, DS_TYPE_msqueue, NULL, "events", &err);
		CHECK(a && ds_lookup(sp, "index", &type) == a && type == DS_TYPE_hash, "lookup index");
		CHECK(b && ds_lookup(sp, "events", &type) == b && type == DS_TYPE_msqueue, "lookup events");
		CHECK(ds_lookup(sp, "nothing", NULL) == 0, "lookup of an unknown name");
		CHECK(ds_create(sp, &c, 99, NULL, NULL, &err) == 0 && err == DS_INVALID, "unknown type refused");
		ds_user_detach(&c);
	}
	return t_done("test_ds");
}
