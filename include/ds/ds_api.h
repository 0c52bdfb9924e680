/* SPDX-License-Identifier: MIT */
/*
 * The contract every data structure in the arena follows, for BPF programs
 * and userspace alike.
 *
 * A structure NAME is one header, include/ds/ds_NAME.h, that defines
 *
 *   struct ds_NAME                  the instance; its first member is
 *                                   struct ds_head head
 *   DS_META_NAME                    a struct ds_meta initializer
 *   int ds_NAME_init(c, d, cfg)     lay out a zeroed instance
 *   int ds_NAME_insert(c, d, key, val)
 *   int ds_NAME_delete(c, d, key, &val)
 *   int ds_NAME_pop(c, d, &key, &val)
 *   int ds_NAME_search(c, d, key, &val)
 *   int ds_NAME_verify(c, d, &ds_verify)
 *   int ds_NAME_iterate(c, d, lo, hi, out, cap, &n)
 *
 * each returning an enum ds_result (DS_INVALID for an operation its semantics
 * do not have), and one line in include/ds/registry.h. From that line come
 * the kernel program that runs batches of it (bpf/ds_ops.bpf.c), the
 * dispatch the C extension and the stress runner use (ds_apply), and the
 * tests' coverage. See include/ds/README.md for the worked example.
 *
 * Every operation except init must run inside an epoch critical section of
 * the caller's context (ds_enter/ds_exit, or a batch, which brackets groups
 * of operations), because lock-free structures read nodes that a concurrent
 * delete may retire. verify and iterate walk the structure and are exact
 * only when it is quiescent (no concurrent writers); under concurrency they
 * are a best-effort snapshot and verify may report DS_BUSY.
 */
#ifndef DS_API_H
#define DS_API_H

#include "arena/arena.h"
#include "arena/atomics.h"
#include "arena/shim.h"
#include "arena/alloc.h"
#include "arena/epoch.h"

#define DS_MAGIC 0x53444e41U /* "ANDS" */

enum ds_result {
	DS_OK = 0,
	DS_NOT_FOUND = 1, /* no such key; an empty queue or stack */
	DS_EXISTS = 2,    /* insert of a key that is present */
	DS_NOMEM = 3,     /* the allocator had nothing (a non-sleepable context's pool ran dry) */
	DS_INVALID = 4,   /* an operation the structure does not have, a bad argument */
	DS_CORRUPT = 5,   /* verify found a broken invariant; a header failed its magic */
	DS_BUSY = 6,      /* contention or loop budget: retry; a producer/consumer role is taken */
	DS_FULL = 7,      /* a bounded structure is at capacity */
	DS__RESULTS
};

enum ds_op {
	DS_OP_INIT = 0,
	DS_OP_INSERT = 1, /* push / enqueue for queues and stacks */
	DS_OP_DELETE = 2,
	DS_OP_POP = 3, /* dequeue; the smallest key for ordered structures */
	DS_OP_SEARCH = 4,
	DS_OP_VERIFY = 5,
	DS_OP_ITERATE = 6,
	DS_OP_STATS = 7,
	DS_OP__COUNT
};

#define DS_OP_BIT(op) (1U << (op))

enum ds_side {
	DS_SIDE_KERNEL = 0,
	DS_SIDE_USER = 1,
	DS__SIDES
};

/* Who may call which operation at the same time. */
enum ds_model {
	DS_MODEL_ANY = 0,  /* any number of callers, any operation */
	DS_MODEL_MPMC = 1, /* any producers, any consumers */
	DS_MODEL_MPSC = 2, /* any producers, one consumer at a time (enforced: DS_BUSY) */
	DS_MODEL_SPSC = 3, /* one producer and one consumer at a time (enforced: DS_BUSY) */
};

/* struct ds_meta.flags */
#define DS_F_LOCK_FREE 0x01 /* every operation lock-free */
#define DS_F_BOUNDED 0x02   /* fixed capacity, no allocation per operation */
#define DS_F_KEYED 0x04     /* a set of unique keys with values */
#define DS_F_ORDERED 0x08   /* keyed and ordered: iterate returns a key range in order */
#define DS_F_FIFO 0x10
#define DS_F_LIFO 0x20
#define DS_F_RECLAIM 0x40      /* frees nodes through epoch reclamation (ds_retire); a structure
				* that retires must set it: tests/c/test_reclaim.c holds its
				* nodes across removals, and checks the flag both ways */
#define DS_F_READS_LOCKFREE 0x80 /* search never writes nor waits */

struct ds_meta {
	ap_u32 id;
	ap_u32 flags;
	ap_u32 model;
	ap_u32 ops; /* DS_OP_BIT of each operation it has */
	ap_u32 node_size;
	ap_u32 head_size;
	const char *name;
	const char *description;
	const char *progress; /* progress guarantee, in words */
};

