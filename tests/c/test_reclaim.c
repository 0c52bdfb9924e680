/* SPDX-License-Identifier: MIT */
/*
 * Reclamation, checked on every registered structure through the registry
 * (a new registry line is covered without a line here). Each structure gets
 * a space of its own, so every live small object of its heap is one of its
 * nodes (or a small table it keeps, which is never freed). Per structure:
 *   - fill it with N elements;
 *   - hold: a reader thread enters its critical section and takes every
 *     live object of the heap (found by walking the heap's pages); the main
 *     thread removes every element (pop, or delete for keyed structures),
 *     then churns (inserts and removes many more) and tries to move the
 *     epoch on. While the reader is inside, none of its objects may be
 *     freed: header still live, data not poisoned (the heap fills freed
 *     objects with ARENA_POISON; ASan builds poison them in the shadow),
 *     page not handed out again. The reader reads every word of every held
 *     object before it leaves: in an ASan build, a freed one is a report.
 *     Structures without DS_F_RECLAIM free a removed node at once by design
 *     (only their single consumer ever reads it): the hold part is skipped
 *     for them, and the test checks they retire nothing;
 *   - after the reader leaves and the epoch moves on: exactly N held
 *     objects are freed (none for bounded structures), each with a dead
 *     header and poisoned data; retired == freed; allocations minus frees
 *     equal the live objects found in the heap; the live objects are as
 *     many as in the empty instance (nothing leaked); no object's canary (the
 *     word past it, ARENA_HEAP_POISON) was overwritten, live or freed.
 * Usage: test_reclaim [name|all].
 */
#include "tcommon.h"

#define N 64
#define CHURN 2000
#define ROUNDS 40
#define SPACE_PAGES 3000
/* bounded waits between the two threads: a stuck peer fails with a message */
#define WAIT_S 60

static struct ds_space *sp;

struct held {
	ap_u64 addr; /* object data */
	ap_u64 size;
	ap_u64 uses; /* its page's uses counter when it was taken */
};

struct heap_walk {
	struct held *obj; /* live small objects (NULL: count only) */
	ap_u64 n, cap;
	ap_u64 large; /* live large objects */
	ap_u64 overrun; /* live objects whose canary was overwritten */
};

/* Every live object of the heap (quiescent: nobody allocates meanwhile). */
static void walk_heap(struct arena_heap *h, struct heap_walk *w)
{
	ap_u64 fresh = arena_atomic_load(&h->fresh, ARENA_ACQUIRE), i;

	w->n = w->large = w->overrun = 0;
	for (i = 0; i < fresh && i < h->npages; i++) {
		struct arena_page *pg = arena_page_at(h->first_page + i);
		ap_u64 s = arena_atomic_load(&pg->state, ARENA_ACQUIRE), off, end;

		if (s & ARENA_PS_FREE)
			continue;
		if (s & ARENA_PS_LARGE) {
			struct arena_obj *o = (struct arena_obj *)((char *)pg + ARENA_PAGE_HDR);
			ap_u64 tag = arena_atomic_load(&o->tag, ARENA_RELAXED), size = tag & 0xffffffffULL;
			ap_u64 cw = arena_canary_addr((ap_u64)o, size, arena_obj_span(pg, (ap_u64)o, size, s));

			if ((tag >> 32) == ARENA_OBJ_LIVE) {
				w->large++;
				w->overrun += cw && *(ap_u64 *)cw != ARENA_CANARY;
			}
			i += arena_atomic_load(&pg->npages, ARENA_RELAXED) - 1;
			continue;
		}
		end = s & ARENA_PS_OFF_MASK;
		for (off = ARENA_PAGE_HDR; off + ARENA_OBJ_HDR <= end;) {
			struct arena_obj *o = (struct arena_obj *)((char *)pg + off);
			ap_u64 tag = arena_atomic_load(&o->tag, ARENA_RELAXED), size = tag & 0xffffffffULL;

			if ((tag >> 32) == ARENA_OBJ_LIVE) {
				ap_u64 cw = arena_canary_addr((ap_u64)o, size, arena_obj_span(pg, (ap_u64)o, size, s));

				w->overrun += cw && *(ap_u64 *)cw != ARENA_CANARY;
				if (w->obj) {
					REQUIRE(w->n < w->cap, "more than %llu live objects", (unsigned long long)w->cap);
					w->obj[w->n].addr = (ap_u64)o + ARENA_OBJ_HDR;
					w->obj[w->n].size = size;
					w->obj[w->n].uses = arena_atomic_load(&pg->uses, ARENA_RELAXED);
				}
				w->n++;
			} else {
				REQUIRE((tag >> 32) == ARENA_OBJ_DEAD, "page %llu offset %llu: no object header (%#llx)",
					(unsigned long long)(h->first_page + i), (unsigned long long)off,
					(unsigned long long)tag);
			}
			off += (size + ARENA_OBJ_HDR + ARENA_OBJ_ALIGN - 1) & ~(ARENA_OBJ_ALIGN - 1);
		}
	}
}

