/* SPDX-License-Identifier: MIT */
/*
 * Epoch reclamation from userspace: a reader that holds a node across a
 * concurrent delete never sees it freed (the heap poisons freed objects)
 * until it leaves its critical section, and sees it freed after; readers
 * racing writers never read a poisoned node; a participant that dies
 * inside a critical section (a killed process) is expired and stops
 * blocking reclamation; objects retired in any order of their pages
 * (runs of one page, pages interleaved, a large object among them) are
 * all freed, and their pages given back, once the epoch has moved on; a
 * drain refuses an object that is not live, and a free after its drain is
 * refused.
 */
#include <signal.h>
#include <sys/wait.h>

#include "tcommon.h"

static struct ds_space *sp;
static ap_u64 hash;

/* The node holding key in the hash, or NULL (caller inside a critical section). */
static struct hm_node *find_node(ap_u64 key)
{
	struct ds_hash *d = (struct ds_hash *)hash;
	ap_u64 cur = arena_atomic_load(ds_hash_bucket(d, key), ARENA_ACQUIRE);

	while (DS_UNMARK(cur)) {
		struct hm_node *n = (struct hm_node *)DS_UNMARK(cur);

		if (n->key == key)
			return n;
		cur = arena_atomic_load(&n->next, ARENA_ACQUIRE);
	}
	return NULL;
}

static ap_u64 val_of(ap_u64 key)
{
	return key * 3 + 1;
}

/* ---- a reader holds a node across its delete ---- */

static volatile int phase;
static struct hm_node *held;

static void *holder(struct t_thread *t)
{
	struct ds_ctx c;
	int ok = 1, i;

	(void)t;
	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	REQUIRE(ds_enter(&c) == DS_OK, "enter");
	held = find_node(77);
	REQUIRE(held, "key 77 present");
	__atomic_store_n(&phase, 1, __ATOMIC_SEQ_CST);
	/* the main thread deletes 77 and churns; the node must stay intact */
	while (__atomic_load_n(&phase, __ATOMIC_SEQ_CST) == 1) {
		for (i = 0; i < 100; i++)
			if (arena_atomic_load(&held->key, ARENA_RELAXED) != 77 ||
			    arena_atomic_load(&held->val, ARENA_RELAXED) != val_of(77) ||
			    arena_obj_size(held) == 0)
				ok = 0;
		sched_yield();
	}
	CHECK(ok, "held node changed or freed while its reader was inside its critical section");
	ds_exit(&c);
	ds_user_detach(&c);
	__atomic_store_n(&phase, 3, __ATOMIC_SEQ_CST);
	return NULL;
}

static void test_hold_across_delete(void)
{
	struct ds_ctx c;
	ap_u64 v, k;
	pthread_t th;
	struct t_thread t = {0};
	struct ebr_stats es;
	int r;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	ds_enter(&c);
	CHECK(ds_hash_insert(&c, (struct ds_hash *)hash, 77, val_of(77)) == DS_OK, "insert 77");
	ds_exit(&c);
	t.fn = holder;
	pthread_create(&th, NULL, t_trampoline, &t);
	while (__atomic_load_n(&phase, __ATOMIC_SEQ_CST) != 1)
		sched_yield();
	ds_enter(&c);
	CHECK(ds_hash_delete(&c, (struct ds_hash *)hash, 77, &v) == DS_OK && v == val_of(77), "delete 77");
	ds_exit(&c);
	/* churn: retire many more nodes and try hard to advance the epoch */
	for (k = 1000; k < 3000; k++) {
		ds_enter(&c);
		ds_hash_insert(&c, (struct ds_hash *)hash, k, val_of(k));
		ds_hash_delete(&c, (struct ds_hash *)hash, k, &v);
		ds_exit(&c);
	}
	r = ebr_synchronize(&sp->ebr, c.rec, 1000);
	CHECK(r == -1, "the epoch went three steps on while a reader held its critical section");
	CHECK(arena_obj_size(held) != 0, "node freed while held");
	__atomic_store_n(&phase, 2, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&phase, __ATOMIC_SEQ_CST) != 3)
		sched_yield();
	pthread_join(th, NULL);
	CHECK(ebr_synchronize(&sp->ebr, c.rec, 100000) == 0, "synchronize after the reader left");
	CHECK(arena_obj_size(held) == 0, "node not freed after its reader left");
	CHECK(t_poisoned(&held->val), "freed node not poisoned");
	ebr_get_stats(&sp->ebr, &es);
	CHECK(es.pending == 0, "objects still pending after synchronize: %llu", (unsigned long long)es.pending);
	ds_user_detach(&c);
}

