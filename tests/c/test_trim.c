/* SPDX-License-Identifier: MIT */
/*
 * Giving pages back (arena_heap_trim), from userspace over the test's
 * anonymous mapping. The hooks stand in for the kernel: a page given back
 * loses its memory (MADV_REMOVE) and becomes inaccessible (PROT_NONE), so
 * any later touch through a stale pointer is a SIGSEGV that ends the test;
 * taking it back makes it accessible again, zeroed, as a page the kernel
 * backs anew. Exact page counts single-threaded (the resident pages of the
 * heap's range, asked of the kernel with mincore, match the statistics);
 * then threads allocate and free on owned and shared slots while another
 * trims as hard as it can.
 */
#include "tcommon.h"

static ap_u64 gave, took;

static int give_back(ap_u64 addr, ap_u64 n)
{
	if (madvise((void *)addr, n * ARENA_PAGE_SIZE, MADV_REMOVE) ||
	    mprotect((void *)addr, n * ARENA_PAGE_SIZE, PROT_NONE))
		return -1;
	__atomic_fetch_add(&gave, n, __ATOMIC_RELAXED);
	return 0;
}

static int take_back(ap_u64 addr, ap_u64 n)
{
	if (mprotect((void *)addr, n * ARENA_PAGE_SIZE, PROT_READ | PROT_WRITE))
		return -1;
	__atomic_fetch_add(&took, n, __ATOMIC_RELAXED);
	return 0;
}

/* Pages of [first, first + n) that hold memory now. */
static ap_u64 resident(ap_u64 first, ap_u64 n)
{
	unsigned char *v = malloc(n);
	ap_u64 i, r = 0;

	REQUIRE(v, "malloc");
	REQUIRE(mincore((void *)ARENA_PAGE_ADDR(first), n * ARENA_PAGE_SIZE, v) == 0, "mincore: %s",
		strerror(errno));
	for (i = 0; i < n; i++)
		r += v[i] & 1;
	free(v);
	return r;
}

static ap_u64 fill_word(ap_u64 addr)
{
	return arena_hash64(addr ^ 0x5bd1e995ULL);
}

static void fill(ap_u64 *p, ap_u64 size)
{
	ap_u64 i;

	for (i = 0; i < size / 8; i++)
		p[i] = fill_word((ap_u64)&p[i]);
}

static int intact(const ap_u64 *p, ap_u64 size)
{
	ap_u64 i;

	for (i = 0; i < size / 8; i++)
		if (p[i] != fill_word((ap_u64)&p[i]))
			return 0;
	return 1;
}

/* pages a trim that takes t pages gives back: one of every
 * ARENA_REC_ENTRIES + 1 stays as the record listing the others */
static ap_u64 given_of(ap_u64 t)
{
	return t - (t + ARENA_REC_ENTRIES) / (ARENA_REC_ENTRIES + 1);
}

/* Drive trims until nothing waits in quarantine. */
static ap_u64 trim_all(struct arena_heap *h, ap_u32 force)
{
	ap_u64 given = 0, g;
	int i;

	for (i = 0; i < 100000; i++) {
		g = arena_heap_trim(h, 1 << 20, force);
		given += g;
		if (!arena_atomic_load(&h->quar_n, ARENA_RELAXED) && !g)
			break;
		sched_yield();
	}
	return given;
}

enum { N_OBJ = 4000, OBJ_SIZE = 1000 };