/* 0 when the held object is intact; else why not. */
static const char *damage(const struct held *o)
{
	struct arena_page *pg = (struct arena_page *)ARENA_PAGE_OF(o->addr);

	if (arena_obj_size((void *)o->addr) == 0)
		return "its header says freed";
	if (t_poisoned((void *)o->addr))
		return "its data is poisoned (freed)";
	if (arena_atomic_load(&pg->uses, ARENA_RELAXED) != o->uses)
		return "its page was freed and put into use again";
	return 0;
}

/* ---- the reader ---- */

struct hold {
	const struct ds_meta *m;
	int phase; /* 1: holding; 2: main asks it to read and leave; 3: left */
	struct heap_walk w;
	ap_u64 poisoned_words;
};

static void wait_phase(int *phase, int want, const char *who, const char *what)
{
	double end = t_now() + WAIT_S;

	while (__atomic_load_n(phase, __ATOMIC_SEQ_CST) < want) {
		REQUIRE(t_now() < end, "%s: no progress for %d s waiting for %s", who, WAIT_S, what);
		sched_yield();
	}
}

static void *holder(struct t_thread *t)
{
	struct hold *s = (struct hold *)t->arg;
	struct ds_ctx c;
	ap_u64 i, j;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	REQUIRE(ds_enter(&c) == DS_OK, "enter");
	walk_heap(&sp->heap, &s->w);
	__atomic_store_n(&s->phase, 1, __ATOMIC_SEQ_CST);
	wait_phase(&s->phase, 2, s->m->name, "the main thread to remove every element");
	/* read every word of every held object, still inside the section: an
	 * ASan build reports a freed one here (a structure that frees at once
	 * by design has no reader that may do this) */
	for (i = 0; i < s->w.n && (s->m->flags & DS_F_RECLAIM); i++) {
		const ap_u64 *wd = (const ap_u64 *)s->w.obj[i].addr;

		for (j = 0; j < s->w.obj[i].size / 8; j++)
			s->poisoned_words += __atomic_load_n(&wd[j], __ATOMIC_RELAXED) == ARENA_POISON;
	}
	ds_exit(&c);
	ds_user_detach(&c);
	__atomic_store_n(&s->phase, 3, __ATOMIC_SEQ_CST);
	return NULL;
}

/* ---- the structure's side ---- */

static ap_u64 val_of(ap_u64 key)
{
	return key * 7 + 3;
}

static int op(struct ds_ctx *c, const struct ds_meta *m, ap_u64 ds, ap_u32 o, ap_u64 key, ap_u64 *okey,
	      ap_u64 *oval)
{
	ap_u64 k = 0, v = 0;
	int r;

	ds_enter(c);
	r = ds_apply(c, m->id, ds, o, key, val_of(key), &k, &v);
	ds_exit(c);
	if (okey)
		*okey = k;
	if (oval)
		*oval = v;
	return r;
}