/* ---- readers against writers ---- */

#define RW_KEYS 256
#define RW_OPS 150000
static volatile int rw_stop;

static void *rw_reader(struct t_thread *t)
{
	struct ds_ctx c;
	ap_u64 seed = 99 + (ap_u64)t->index, n = 0, bad = 0;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	while (!__atomic_load_n(&rw_stop, __ATOMIC_RELAXED)) {
		ap_u64 k = t_rand(&seed) % RW_KEYS, v = 0;
		struct hm_node *nd;

		ds_enter(&c);
		if (ds_hash_search(&c, (struct ds_hash *)hash, k, &v) == DS_OK && v != val_of(k))
			bad++;
		/* walk the chain by hand: every node read must be intact */
		nd = find_node(k);
		if (nd && (arena_atomic_load(&nd->key, ARENA_RELAXED) != k ||
			   arena_atomic_load(&nd->val, ARENA_RELAXED) != val_of(k)))
			bad++;
		ds_exit(&c);
		n++;
	}
	CHECK(bad == 0, "reader %d saw %llu bad nodes in %llu reads", t->index, (unsigned long long)bad,
	      (unsigned long long)n);
	ds_user_detach(&c);
	return NULL;
}

static void *rw_writer(struct t_thread *t)
{
	struct ds_ctx c;
	ap_u64 seed = 7 + (ap_u64)t->index, i, v;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	for (i = 0; i < RW_OPS; i++) {
		ap_u64 k = t_rand(&seed) % RW_KEYS;

		ds_enter(&c);
		if (i & 1)
			ds_hash_insert(&c, (struct ds_hash *)hash, k, val_of(k));
		else
			ds_hash_delete(&c, (struct ds_hash *)hash, k, &v);
		ds_exit(&c);
	}
	ds_user_detach(&c);
	return NULL;
}

static void *rw_thread(struct t_thread *t)
{
	if (t->index < 2)
		return rw_writer(t);
	return rw_reader(t);
}

static void test_readers_writers(void)
{
	struct ds_ctx c;
	struct ds_verify v;
	struct ebr_stats es;
	struct arena_heap_stats st;
	pthread_t th[4];
	struct t_thread ts[4];
	int i;

	for (i = 0; i < 4; i++) {
		ts[i].index = i;
		ts[i].fn = rw_thread;
		pthread_create(&th[i], NULL, t_trampoline, &ts[i]);
	}
	pthread_join(th[0], NULL);
	pthread_join(th[1], NULL);
	__atomic_store_n(&rw_stop, 1, __ATOMIC_RELAXED);
	pthread_join(th[2], NULL);
	pthread_join(th[3], NULL);

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	CHECK(ds_hash_verify(&c, (struct ds_hash *)hash, &v) == DS_OK, "verify (where %llu)",
	      (unsigned long long)v.where);
	CHECK(ebr_synchronize(&sp->ebr, c.rec, 100000) == 0, "synchronize");
	ebr_get_stats(&sp->ebr, &es);
	arena_heap_get_stats(&sp->heap, &st);
	CHECK(es.pending == 0, "pending %llu", (unsigned long long)es.pending);
	printf("readers/writers: %llu keys left, %llu retired, %llu freed, %llu advances\n",
	       (unsigned long long)v.count, (unsigned long long)es.retired, (unsigned long long)es.freed,
	       (unsigned long long)es.advances);
	ds_user_detach(&c);
}

/* ---- a participant dies inside its critical section ---- */