/* Instance configuration, given to init. */
struct ds_config {
	ap_u64 capacity; /* bounded structures: slots (rounded up to a power of two);
			  * hash: buckets (power of two) */
	ap_u32 flags;
	ap_u32 spare;
};

struct ds_op_stats {
	ap_u64 count;
	ap_u64 failures; /* any result but DS_OK (and, for search, DS_NOT_FOUND is a failure too) */
	ap_u64 ns;       /* time spent, summed over batches */
};

struct ds_stats {
	struct ds_op_stats op[DS_OP__COUNT];
};

/* The common head of every instance. */
struct ds_head {
	ap_u32 magic;
	ap_u32 type; /* registry id */
	ap_u64 self; /* the instance's own address: a cheap check that a pointer is one */
	ap_u64 heap; /* struct arena_heap its nodes come from */
	ap_u64 ebr;  /* struct ebr_domain it retires through */
	struct ds_config cfg;
	struct ds_stats stats[DS__SIDES];
};

/* What verify reports besides its result. */
struct ds_verify {
	ap_u64 count;  /* elements */
	ap_u64 keysum; /* sum of keys (wrapping), to compare with a model cheaply */
	ap_u64 valsum;
	ap_u64 where; /* on DS_CORRUPT: which check failed (structure-specific) */
};

/* iterate writes (key, value) pairs. */
struct ds_kv {
	ap_u64 key;
	ap_u64 val;
};

/*
 * A thread's guess of a shared index of one instance: where its next
 * operation there looks first. Only a guess: the operation's
 * compare-and-swap confirms it, and it reads the index itself when the
 * guess does not hold (ds_mpmc.h). at: the instance's address, bit 0 set
 * while the guess may be used; 0: none.
 */
struct ds_hint {
	ap_u64 at;
	ap_u64 pos;
};

/*
 * The caller's context for one thread of operations: where memory comes
 * from, where nodes are retired, which epoch record is its own. On the BPF
 * stack for a kernel batch; per thread in userspace.
 */
struct ds_ctx {
	struct arena_heap __arena *heap;
	struct ebr_domain __arena *ebr;
	struct ebr_record __arena *rec;
	ap_u64 rng;
	ap_u32 flags; /* ARENA_NOSLEEP in non-sleepable BPF programs */
	ap_u32 side;  /* enum ds_side */
	ap_u64 held;  /* the producer/consumer roles it holds (role.h); 0: none */
#if !ARENA_IS_BPF
	/* this thread as a role owner (arena_self_owner), 0: ask each claim. A kernel
	 * batch names itself from its task (ds_role_self), and its context lives on a
	 * BPF stack whose 512 bytes the deepest structure's calls already need. */
	ap_u64 owner;
	/* ds_mpmc: the tickets after this thread's last push and last pop. A
	 * kernel program's context lasts one run, too short for a guess to pay. */
	struct ds_hint push_hint, pop_hint;
#endif
};

#include "role.h"

static __always_inline int ds_enter(struct ds_ctx *c)
{
	return ebr_enter(c->ebr, c->rec) ? DS_BUSY : DS_OK;
}

static __always_inline void ds_exit(struct ds_ctx *c)
{
	ebr_exit(c->ebr, c->rec);
}

static __always_inline void __arena *ds_alloc(struct ds_ctx *c, ap_u64 size)
{
	return arena_heap_alloc(c->heap, size, c->flags);
}

static __always_inline void ds_free(struct ds_ctx *c, void __arena *p)
{
	(void)c;
	arena_free(p);
}

static __always_inline void ds_retire(struct ds_ctx *c, void __arena *p)
{
	ebr_retire(c->ebr, c->rec, p);
}

static __always_inline ap_u32 ds_random32(struct ds_ctx *c)
{
	return (ap_u32)(arena_xorshift64(&c->rng) >> 16);
}

/* Fill the common head; called by each ds_NAME_init. */
static __always_inline void ds_head_init(struct ds_ctx *c, struct ds_head __arena *h, ap_u32 type,
					 const struct ds_config *cfg)
{
	ap_u32 s, o;

	/* volatile stores: adjacent constant stores to arena memory become a
	 * memset, which the BPF backend cannot lower for address space 1 */
	arena_store_once(&h->type, type);
	arena_store_once(&h->self, ARENA_ADDR(h));
	arena_store_once(&h->heap, ARENA_ADDR(c->heap));
	arena_store_once(&h->ebr, ARENA_ADDR(c->ebr));
	arena_store_once(&h->cfg.capacity, cfg ? cfg->capacity : 0);
	arena_store_once(&h->cfg.flags, cfg ? cfg->flags : 0);
	arena_store_once(&h->cfg.spare, 0);
	/* volatile stores: clang turns a zeroing loop over arena memory into a
	 * memset, which the BPF backend cannot lower for address space 1 */
	for (s = 0; s < DS__SIDES; s++)
		for (o = 0; o < DS_OP__COUNT; o++) {
			arena_store_once(&h->stats[s].op[o].count, 0);
			arena_store_once(&h->stats[s].op[o].failures, 0);
			arena_store_once(&h->stats[s].op[o].ns, 0);
		}
}