static void test_exact(void)
{
	struct ds_space *sp = ds_space_init(1000, 3000, 2, 0, 0);
	struct arena_heap *h;
	struct arena_heap_stats st, st0;
	ap_u64 **objs = calloc(N_OBJ, sizeof(*objs));
	ap_u64 i, taken, want, r;

	REQUIRE(sp && objs, "space");
	h = &sp->heap;
	REQUIRE(arena_heap_attach_thread(h) == 0, "own slot");
	for (i = 0; i < N_OBJ; i++) {
		objs[i] = arena_heap_alloc(h, OBJ_SIZE, 0);
		REQUIRE(objs[i], "alloc %llu", (unsigned long long)i);
		fill(objs[i], OBJ_SIZE);
	}
	for (i = 0; i < N_OBJ; i++)
		arena_free(objs[i]);
	arena_heap_get_stats(h, &st0);
	/* every page but the slot's current one is free; nothing given back yet */
	CHECK(st0.free_pages == st0.pages_hwm - 1 && st0.pages_in_use == 1, "free %llu of %llu, in use %llu",
	      (unsigned long long)st0.free_pages, (unsigned long long)st0.pages_hwm,
	      (unsigned long long)st0.pages_in_use);
	CHECK(resident(h->first_page, h->npages) == st0.pages_hwm, "resident %llu, hwm %llu",
	      (unsigned long long)resident(h->first_page, h->npages), (unsigned long long)st0.pages_hwm);

	/* hysteresis: at or below the high watermark nothing goes */
	REQUIRE(arena_heap_set_trim(h, 100, (ap_u32)st0.free_pages) == 0, "watermarks");
	CHECK(arena_heap_set_trim(h, 10, 9) == -1, "keep above high accepted");
	CHECK(trim_all(h, 0) == 0, "trimmed at the high watermark");
	/* above it: down to keep, in one trim */
	REQUIRE(arena_heap_set_trim(h, 100, 200) == 0, "watermarks");
	taken = st0.free_pages - 100;
	want = given_of(taken);
	r = arena_heap_trim(h, 1 << 20, 0);
	arena_heap_get_stats(h, &st);
	CHECK(r == want, "given back %llu, want %llu of %llu taken", (unsigned long long)r, (unsigned long long)want,
	      (unsigned long long)taken);
	CHECK(gave == want && st.pages_returned == want, "hook saw %llu, stats %llu", (unsigned long long)gave,
	      (unsigned long long)st.pages_returned);
	CHECK(st.free_pages == 100 && st.record_pages == taken - want && st.pages_quarantined == 0,
	      "free %llu records %llu quarantined %llu", (unsigned long long)st.free_pages,
	      (unsigned long long)st.record_pages, (unsigned long long)st.pages_quarantined);
	CHECK(st.pages_populated == st0.pages_hwm - want, "populated %llu", (unsigned long long)st.pages_populated);
	r = resident(h->first_page, h->npages);
	CHECK(r == st.pages_populated, "resident %llu, populated %llu", (unsigned long long)r,
	      (unsigned long long)st.pages_populated);
	/* the non-sleepable path never backs a page: with the free stack
	 * drained, it fails although pages were given back */
	{
		ap_u64 k = 0;
		void *p;

		while ((p = arena_heap_alloc(h, ARENA_SMALL_MAX, ARENA_NOSLEEP)) != NULL) {
			objs[k++] = p;
			REQUIRE(k < N_OBJ, "nosleep allocs never ran dry");
		}
		arena_heap_get_stats(h, &st);
		CHECK(st.free_pages == 0 && st.pages_retaken == 0, "nosleep took back %llu",
		      (unsigned long long)st.pages_retaken);
		while (k)
			arena_free(objs[--k]);
	}
	printf("exact: %llu pages free, %llu taken, %llu given back, %llu records; resident %llu\n",
	       (unsigned long long)st0.free_pages, (unsigned long long)taken, (unsigned long long)want,
	       (unsigned long long)(taken - want), (unsigned long long)r);

	/* everything again: pages given back are taken back (and backed)
	 * before the bump counter grows */
	took = 0;
	for (i = 0; i < N_OBJ; i++) {
		objs[i] = arena_heap_alloc(h, OBJ_SIZE, 0);
		REQUIRE(objs[i], "realloc %llu", (unsigned long long)i);
		fill(objs[i], OBJ_SIZE);
	}
	for (i = 0; i < N_OBJ; i++)
		CHECK(intact(objs[i], OBJ_SIZE), "object %llu overwritten", (unsigned long long)i);
	arena_heap_get_stats(h, &st);
	CHECK(st.pages_retaken == want && took == want && st.record_pages == 0, "retaken %llu (hook %llu), records %llu",
	      (unsigned long long)st.pages_retaken, (unsigned long long)took, (unsigned long long)st.record_pages);
	CHECK(st.pages_hwm == st0.pages_hwm, "the bump counter grew: %llu -> %llu", (unsigned long long)st0.pages_hwm,
	      (unsigned long long)st.pages_hwm);
	CHECK(resident(h->first_page, h->npages) == st.pages_populated && st.pages_populated == st.pages_hwm,
	      "resident %llu, populated %llu", (unsigned long long)resident(h->first_page, h->npages),
	      (unsigned long long)st.pages_populated);
	CHECK(st.pages_lost == 0 && st.bad_frees == 0, "lost %llu bad frees %llu", (unsigned long long)st.pages_lost,
	      (unsigned long long)st.bad_frees);

	/* all of it, keep 0 */
	for (i = 0; i < N_OBJ; i++)
		arena_free(objs[i]);
	REQUIRE(arena_heap_set_trim(h, 0, 0) == 0, "watermarks");
	arena_heap_get_stats(h, &st0);
	r = trim_all(h, 1);
	arena_heap_get_stats(h, &st);
	CHECK(r == given_of(st0.free_pages), "given %llu of %llu", (unsigned long long)r,
	      (unsigned long long)st0.free_pages);
	CHECK(resident(h->first_page, h->npages) == st.pages_populated, "resident %llu, populated %llu",
	      (unsigned long long)resident(h->first_page, h->npages), (unsigned long long)st.pages_populated);
	arena_heap_detach_thread(h);
	free(objs);
}