static void test_dead_participant(void)
{
	int ready[2], hold[2];
	pid_t pid;
	char b = 0;
	struct ds_ctx c;
	struct ebr_stats es0, es;
	ap_u64 v;
	struct hm_node *victim;

	REQUIRE(pipe(ready) == 0 && pipe(hold) == 0, "pipe");
	pid = fork();
	REQUIRE(pid >= 0, "fork");
	if (pid == 0) {
		struct ds_ctx cc;

		if (ds_user_attach(sp, &cc) != DS_OK || ds_enter(&cc) != DS_OK)
			_exit(2);
		if (write(ready[1], "r", 1) != 1)
			_exit(3);
		/* stays inside its critical section until killed */
		if (read(hold[0], &b, 1) < 0)
			_exit(4);
		_exit(0);
	}
	REQUIRE(read(ready[0], &b, 1) == 1, "child ready");
	ebr_get_stats(&sp->ebr, &es0);
	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	ds_enter(&c);
	ds_hash_insert(&c, (struct ds_hash *)hash, 5555, val_of(5555));
	victim = find_node(5555);
	ds_hash_delete(&c, (struct ds_hash *)hash, 5555, &v);
	ds_exit(&c);
	CHECK(ebr_synchronize(&sp->ebr, c.rec, 2000) == -1, "a live participant inside its section was passed");
	CHECK(arena_obj_size(victim) != 0, "retired node freed while a live participant could hold it");
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	CHECK(ebr_synchronize(&sp->ebr, c.rec, 100000) == 0, "reclamation still blocked by a dead participant");
	CHECK(arena_obj_size(victim) == 0, "retired node not freed after its blocker died");
	ebr_get_stats(&sp->ebr, &es);
	CHECK(es.expired > es0.expired, "dead participant not expired");
	ds_user_detach(&c);
	close(ready[0]);
	close(ready[1]);
	close(hold[0]);
	close(hold[1]);
}

/* ---- a drain frees runs of one page with one count each ---- */

#define DRAIN_OBJS 24

static void test_drain_runs(void)
{
	struct arena_heap_stats st0, st;
	struct ds_ctx c;
	void *obj[DRAIN_OBJS], *large;
	/* page after page in runs of three, then two pages interleaved, then
	 * one object at a time from pages far apart */
	static const int order[DRAIN_OBJS] = {0, 1, 2, 3, 4, 5, 6, 9, 7, 10, 8, 11,
					      12, 23, 15, 20, 13, 18, 16, 21, 14, 19, 17, 22};
	int i;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	arena_heap_get_stats(&sp->heap, &st0);
	/* three 1000-byte objects fill a page */
	for (i = 0; i < DRAIN_OBJS; i++)
		REQUIRE((obj[i] = arena_heap_alloc(&sp->heap, 1000, 0)) != NULL, "alloc %d", i);
	REQUIRE((large = arena_heap_alloc(&sp->heap, 3 * ARENA_PAGE_SIZE, 0)) != NULL, "alloc large");
	REQUIRE(ds_enter(&c) == DS_OK, "enter");
	for (i = 0; i < DRAIN_OBJS; i++) {
		ds_retire(&c, obj[order[i]]);
		if (i == DRAIN_OBJS / 2)
			ds_retire(&c, large);
	}
	ds_exit(&c);
	CHECK(ebr_synchronize(&sp->ebr, c.rec, 100000) == 0, "synchronize");
	arena_heap_get_stats(&sp->heap, &st);
	CHECK(st.frees - st0.frees == DRAIN_OBJS + 1, "%llu frees of %d retired", (unsigned long long)(st.frees - st0.frees),
	      DRAIN_OBJS + 1);
	CHECK(st.bad_frees == st0.bad_frees, "%llu bad frees", (unsigned long long)(st.bad_frees - st0.bad_frees));
	CHECK(st.bytes_in_use == st0.bytes_in_use, "bytes in use %llu, %llu before",
	      (unsigned long long)st.bytes_in_use, (unsigned long long)st0.bytes_in_use);
	/* every page but the slot's current one is free again */
	CHECK(st.pages_in_use <= st0.pages_in_use + 1, "pages in use %llu, %llu before",
	      (unsigned long long)st.pages_in_use, (unsigned long long)st0.pages_in_use);
	for (i = 0; i < DRAIN_OBJS; i++)
		CHECK(arena_obj_size(obj[i]) == 0, "object %d still live", i);
	ds_user_detach(&c);
}

