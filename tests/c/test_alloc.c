/* SPDX-License-Identifier: MIT */
/*
 * The arena allocator from userspace threads: sizes and alignment, no
 * overlap (every live object carries a canary derived from its address),
 * frees from other threads, double frees refused, NOMEM when the range is
 * exhausted, memory bounded over 10^6 alloc/free cycles, the non-sleepable
 * path limited to free pages.
 */
#include "tcommon.h"

static struct ds_space *sp;

static ap_u64 canary(ap_u64 addr, ap_u64 i)
{
	return arena_hash64(addr ^ (i * 0x9e3779b97f4a7c15ULL));
}

static void fill(void *p, ap_u64 size)
{
	ap_u64 *w = (ap_u64 *)p, i;

	for (i = 0; i < size / 8; i++)
		w[i] = canary((ap_u64)p, i);
}

static int intact(void *p, ap_u64 size)
{
	ap_u64 *w = (ap_u64 *)p, i;

	for (i = 0; i < size / 8; i++)
		if (w[i] != canary((ap_u64)p, i))
			return 0;
	return 1;
}

static void stats(struct arena_heap_stats *st)
{
	arena_heap_get_stats(&sp->heap, st);
}

static void test_basic(void)
{
	struct arena_heap_stats st0, st;
	void *objs[64];
	ap_u64 sizes[] = {1, 7, 8, 15, 16, 17, 31, 48, 100, 255, 1000, 2048, 4000, ARENA_SMALL_MAX,
			  ARENA_SMALL_MAX + 1, 10000, 100000};
	unsigned i, n = sizeof(sizes) / sizeof(sizes[0]);

	stats(&st0);
	for (i = 0; i < n; i++) {
		objs[i] = arena_heap_alloc(&sp->heap, sizes[i], 0);
		REQUIRE(objs[i], "alloc %llu", (unsigned long long)sizes[i]);
		CHECK(((ap_u64)objs[i] & 15) == 0, "alignment of %p", objs[i]);
		CHECK(arena_obj_size(objs[i]) == sizes[i], "size %llu", (unsigned long long)sizes[i]);
		memset(objs[i], 0xab, sizes[i]);
	}
	/* page-aligned objects start on a cache line */
	objs[n] = arena_heap_alloc(&sp->heap, 100, ARENA_PAGE_ALIGNED);
	CHECK(objs[n] && ((ap_u64)objs[n] & 63) == 0, "page-aligned alloc %p", objs[n]);
	stats(&st);
	CHECK(st.allocs - st0.allocs == n + 1, "allocs %llu", (unsigned long long)(st.allocs - st0.allocs));
	for (i = 0; i <= n; i++)
		CHECK(arena_free(objs[i]) == 0, "free %u", i);
	/* refused: double free, a pointer into an object, a non-arena pointer */
	CHECK(arena_free(objs[0]) == -1, "double free refused");
	CHECK(arena_free((char *)objs[1] + 16) == -1, "interior pointer refused");
	stats(&st);
	CHECK(st.bad_frees >= 2, "bad frees counted: %llu", (unsigned long long)st.bad_frees);
	CHECK(st.bytes_in_use == st0.bytes_in_use, "bytes in use back to %llu, is %llu",
	      (unsigned long long)st0.bytes_in_use, (unsigned long long)st.bytes_in_use);
	CHECK(st.pages_in_use <= st0.pages_in_use + 2, "pages in use %llu", (unsigned long long)st.pages_in_use);
}