/* Remove keys [lo, lo + n) (keyed) or n elements (queues); checks each. */
static void remove_all(struct ds_ctx *c, const struct ds_meta *m, ap_u64 ds, ap_u64 lo, ap_u64 n)
{
	ap_u64 i, k, v, bad = 0, sum = 0, want = 0;
	int keyed = !!(m->flags & DS_F_KEYED), can_pop = !!(m->ops & DS_OP_BIT(DS_OP_POP));

	for (i = 0; i < n; i++) {
		int r;

		/* keyed: the first half by pop where there is one, the rest by delete */
		if (keyed && !(can_pop && i < n / 2)) {
			r = op(c, m, ds, DS_OP_DELETE, lo + i, &k, &v);
			k = lo + i;
		} else {
			r = op(c, m, ds, DS_OP_POP, 0, &k, &v);
		}
		bad += r != DS_OK || v != val_of(k);
		sum += k;
		want += lo + i;
	}
	CHECK(bad == 0 && sum == want, "%s: %llu of %llu removals failed or returned a wrong value (key sum %llu, "
	      "expected %llu)", m->name, (unsigned long long)bad, (unsigned long long)n, (unsigned long long)sum,
	      (unsigned long long)want);
	if (!keyed)
		CHECK(op(c, m, ds, DS_OP_POP, 0, &k, &v) == DS_NOT_FOUND, "%s: not empty after %llu pops", m->name,
		      (unsigned long long)n);
}

/* Several threads race to remove the N held elements: the same keys in the
 * same order (keyed), or pops until N came out (queues). Losing races takes
 * the structures' helping paths (a find that unlinks and retires a node
 * another thread marked). */
struct race {
	const struct ds_meta *m;
	ap_u64 ds;
	ap_u64 removed, keysum, bad;
	pthread_barrier_t go;
};

static void *remover(struct t_thread *t)
{
	struct race *s = (struct race *)t->arg;
	struct ds_ctx c;
	ap_u64 i, k, v;
	double end = t_now() + WAIT_S;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	pthread_barrier_wait(&s->go); /* all at once, so that they collide */
	if (s->m->flags & DS_F_KEYED) {
		for (i = 0; i < N; i++) {
			int r = op(&c, s->m, s->ds, DS_OP_DELETE, 1 + i, &k, &v);

			if (r == DS_OK) {
				__atomic_fetch_add(&s->removed, 1, __ATOMIC_RELAXED);
				__atomic_fetch_add(&s->keysum, 1 + i, __ATOMIC_RELAXED);
				__atomic_fetch_add(&s->bad, v != val_of(1 + i), __ATOMIC_RELAXED);
			} else {
				__atomic_fetch_add(&s->bad, r != DS_NOT_FOUND, __ATOMIC_RELAXED);
			}
		}
	} else {
		while (__atomic_load_n(&s->removed, __ATOMIC_RELAXED) < N) {
			int r = op(&c, s->m, s->ds, DS_OP_POP, 0, &k, &v);

			if (r == DS_OK) {
				__atomic_fetch_add(&s->removed, 1, __ATOMIC_RELAXED);
				__atomic_fetch_add(&s->keysum, k, __ATOMIC_RELAXED);
				__atomic_fetch_add(&s->bad, v != val_of(k), __ATOMIC_RELAXED);
				end = t_now() + WAIT_S;
				continue;
			}
			__atomic_fetch_add(&s->bad, r != DS_NOT_FOUND && r != DS_BUSY, __ATOMIC_RELAXED);
			if (t_now() > end) {
				fprintf(stderr, "%s: popper %d gave up after %d s without progress: %llu of %d elements "
					"removed, key sum %llu of %llu\n", s->m->name, t->index, WAIT_S,
					(unsigned long long)__atomic_load_n(&s->removed, __ATOMIC_RELAXED), N,
					(unsigned long long)__atomic_load_n(&s->keysum, __ATOMIC_RELAXED),
					(unsigned long long)N * (N + 1) / 2);
				break;
			}
			sched_yield();
		}
	}
	ds_user_detach(&c);
	return NULL;
}

static void remove_racing(const struct ds_meta *m, ap_u64 ds)
{
	struct race s = {0};
	int threads = m->model == DS_MODEL_ANY || m->model == DS_MODEL_MPMC ? 3 : 1;

	s.m = m;
	s.ds = ds;
	pthread_barrier_init(&s.go, NULL, (unsigned)threads);
	t_run_threads(threads, remover, &s);
	pthread_barrier_destroy(&s.go);
	CHECK(s.removed == N && s.keysum == (ap_u64)N * (N + 1) / 2 && s.bad == 0,
	      "%s: %d threads removed %llu of %d elements (key sum %llu, expected %llu), %llu wrong results",
	      m->name, threads, (unsigned long long)s.removed, N, (unsigned long long)s.keysum,
	      (unsigned long long)N * (N + 1) / 2, (unsigned long long)s.bad);
}