/* ---- a drain still refuses what is not live ----
 *
 * A drain marks the objects of the list it took without a compare-and-swap
 * (it holds them alone), but it still checks each one: an object freed
 * before it was retired is refused by the drain, and one freed again after
 * its drain is refused by arena_free. Small objects go through this
 * thread's cache (the drain puts them there), large ones back to their
 * page. A second free that got through would hand one object out twice. */

#define REFUSE_SMALL 24
#define REFUSE_ALLOCS 80

static void test_drain_refuses(void)
{
	struct arena_heap_stats st0, st;
	struct ds_ctx c;
	void *early, *late, *keep, *small, *got[REFUSE_ALLOCS];
	int i, j, dup = 0;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	arena_heap_get_stats(&sp->heap, &st0);
	/* 1000 bytes: past the cache's sizes; keep holds their page */
	REQUIRE((early = arena_heap_alloc(&sp->heap, 1000, 0)) != NULL, "alloc");
	REQUIRE((late = arena_heap_alloc(&sp->heap, 1000, 0)) != NULL, "alloc");
	REQUIRE((keep = arena_heap_alloc(&sp->heap, 1000, 0)) != NULL, "alloc");
	REQUIRE((small = arena_heap_alloc(&sp->heap, REFUSE_SMALL, 0)) != NULL, "alloc");
	CHECK(arena_free(early) == 0, "free");
	REQUIRE(ds_enter(&c) == DS_OK, "enter");
	ds_retire(&c, early); /* already free: the drain must refuse it */
	ds_retire(&c, late);
	ds_retire(&c, small);
	ds_exit(&c);
	CHECK(ebr_synchronize(&sp->ebr, c.rec, 100000) == 0, "synchronize");
	arena_heap_get_stats(&sp->heap, &st);
	CHECK(st.bad_frees - st0.bad_frees == 1, "%llu bad frees in the drain, expected 1",
	      (unsigned long long)(st.bad_frees - st0.bad_frees));
	CHECK(st.frees - st0.frees == 3, "%llu frees, expected 3", (unsigned long long)(st.frees - st0.frees));
	CHECK(arena_free(late) == -1, "a large object freed again after its drain was accepted");
	CHECK(arena_free(small) == -1, "a small object freed again after its drain was accepted");
	arena_heap_get_stats(&sp->heap, &st);
	CHECK(st.bad_frees - st0.bad_frees == 3, "%llu bad frees, expected 3",
	      (unsigned long long)(st.bad_frees - st0.bad_frees));
	CHECK(st.frees - st0.frees == 3, "%llu frees, expected 3", (unsigned long long)(st.frees - st0.frees));
	CHECK(st.bytes_in_use - st0.bytes_in_use == 1000, "bytes in use %llu more than before, expected 1000",
	      (unsigned long long)(st.bytes_in_use - st0.bytes_in_use));
	/* the same size again and again: every object handed out once */
	for (i = 0; i < REFUSE_ALLOCS; i++) {
		REQUIRE((got[i] = arena_heap_alloc(&sp->heap, REFUSE_SMALL, 0)) != NULL, "alloc %d", i);
		for (j = 0; j < i; j++)
			dup += got[j] == got[i];
	}
	CHECK(!dup, "%d objects handed out twice", dup);
	for (i = 0; i < REFUSE_ALLOCS; i++)
		CHECK(arena_free(got[i]) == 0, "free %d", i);
	CHECK(arena_free(keep) == 0, "free");
	ds_user_detach(&c);
}

int main(void)
{
	struct ds_ctx c;
	struct ds_config cfg = {.capacity = 64};
	int err;

	t_map_arena();
	sp = t_space(16, 20000, ARENA_HEAP_POISON);
	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	hash = ds_create(sp, &c, DS_TYPE_hash, &cfg, "h", &err);
	REQUIRE(hash, "create hash: %d", err);
	ds_user_detach(&c);
	/* the fork first, while the process has one thread */
	test_dead_participant();
	test_hold_across_delete();
	test_readers_writers();
	test_drain_runs();
	test_drain_refuses();
	return t_done("test_epoch");
}