/* Publish the head last: a reader that sees the magic sees a laid-out instance. */
static __always_inline void ds_head_publish(struct ds_head __arena *h)
{
	arena_atomic_store(&h->magic, DS_MAGIC, ARENA_SEQ_CST);
}

static __always_inline int ds_head_check(struct ds_head __arena *h, ap_u32 type)
{
	if (!h || h->magic != DS_MAGIC || h->self != ARENA_ADDR(h) || h->type != type)
		return DS_CORRUPT;
	return DS_OK;
}

/* Add one batch's numbers to the instance's per-side statistics. */
static __always_inline void ds_stats_add(struct ds_head __arena *h, ap_u32 side, ap_u32 op, ap_u64 count,
					 ap_u64 failures, ap_u64 ns)
{
	struct ds_op_stats __arena *st = &h->stats[side & 1].op[op & 7];

	/* no early return on zero counts: see ds_share() in batch.h */
	arena_atomic_add(&st->count, count, ARENA_RELAXED);
	arena_atomic_add(&st->failures, failures, ARENA_RELAXED);
	arena_atomic_add(&st->ns, ns, ARENA_RELAXED);
}

/* The "stats" operation: a snapshot of an instance's per-side statistics
 * (count, failures, time per operation kind). Any side, any time. */
static __always_inline int ds_stats_read(struct ds_head __arena *h, ap_u32 side, struct ds_stats *out)
{
	ap_u32 o;

	if (h->magic != DS_MAGIC || side >= DS__SIDES)
		return DS_INVALID;
	for (o = 0; o < DS_OP__COUNT; o++) {
		out->op[o].count = arena_atomic_load(&h->stats[side].op[o].count, ARENA_RELAXED);
		out->op[o].failures = arena_atomic_load(&h->stats[side].op[o].failures, ARENA_RELAXED);
		out->op[o].ns = arena_atomic_load(&h->stats[side].op[o].ns, ARENA_RELAXED);
	}
	return DS_OK;
}

/* Round up to a power of two (at least 2). */
static __always_inline ap_u64 ds_pow2(ap_u64 n)
{
	ap_u64 p = 2;
	int i;

	for (i = 0; i < 40 && p < n; i++)
		p <<= 1;
	return p;
}

/* A link word's mark bit (nodes are 16-byte aligned: bit 0 is free). */
#define DS_MARK 1ULL
#define DS_UNMARK(w) ((w) & ~DS_MARK)
#define DS_MARKED(w) ((w) & DS_MARK)

/* Is addr plausibly a live node of this arena (for verify)? */
static __always_inline int ds_node_ok(ap_u64 addr)
{
	if (!addr || (addr & (ARENA_OBJ_ALIGN - 1)) || addr < ARENA_BASE + ARENA_PAGE_SIZE ||
	    addr >= ARENA_BASE + (1ULL << 32))
		return 0;
	return arena_obj_size(ARENA_PTR(void, addr)) != 0;
}

/* An upper bound on the nodes a walk may meet: the heap's live objects. A
 * walk longer than that has met a cycle. */
static __always_inline ap_u64 ds_walk_limit(struct ds_ctx *c)
{
	struct arena_heap_stats st;

	arena_heap_get_stats(c->heap, &st);
	return st.allocs - st.frees + 2;
}

/*
 * The deliberately broken variants (DS_TEST_BROKEN_*: a queue that can return an
 * element twice, a hash whose search can miss a present key) exist only for the
 * linearizability checker's tests (tests/c/lin_driver.c). Nothing else may build them.
 */
#if defined(DS_TEST_BROKEN_QUEUE_DUP) || defined(DS_TEST_BROKEN_HASH_MISS)
#if ARENA_IS_BPF || defined(Py_PYTHON_H)
#error "DS_TEST_BROKEN_* variants are for the userspace C tests only"
#endif
#include <sched.h>
/* widens a race window in a broken variant, so that a short test run meets it */
static inline void ds_test_pause(void)
{
	sched_yield();
}
#endif

/*
 * Fault points: a build with DS_TEST_STEPS (userspace C tests only) calls
 * ds_test_step(N) between the stores of an operation that a killed process
 * could leave half done, so that a test can stop a process at exactly that
 * point and kill it there. Elsewhere the calls are nothing.
 */
#ifdef DS_TEST_STEPS
#if ARENA_IS_BPF || defined(Py_PYTHON_H)
#error "DS_TEST_STEPS is for the userspace C tests only"
#endif
void ds_test_step(int where);
#else
#define ds_test_step(where) do { } while (0)
#endif

#endif /* DS_API_H */