static void insert_all(struct ds_ctx *c, const struct ds_meta *m, ap_u64 ds, ap_u64 lo, ap_u64 n)
{
	ap_u64 i;
	int r;

	for (i = 0; i < n; i++) {
		r = op(c, m, ds, DS_OP_INSERT, lo + i, 0, 0);
		CHECK(r == DS_OK, "%s: insert %llu -> %d", m->name, (unsigned long long)(lo + i), r);
	}
}

static void check_held(const struct ds_meta *m, struct hold *s, const char *when)
{
	ap_u64 i, bad = 0;

	for (i = 0; i < s->w.n; i++) {
		const char *why = damage(&s->w.obj[i]);

		if (why && bad++ < 3)
			fprintf(stderr, "%s: held object %#llx (%llu bytes) %s, %s, while its reader was still inside "
				"its critical section\n", m->name, (unsigned long long)s->w.obj[i].addr,
				(unsigned long long)s->w.obj[i].size, why, when);
	}
	CHECK(bad == 0, "%s: %llu of %llu held objects freed under their reader %s (a removed node must be "
	      "retired, not freed)", m->name, (unsigned long long)bad, (unsigned long long)s->w.n, when);
}

/* One round: fill, hold, remove, churn, release, check. Returns 1 when
 * its checks passed. */