/*
 * A slot whose hint is a page on the free stack: the state a task preempted
 * in the allocator can leave (it read the hint; others retired, freed and
 * replaced the page since). A trim must keep that page backed.
 */
static void test_hint(void)
{
	struct ds_space *sp = ds_space_init(40000, 200, 2, 0, 0);
	struct arena_heap *h;
	struct arena_heap_stats st;
	struct arena_page *p0;
	void *o[5];
	ap_u64 r;
	int i;

	REQUIRE(sp, "space");
	h = &sp->heap;
	REQUIRE(arena_heap_attach_thread(h) == 0, "own slot");
	REQUIRE(arena_heap_set_trim(h, 0, 0) == 0, "watermarks");
	/* five objects of a whole page each: the last page is the hint */
	for (i = 0; i < 5; i++)
		REQUIRE((o[i] = arena_heap_alloc(h, ARENA_SMALL_MAX, 0)) != NULL, "alloc");
	for (i = 0; i < 4; i++)
		arena_free(o[i]);
	p0 = (struct arena_page *)ARENA_PAGE_OF((ap_u64)o[0]);
	/* a slot nobody uses here points at the first page, which is free */
	arena_atomic_store(&h->slots[ARENA_HEAP_SLOTS - 1].cur, (ap_u64)p0, ARENA_RELEASE);
	r = trim_all(h, 1);
	arena_heap_get_stats(h, &st);
	CHECK(r == given_of(3) && st.free_pages == 1, "given %llu, %llu left free", (unsigned long long)r,
	      (unsigned long long)st.free_pages);
	/* the hinted page is still there (a page given back would fault) */
	CHECK(arena_atomic_load(&p0->state, ARENA_ACQUIRE) & ARENA_PS_FREE, "hinted page state %#llx",
	      (unsigned long long)arena_atomic_load(&p0->state, ARENA_ACQUIRE));
	arena_atomic_store(&h->slots[ARENA_HEAP_SLOTS - 1].cur, 0, ARENA_RELEASE);
	arena_free(o[4]);
	arena_heap_detach_thread(h);
}

/* ---- threads allocate and free while a trimmer gives pages back ---- */

enum { MT_WORKERS = 4, MT_ROUNDS = 300, MT_BATCH = 200 };

static struct arena_heap *mt_heap;
static int mt_stop;
static ap_u64 mt_allocs[MT_WORKERS];