/* Single thread: random sizes, canaries, frees in random order. */
static void test_canary(void)
{
	enum { N = 20000 };
	static void *objs[N];
	static ap_u64 sz[N];
	ap_u64 seed = 42, i, live = 0;
	struct arena_heap_stats st;

	for (i = 0; i < N; i++) {
		sz[i] = 8 + (t_rand(&seed) % 600) / 8 * 8;
		objs[i] = arena_heap_alloc(&sp->heap, sz[i], 0);
		REQUIRE(objs[i], "alloc");
		fill(objs[i], sz[i]);
	}
	for (i = 0; i < N; i++)
		CHECK(intact(objs[i], sz[i]), "canary of object %llu broken", (unsigned long long)i);
	for (i = 0; i < N; i += 2) {
		arena_free(objs[i]);
		objs[i] = NULL;
	}
	for (i = 0; i < N; i += 2) {
		sz[i] = 8 + (t_rand(&seed) % 2000) / 8 * 8;
		objs[i] = arena_heap_alloc(&sp->heap, sz[i], 0);
		REQUIRE(objs[i], "realloc");
		fill(objs[i], sz[i]);
	}
	for (i = 0; i < N; i++) {
		CHECK(intact(objs[i], sz[i]), "canary of object %llu broken after reuse", (unsigned long long)i);
		live += sz[i];
	}
	stats(&st);
	CHECK(st.bytes_in_use >= live, "bytes in use %llu < %llu", (unsigned long long)st.bytes_in_use,
	      (unsigned long long)live);
	for (i = 0; i < N; i++)
		arena_free(objs[i]);
}

/* Threads allocate, fill, pass a share of their objects to the next
 * thread through a mailbox, and free what they receive after checking it. */
#define MT_THREADS 4
#define MT_ROUNDS 40000
#define MT_BOX 256

struct mailbox {
	pthread_mutex_t mu;
	void *slot[MT_BOX];
	ap_u64 size[MT_BOX];
	int n;
};

static struct mailbox boxes[MT_THREADS];
static ap_u64 mt_freed_foreign[MT_THREADS];

static void *mt_worker(struct t_thread *t)
{
	enum { KEEP = 64 };
	void *mine[KEEP] = {0};
	ap_u64 msz[KEEP] = {0}, seed = 1000 + (ap_u64)t->index, r;
	struct mailbox *out = &boxes[(t->index + 1) % MT_THREADS], *in = &boxes[t->index];
	int i;

	for (r = 0; r < MT_ROUNDS; r++) {
		int k = (int)(t_rand(&seed) % KEEP);
		ap_u64 size = 16 + t_rand(&seed) % 1500;

		if (mine[k]) {
			CHECK(intact(mine[k], msz[k]), "thread %d: canary broken", t->index);
			if (r & 1) {
				arena_free(mine[k]);
			} else {
				pthread_mutex_lock(&out->mu);
				if (out->n < MT_BOX) {
					out->slot[out->n] = mine[k];
					out->size[out->n] = msz[k];
					out->n++;
					mine[k] = NULL;
				}
				pthread_mutex_unlock(&out->mu);
				if (mine[k])
					arena_free(mine[k]);
			}
		}
		mine[k] = arena_heap_alloc(&sp->heap, size, 0);
		REQUIRE(mine[k], "alloc in thread");
		msz[k] = size & ~7ULL;
		fill(mine[k], msz[k]);
		if ((r & 63) == 0) {
			pthread_mutex_lock(&in->mu);
			for (i = 0; i < in->n; i++) {
				CHECK(intact(in->slot[i], in->size[i]), "received object broken");
				CHECK(arena_free(in->slot[i]) == 0, "free of received object");
				mt_freed_foreign[t->index]++;
			}
			in->n = 0;
			pthread_mutex_unlock(&in->mu);
		}
	}
	for (i = 0; i < KEEP; i++)
		if (mine[i])
			arena_free(mine[i]);
	return NULL;
}

static void test_threads(void)
{
	struct arena_heap_stats st0, st;
	int i, j;
	ap_u64 foreign = 0;

	stats(&st0);
	for (i = 0; i < MT_THREADS; i++)
		pthread_mutex_init(&boxes[i].mu, NULL);
	t_run_threads(MT_THREADS, mt_worker, NULL);
	for (i = 0; i < MT_THREADS; i++) {
		for (j = 0; j < boxes[i].n; j++) {
			CHECK(intact(boxes[i].slot[j], boxes[i].size[j]), "leftover broken");
			arena_free(boxes[i].slot[j]);
		}
		foreign += mt_freed_foreign[i];
	}
	stats(&st);
	CHECK(foreign > 1000, "cross-thread frees: %llu", (unsigned long long)foreign);
	CHECK(st.allocs - st0.allocs == st.frees - st0.frees, "allocs %llu frees %llu",
	      (unsigned long long)(st.allocs - st0.allocs), (unsigned long long)(st.frees - st0.frees));
	CHECK(st.bytes_in_use == st0.bytes_in_use, "bytes in use %llu", (unsigned long long)st.bytes_in_use);
	CHECK(st.bad_frees == st0.bad_frees, "bad frees %llu", (unsigned long long)st.bad_frees);
}