static int hold_round(const struct ds_meta *m, struct ds_ctx *cp, ap_u64 ds, const struct heap_walk *empty,
		      int round)
{
	struct ds_ctx c = *cp;
	struct hold s = {0};
	struct heap_walk end = {0};
	struct ebr_stats es0, es;
	struct arena_heap_stats st;
	struct t_thread ht = {0};
	pthread_t th;
	ap_u64 i, freed = 0, bad = 0, want_freed;
	int reclaim = !!(m->flags & DS_F_RECLAIM), bounded = !!(m->flags & DS_F_BOUNDED);
	int failures0 = t_failures;

	insert_all(&c, m, ds, 1, N);
	/* nothing pending: every live object is reachable when the reader starts */
	CHECK(ebr_synchronize(&sp->ebr, c.rec, 100000) == 0, "%s: synchronize before the hold", m->name);
	ebr_get_stats(&sp->ebr, &es0);

	s.m = m;
	s.w.cap = 4 * N + 64;
	s.w.obj = (struct held *)calloc(s.w.cap, sizeof(struct held));
	REQUIRE(s.w.obj, "calloc");
	ht.fn = holder;
	ht.arg = &s;
	REQUIRE(pthread_create(&th, NULL, t_trampoline, &ht) == 0, "pthread_create");
	wait_phase(&s.phase, 1, m->name, "the reader to enter and take its objects");
	CHECK(s.w.n >= (bounded ? 0 : N), "%s: the reader holds %llu objects for %d elements", m->name,
	      (unsigned long long)s.w.n, N);

	remove_racing(m, ds);
	ebr_get_stats(&sp->ebr, &es);
	if (reclaim)
		CHECK(es.retired - es0.retired >= N, "%s: %llu retired for %d removals (DS_F_RECLAIM)", m->name,
		      (unsigned long long)(es.retired - es0.retired), N);
	else
		CHECK(es.retired == es0.retired, "%s: retires nodes (%llu) but its metadata lacks DS_F_RECLAIM",
		      m->name, (unsigned long long)(es.retired - es0.retired));
	if (reclaim)
		check_held(m, &s, "right after the removals");
	/* churn: retire many more and try to move the epoch on */
	for (i = 0; i < CHURN / N; i++) {
		insert_all(&c, m, ds, 1000 + i * N, N);
		remove_all(&c, m, ds, 1000 + i * N, N);
	}
	if (reclaim) {
		CHECK(ebr_synchronize(&sp->ebr, c.rec, 1000) == -1,
		      "%s: the epoch went three steps on while a reader was inside its critical section", m->name);
		check_held(m, &s, "after churn and epoch advances");
	}
	__atomic_store_n(&s.phase, 2, __ATOMIC_SEQ_CST);
	wait_phase(&s.phase, 3, m->name, "the reader to read its objects and leave");
	pthread_join(th, NULL);
	if (reclaim)
		CHECK(s.poisoned_words == 0, "%s: the reader read %llu poisoned words in objects it held", m->name,
		      (unsigned long long)s.poisoned_words);

	/* the reader left: everything removed is freed once the epoch moves on */
	CHECK(ebr_synchronize(&sp->ebr, c.rec, 100000) == 0, "%s: synchronize after the reader left", m->name);
	/* every node that held an element; of the rest, at most what the empty
	 * instance keeps (a queue's dummy, a sentinel, a bucket table) lives on */
	want_freed = bounded ? 0 : N;
	for (i = 0; i < s.w.n; i++) {
		void *p = (void *)s.w.obj[i].addr;

		if (arena_obj_size(p) != 0)
			continue;
		freed++;
		bad += !t_poisoned(p);
	}
	walk_heap(&sp->heap, &end);
	CHECK(freed >= want_freed && s.w.n - freed <= empty->n && bad == 0,
	      "%s: %llu of the %llu held objects freed after the reader left (expected at least %llu, and at most "
	      "%llu left live), %llu of the freed not poisoned", m->name, (unsigned long long)freed,
	      (unsigned long long)s.w.n, (unsigned long long)want_freed, (unsigned long long)empty->n,
	      (unsigned long long)bad);
	ebr_get_stats(&sp->ebr, &es);
	CHECK(es.retired == es.freed, "%s: %llu retired, %llu freed once quiescent", m->name,
	      (unsigned long long)es.retired, (unsigned long long)es.freed);
	arena_heap_get_stats(&sp->heap, &st);
	CHECK(st.allocs - st.frees == end.n + end.large, "%s: %llu allocations - %llu frees, but %llu live objects "
	      "in the heap", m->name, (unsigned long long)st.allocs, (unsigned long long)st.frees,
	      (unsigned long long)(end.n + end.large));
	CHECK(end.n == empty->n && end.large == empty->large, "%s: %llu small and %llu large live objects once "
	      "drained, %llu and %llu in the empty instance (leaked)", m->name, (unsigned long long)end.n,
	      (unsigned long long)end.large, (unsigned long long)empty->n, (unsigned long long)empty->large);
	CHECK(st.bad_frees == 0, "%s: %llu bad frees", m->name, (unsigned long long)st.bad_frees);
	CHECK(st.overruns == 0 && end.overrun == 0, "%s: the word past an object overwritten: %llu freed objects, "
	      "%llu live ones (a write past a node or past the end of a slot array)", m->name,
	      (unsigned long long)st.overruns, (unsigned long long)end.overrun);
	if (t_failures == failures0 && round == 0)
		printf("%-9s ok: %llu objects held, %llu freed after the reader left, %llu retired in all%s\n", m->name,
		       (unsigned long long)s.w.n, (unsigned long long)freed, (unsigned long long)es.retired,
		       reclaim ? "" : " (no DS_F_RECLAIM: retires nothing, the hold does not apply)");
	free(s.w.obj);
	return t_failures == failures0;
}

static void run_one(const struct ds_meta *m, ap_u64 first_page)
{
	struct ds_ctx c;
	struct ds_config cfg = {.capacity = 2 * N};
	struct heap_walk empty = {0};
	ap_u64 ds;
	int err, r;

	sp = t_space(first_page, SPACE_PAGES, ARENA_HEAP_POISON);
	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	ds = ds_create(sp, &c, m->id, &cfg, NULL, &err);
	REQUIRE(ds, "%s: create: %d", m->name, err);
	walk_heap(&sp->heap, &empty);
	/* rounds: the racing removals take a helping path only now and then */
	for (r = 0; r < ROUNDS && hold_round(m, &c, ds, &empty, r); r++)
		;
	ds_user_detach(&c);
}

int main(int argc, char **argv)
{
	ap_u32 i;
	int ran = 0;

	t_map_arena();
	for (i = 0; i < DS_TYPES_END; i++) {
		const struct ds_meta *m = ds_meta_of(i);

		if (!m || (argc > 1 && strcmp(argv[1], "all") && strcmp(argv[1], m->name)))
			continue;
		run_one(m, 16 + (ap_u64)i * SPACE_PAGES);
		ran++;
	}
	REQUIRE(ran, "no structure named %s", argc > 1 ? argv[1] : "?");
	return t_done("test_reclaim");
}