static void *mt_worker(struct t_thread *t)
{
	ap_u64 *objs[MT_BATCH], sizes[MT_BATCH], seed = 0x1234 + (ap_u64)t->index, r, i;

	/* half the workers own a slot, half share their CPU's */
	if (t->index & 1)
		REQUIRE(arena_heap_attach_thread(mt_heap) == 0, "own slot");
	for (r = 0; r < MT_ROUNDS; r++) {
		for (i = 0; i < MT_BATCH; i++) {
			sizes[i] = 16 + (t_rand(&seed) % 370) * 8;
			/* now and then a whole page (the large-object path) */
			objs[i] = arena_heap_alloc(mt_heap, sizes[i], i % 50 == 49 ? ARENA_PAGE_ALIGNED : 0);
			REQUIRE(objs[i], "worker %d alloc", t->index);
			fill(objs[i], sizes[i]);
			mt_allocs[t->index]++;
		}
		for (i = 0; i < MT_BATCH; i++) {
			ap_u64 k = t_rand(&seed) % MT_BATCH;
			ap_u64 *tmp = objs[k], ts = sizes[k];

			objs[k] = objs[i];
			sizes[k] = sizes[i];
			objs[i] = tmp;
			sizes[i] = ts;
		}
		for (i = 0; i < MT_BATCH; i++) {
			CHECK(intact(objs[i], sizes[i]), "worker %d: object overwritten", t->index);
			CHECK(arena_free(objs[i]) == 0, "worker %d: free refused", t->index);
		}
	}
	if (t->index & 1)
		arena_heap_detach_thread(mt_heap);
	return NULL;
}

static void *mt_trimmer(struct t_thread *t)
{
	ap_u64 given = 0;

	(void)t;
	while (!__atomic_load_n(&mt_stop, __ATOMIC_ACQUIRE))
		given += arena_heap_trim(mt_heap, 64, 1);
	return (void *)(unsigned long)given;
}

static void *mt_thread(struct t_thread *t)
{
	return t->index == MT_WORKERS ? mt_trimmer(t) : mt_worker(t);
}

static void test_threads(void)
{
	struct ds_space *sp = ds_space_init(10000, 20000, 2, 0, 0);
	struct arena_heap_stats st;
	pthread_t trimmer;
	struct t_thread tt = {0};
	ap_u64 r;

	REQUIRE(sp, "space");
	mt_heap = &sp->heap;
	REQUIRE(arena_heap_set_trim(mt_heap, 0, 0) == 0, "watermarks");
	tt.index = MT_WORKERS;
	tt.fn = mt_thread;
	REQUIRE(pthread_create(&trimmer, NULL, t_trampoline, &tt) == 0, "trimmer");
	t_run_threads(MT_WORKERS, mt_thread, NULL);
	__atomic_store_n(&mt_stop, 1, __ATOMIC_RELEASE);
	pthread_join(trimmer, NULL);
	trim_all(mt_heap, 1);
	arena_heap_get_stats(mt_heap, &st);
	r = resident(mt_heap->first_page, mt_heap->npages);
	CHECK(st.pages_returned > 0 && st.pages_retaken > 0, "returned %llu retaken %llu",
	      (unsigned long long)st.pages_returned, (unsigned long long)st.pages_retaken);
	/* every fresh page was backed once, every page taken back once more */
	CHECK(st.pages_returned == gave && st.pages_hwm + st.pages_retaken == took,
	      "hooks %llu/%llu, stats %llu/%llu+%llu", (unsigned long long)gave, (unsigned long long)took,
	      (unsigned long long)st.pages_returned, (unsigned long long)st.pages_hwm,
	      (unsigned long long)st.pages_retaken);
	CHECK(r == st.pages_populated, "resident %llu, populated %llu", (unsigned long long)r,
	      (unsigned long long)st.pages_populated);
	CHECK(st.allocs == st.frees && st.bad_frees == 0 && st.pages_lost == 0 && st.failures == 0,
	      "allocs %llu frees %llu bad %llu lost %llu failures %llu", (unsigned long long)st.allocs,
	      (unsigned long long)st.frees, (unsigned long long)st.bad_frees, (unsigned long long)st.pages_lost,
	      (unsigned long long)st.failures);
	printf("threads: %d workers, %llu allocs; %llu pages given back, %llu taken back, %llu trim waits; "
	       "resident %llu of %llu touched\n",
	       MT_WORKERS, (unsigned long long)st.allocs, (unsigned long long)st.pages_returned,
	       (unsigned long long)st.pages_retaken, (unsigned long long)st.trim_waits, (unsigned long long)r,
	       (unsigned long long)st.pages_hwm);
}

int main(void)
{
	t_map_arena();
	arena_user_give_back = give_back;
	arena_user_take_back = take_back;
	test_exact();
	test_hint();
	gave = took = 0;
	test_threads();
	return t_done("test_trim");
}