/* 10^6 alloc/free cycles with a bounded live set stay within a bounded
 * number of pages: freed pages are reused. */
static void test_bounded(void)
{
	enum { WINDOW = 512 };
	void *win[WINDOW] = {0};
	ap_u64 seed = 7, i, before, after;
	struct arena_heap_stats st;

	stats(&st);
	before = st.pages_populated;
	for (i = 0; i < 1000000; i++) {
		ap_u64 k = t_rand(&seed) % WINDOW;

		if (win[k])
			arena_free(win[k]);
		win[k] = arena_heap_alloc(&sp->heap, 16 + t_rand(&seed) % 400, 0);
		REQUIRE(win[k], "alloc %llu", (unsigned long long)i);
	}
	for (i = 0; i < WINDOW; i++)
		arena_free(win[i]);
	stats(&st);
	after = st.pages_populated;
	/* live set: 512 * ~230 bytes = 30 pages; allow fragmentation and slots */
	CHECK(after - before < 200, "pages populated grew by %llu over 10^6 cycles",
	      (unsigned long long)(after - before));
	printf("bounded: 10^6 cycles, pages populated %llu -> %llu, in use now %llu\n",
	       (unsigned long long)before, (unsigned long long)after, (unsigned long long)st.pages_in_use);
}

/* A small heap runs out: NULL and a counted failure, then reuse after frees.
 * The non-sleepable path takes only free pages. */
static void test_nomem(void)
{
	struct ds_space *small = ds_space_init(200000, 64, 2, 0, 0);
	void *objs[4096];
	int n = 0, i;
	struct arena_heap_stats st;
	cpu_set_t one, all;
	void *p;

	REQUIRE(small, "small space");
	/* one CPU, so one slot: a second slot's current page would hold back
	 * part of a page from the exact count below */
	sched_getaffinity(0, sizeof(all), &all);
	CPU_ZERO(&one);
	CPU_SET(arena_cpu(), &one);
	sched_setaffinity(0, sizeof(one), &one);
	/* nothing freed yet: the non-sleepable path has no page to take */
	CHECK(arena_heap_alloc(&small->heap, 64, ARENA_NOSLEEP) == NULL, "nosleep alloc without free pages");
	while (n < 4096 && (objs[n] = arena_heap_alloc(&small->heap, 1000, 0)))
		n++;
	CHECK(n > 100 && n < 4096, "allocated %d objects before NOMEM", n);
	arena_heap_get_stats(&small->heap, &st);
	CHECK(st.failures >= 1, "failures %llu", (unsigned long long)st.failures);
	CHECK(arena_heap_alloc(&small->heap, 20000, 0) == NULL, "large alloc in a full heap");
	for (i = 0; i < n; i++)
		arena_free(objs[i]);
	arena_heap_get_stats(&small->heap, &st);
	CHECK(st.free_pages > 0, "pages back on the free stack: %llu", (unsigned long long)st.free_pages);
	p = arena_heap_alloc(&small->heap, 64, ARENA_NOSLEEP);
	CHECK(p != NULL, "nosleep alloc from a free page");
	arena_free(p);
	for (i = 0; i < n; i++)
		CHECK((objs[i] = arena_heap_alloc(&small->heap, 1000, 0)) != NULL, "realloc %d after frees", i);
	for (i = 0; i < n; i++)
		arena_free(objs[i]);
	sched_setaffinity(0, sizeof(all), &all);
}

int main(void)
{
	t_map_arena();
	sp = t_space(16, 100000, 0);
	test_basic();
	test_canary();
	test_threads();
	test_bounded();
	test_nomem();
	return t_done("test_alloc");
}
