/* SPDX-License-Identifier: MIT */
/*
 * Epoch-based reclamation over the arena, for kernel CPUs and user threads
 * and processes at once (docs/design.md, rule 4).
 *
 * A lock-free structure unlinks a node and retires it; the node is freed
 * only once every participant that might still hold it has passed a
 * quiescent point. Participants are records in the domain:
 *   - one per kernel CPU (cpus[cpu]); tasks that interleave on one CPU (a
 *     sleepable program that blocks, then another) share it, so entering
 *     and leaving count a nesting level with atomics;
 *   - one per user thread (users[i]), claimed with ebr_register and owned by
 *     (tgid, tid).
 *
 * record->state = epoch << 8 | nesting. Nesting 0 is quiescent.
 *   enter:  compare-and-swap 0-nesting -> (global epoch << 8 | 1), else +1.
 *           A full barrier (every BPF atomic with fetch, a seq_cst CAS in
 *           userspace): the record is visible before the first read of the
 *           structure.
 *   exit:   decrement (release): every read of the structure is done
 *           before the record says quiescent. An atomic one on a CPU
 *           record; a user record has one writer, so a release store.
 *   retire: tag = global epoch, read after the unlink (which was a full
 *           barrier); push the node onto record->limbo[tag % 3], a list
 *           linked through the allocator's object header (no field in the
 *           node is needed).
 *   advance (any participant, inside its critical section): if every
 *           active record shows the global epoch G, CAS the epoch to G + 1
 *           and free every record's limbo[(G + 2) % 3], i.e. the nodes
 *           retired in epoch G - 1: each participant that could have seen
 *           them has left a critical section since.
 * Why three lists suffice and draining inside the critical section matters:
 * a retirer is active with epoch G - 1 or G while it pushes with tag G, so
 * the epoch cannot reach G + 2 (which drains tag G) before it has left; and
 * the drainer, active with epoch G, keeps the epoch from passing G + 1
 * until its drain is over, so nobody pushes tag G + 2 into the list it
 * drains.
 *
 * Dead participants. A kernel CPU record cannot die (programs always
 * finish). A user record whose owner thread has exited while inside a
 * critical section would block the epoch forever, so the advance scan
 * checks a record that holds the epoch back (at most once per millisecond
 * per domain) and, when its owner is known to be gone, resets it and frees
 * it for reuse; its limbo lists are drained by later advances like anyone
 * else's. A thread that exists, even one stopped or descheduled for long,
 * is never expired. Both sides can check:
 *   - a user advance asks tgkill(tgid, tid, 0): ESRCH means gone. Only for
 *     records registered from its own pid namespace.
 *   - a kernel program that defines EBR_KERNEL_EXPIRY (the sleepable
 *     ds_ops batches) calls ebr_kernel_expire before its operations, so
 *     that their advances are not held back: it looks the thread up with
 *     bpf_task_from_pid, which names threads in the initial pid namespace,
 *     so only records registered from that namespace are checked. The
 *     owner is gone when no task has its tid, when the task found belongs
 *     to another process or started at another time than the owner's
 *     start (the tid was reused; start is the thread's start time in clock
 *     ticks since boot, which the owner reads from /proc when it
 *     registers: the kernel derives the same number from start_boottime),
 *     or when the task is exiting (PF_EXITING: it never runs user code
 *     again, and a zombie stays exiting until it is reaped).
 *   Kernel programs of non-sleepable objects (tracepoints) do not check;
 *   they rely on the next batch or user advance to expire.
 * heartbeat counts a user record's entries: a stall report can tell a stuck
 * thread from a busy one.
 *
 * What bounds the memory waiting in limbo: the epoch moves on once every
 * participant inside a critical section has entered it in the current
 * epoch. Kernel programs are never descheduled mid-batch (a sleepable one
 * only when it blocks, briefly), so on their own the epoch advances every
 * few dozen retirements (tens of objects waiting). A user thread that is
 * descheduled inside its critical section holds the epoch until it runs
 * again: with more runnable threads than CPUs, that is a scheduler slice,
 * and what is retired meanwhile waits (measured here: 4 threads on 2 CPUs
 * retiring 20M objects/s kept about 200k objects waiting; 2 threads on 2
 * CPUs, about 200). Keep user critical sections short and user threads no
 * more than CPUs on hot paths; the wait is bounded by the slice, not by
 * the run.
 *
 * Memory ordering (see atomics.h): the protocol needs enter's store to be
 * ordered before the structure reads (full barrier), the advance scan to
 * read records after its own epoch read, and exit to be a release. On
 * x86-64 and arm64 the BPF atomics used are full barriers; userspace uses
 * seq_cst read-modify-writes and no standalone fences (which ThreadSanitizer
 * does not model).
 */
#ifndef ARENA_EPOCH_H
#define ARENA_EPOCH_H

#include "arena.h"
#include "atomics.h"
#include "shim.h"
#include "alloc.h"

#if !ARENA_IS_BPF
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#endif


#define EBR_MAGIC 0x3172626561726e61ULL /* "anaebr1" */
#define EBR_CPUS 32
#define EBR_USERS 96
#define EBR_NEST_MASK 0xffULL
#define EBR_LISTS 3
/* a record tries to advance the epoch every this many retires */
#define EBR_ADVANCE_EVERY 32

#define EBR_STATE_EPOCH(s) ((s) >> 8)
#define EBR_STATE_NEST(s) ((s) & EBR_NEST_MASK)

enum ebr_result {
	EBR_OK = 0,
	EBR_BUSY = -1, /* nesting overflow or loop budget exhausted */
};

struct ebr_record {
	ap_u64 state;     /* epoch << 8 | nesting */
	ap_u64 owner;     /* user: tgid << 32 | tid, 0 when free; kernel: cpu + 1 */
	ap_u64 ns;        /* user: pid namespace (inode) of the owner */
	ap_u64 heartbeat; /* user: critical sections entered */
	ap_u64 limbo[EBR_LISTS];
	ap_u64 retired; /* objects retired through this record */
	ap_u64 start;   /* user: the owner's start time, clock ticks since boot (0: unknown) */
	ap_u64 freed;   /* user: objects freed by the drains of this record's owner */
} __arena_cacheline_aligned;

struct ebr_domain {
	ap_u64 epoch __arena_cacheline_aligned;
	ap_u64 magic __arena_cacheline_aligned;
	ap_u32 nr_cpus;   /* kernel records scanned */
	ap_u32 users_hwm; /* user records ever claimed (scan bound) */
	ap_u64 freed;     /* objects freed by kernel drains (user drains count in their record) */
	ap_u64 expired;
	ap_u64 drain_lost; /* BPF: a drain ran out of loop budget (objects leaked) */
	ap_u64 expiry_check_ns; /* userspace: last time a stale record's owner was looked up */
	struct ebr_record cpus[EBR_CPUS];
	struct ebr_record users[EBR_USERS];
};

struct ebr_stats {
	ap_u64 epoch;
	ap_u64 advances;
	ap_u64 freed;
	ap_u64 expired;
	ap_u64 retired;
	ap_u64 pending; /* retired - freed */
	ap_u64 active;  /* records inside a critical section now */
	ap_u64 users;   /* user records claimed */
	ap_u64 drain_lost;
};

static __always_inline struct ebr_record __arena *ebr_cpu_record(struct ebr_domain __arena *d)
{
	return &d->cpus[arena_cpu() & (EBR_CPUS - 1)];
}

/* Enter a critical section: nodes read from here on stay allocated until
 * ebr_exit. Nests. Returns EBR_OK or EBR_BUSY (do not exit then). */
static __always_inline int ebr_enter(struct ebr_domain __arena *d, struct ebr_record __arena *r)
{
	ap_u64 s = arena_atomic_load(&r->state, ARENA_RELAXED);

	while (can_loop) {
		ap_u64 ns, seen;

		if (EBR_STATE_NEST(s) == EBR_NEST_MASK)
			return EBR_BUSY;
		if (EBR_STATE_NEST(s))
			ns = s + 1;
		else
			ns = (arena_atomic_load(&d->epoch, ARENA_SEQ_CST) << 8) | 1;
		seen = arena_atomic_cmpxchg(&r->state, s, ns, ARENA_SEQ_CST);
		if (seen == s) {
#if !ARENA_IS_BPF
			/* user records have one writer: no atomic RMW needed */
			arena_atomic_store(&r->heartbeat, arena_atomic_load(&r->heartbeat, ARENA_RELAXED) + 1,
					   ARENA_RELAXED);
#endif
			return EBR_OK;
		}
		s = seen;
	}
	return EBR_BUSY;
}

static __always_inline void ebr_exit(struct ebr_domain __arena *d, struct ebr_record __arena *r)
{
	(void)d;
#if ARENA_IS_BPF
	/* a CPU record: tasks interleaving on the CPU nest on it */
	arena_atomic_sub(&r->state, 1, ARENA_RELEASE);
#else
	/* a user record has one writer, its owner (an expiry resets only the
	 * record of a thread that is gone): a release store is the decrement */
	arena_atomic_store(&r->state, arena_atomic_load(&r->state, ARENA_RELAXED) - 1, ARENA_RELEASE);
#endif
}

static __always_inline int ebr_is_user_record(struct ebr_domain __arena *d, struct ebr_record __arena *r)
{
	return ARENA_ADDR(r) >= ARENA_ADDR(&d->users[0]);
}

/* 1 at most once per millisecond per domain (whoever gets there first). */
static __always_inline int ebr_expiry_due(struct ebr_domain __arena *d)
{
	ap_u64 now = arena_now_ns(), last = arena_atomic_load(&d->expiry_check_ns, ARENA_RELAXED);

	if (now - last < 1000000)
		return 0;
	return arena_atomic_cmpxchg(&d->expiry_check_ns, last, now, ARENA_RELAXED) == last;
}

/* Reset a dead owner's record seen in state s; 1 if this call did it. */
static __always_inline int ebr_expire(struct ebr_domain __arena *d, struct ebr_record __arena *r, ap_u64 s)
{
	ap_u64 owner = arena_atomic_load(&r->owner, ARENA_ACQUIRE);

	if (arena_atomic_cmpxchg(&r->state, s, s & ~EBR_NEST_MASK, ARENA_SEQ_CST) != s)
		return 0;
	arena_atomic_inc(&d->expired, ARENA_RELAXED);
	arena_atomic_cmpxchg(&r->owner, owner, 0, ARENA_RELEASE);
	return 1;
}

#if ARENA_IS_BPF && defined(EBR_KERNEL_EXPIRY)
/* the initial pid namespace's inode number (PROC_PID_INIT_INO, fixed ABI) */
#define EBR_INIT_PID_NS 0xEFFFFFFCULL
/* /proc reports start times in USER_HZ ticks: 100 per second */
#define EBR_NS_PER_TICK 10000000ULL
#define EBR_PF_EXITING 0x00000004U

/* 1 when the user thread owner (tgid << 32 | tid, registered from pid
 * namespace ns, started at tick start) is known to be gone. */
static __always_inline int ebr_kernel_owner_gone(ap_u64 owner, ap_u64 ns, ap_u64 start)
{
	struct task_struct *t;
	int gone;

	if (!owner || ns != EBR_INIT_PID_NS)
		return 0;
	t = bpf_task_from_pid((s32)(owner & 0x7fffffffULL));
	if (!t)
		return 1;
	gone = (ap_u64)(ap_u32)t->tgid != (owner >> 32) ||
	       (start && t->start_boottime / EBR_NS_PER_TICK != start) || (t->flags & EBR_PF_EXITING);
	bpf_task_release(t);
	return gone;
}

/*
 * Expire every user record inside a critical section whose owner is gone
 * (at most once per millisecond per domain). Kernel batches call it before
 * their operations, one call frame from the program: inside the advance,
 * which a structure's operation calls, the task lookup would take the
 * deepest call chain past the 512-byte BPF stack. Returns the records
 * expired.
 */
__attribute__((noinline)) int ebr_kernel_expire(ap_u64 dom)
{
	struct ebr_domain __arena *d = ARENA_PTR(struct ebr_domain, dom);
	ap_u32 i, n;
	int done = 0;

	if (!dom || d->magic != EBR_MAGIC || !ebr_expiry_due(d))
		return 0;
	n = arena_atomic_load(&d->users_hwm, ARENA_ACQUIRE);
	for (i = arena_opaque(0); i < n && can_loop; i++) {
		struct ebr_record __arena *r = &d->users[i % EBR_USERS];
		ap_u64 s = arena_atomic_load(&r->state, ARENA_SEQ_CST);

		if (!EBR_STATE_NEST(s))
			continue;
		if (ebr_kernel_owner_gone(arena_atomic_load(&r->owner, ARENA_ACQUIRE),
					  arena_atomic_load(&r->ns, ARENA_RELAXED),
					  arena_atomic_load(&r->start, ARENA_RELAXED)))
			done += ebr_expire(d, r, s);
	}
	return done;
}
#endif

#if !ARENA_IS_BPF
static inline ap_u64 ebr_self_owner(void)
{
	return arena_self_owner();
}

/* 1 when the record's owner thread is known to be gone. */
static inline int ebr_owner_dead(struct ebr_record *r)
{
	return arena_owner_gone(arena_atomic_load(&r->owner, ARENA_ACQUIRE),
				arena_atomic_load(&r->ns, ARENA_RELAXED));
}

/*
 * The calling thread's start time in clock ticks since boot (field 22 of
 * /proc/thread-self/stat), as a kernel-side expiry check computes it; 0
 * when /proc cannot tell.
 */
static inline ap_u64 ebr_self_start(void)
{
	char buf[1024], *p;
	ap_u64 v = 0;
	ssize_t n;
	int fd = open("/proc/thread-self/stat", O_RDONLY | O_CLOEXEC), field;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	/* the command name (field 2) may hold spaces and parentheses: count
	 * from the last ')'; field 3 follows it */
	p = strrchr(buf, ')');
	if (!p)
		return 0;
	for (field = 2; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	while (*p >= '0' && *p <= '9')
		v = v * 10 + (ap_u64)(*p++ - '0');
	return v;
}
#endif

/* Free every object on one record's limbo list. */
static __always_inline ap_u64 ebr_drain_record(struct ebr_domain __arena *d, struct ebr_record __arena *r,
					       ap_u32 list)
{
	ap_u64 obj, freed = 0;

	if (!arena_atomic_load(&r->limbo[list], ARENA_RELAXED))
		return 0;
#if ARENA_IS_BPF
	obj = arena_atomic_exchange(&r->limbo[list], 0, ARENA_ACQ_REL);
	while (obj && can_loop) {
		ap_u64 next = arena_atomic_load(&arena_obj_of(ARENA_PTR(void, obj))->link, ARENA_RELAXED);

		arena_free(ARENA_PTR(void, obj));
		freed++;
		obj = next;
	}
	if (obj)
		arena_atomic_inc(&d->drain_lost, ARENA_RELAXED);
#else
	{
		/* objects retired one after another mostly share a page: a run
		 * of one page gives its count back with one compare-and-swap
		 * (arena_page_put) instead of one per object */
		struct arena_page *run = NULL;
		struct arena_heap *rh = NULL, *ch = NULL;
		ap_u64 rn = 0, rbytes = 0, cn = 0, cbytes = 0;

		(void)d;
		/* Nobody pushes onto this list while it is drained (the header
		 * comment: its retirers tag G + 2 only once the epoch is there,
		 * which this drainer holds back), and drains never overlap, so
		 * a load and a store take it. The acquire pairs with the
		 * retirer's release push; its section's end, which the advance
		 * read, orders the push before this drain anyway. */
		obj = arena_atomic_load(&r->limbo[list], ARENA_ACQUIRE);
		arena_atomic_store(&r->limbo[list], 0, ARENA_RELAXED);
		while (obj) {
			ap_u64 next = arena_atomic_load(&arena_obj_of(ARENA_PTR(void, obj))->link, ARENA_RELAXED);
			struct arena_page *pg;
			struct arena_heap *h;
			ap_u64 size, s;

			/* this drain holds every object of the list alone
			 * (arena_free_mark) */
			if (!arena_free_mark(ARENA_PTR(void, obj), &pg, &h, &size, &s, 1)) {
				if (s & ARENA_PS_LARGE) {
					arena_heap_free_large(h, pg);
					arena_free_count(h, 1, size);
				} else if (arena_cache_put(h, ARENA_ADDR(arena_obj_of(ARENA_PTR(void, obj))), size)) {
					/* kept for this thread's next allocations (alloc.h);
					 * all of this thread's own heap */
					ch = h;
					cn++;
					cbytes += size;
				} else {
					if (pg != run && run) {
						if (!arena_page_put(rh, run, arena_atomic_load(&run->state, ARENA_ACQUIRE), rn))
							arena_free_count(rh, rn, rbytes);
						rn = rbytes = 0;
					}
					run = pg;
					rh = h;
					rn++;
					rbytes += size;
				}
			}
			freed++;
			obj = next;
		}
		if (run && !arena_page_put(rh, run, arena_atomic_load(&run->state, ARENA_ACQUIRE), rn))
			arena_free_count(rh, rn, rbytes);
		if (ch)
			arena_free_count(ch, cn, cbytes);
	}
#endif
	return freed;
}

/* Free every object on one limbo list of every record. (Record loops run to
 * bounds read from the arena and mask the index: a loop counter compared
 * with a constant would make the verifier walk every iteration.) */
static __always_inline void ebr_drain(struct ebr_domain __arena *d, struct ebr_record __arena *self, ap_u32 list)
{
	ap_u32 i, n = d->nr_cpus;
	ap_u64 freed = 0;

	for (i = 0; i < n && can_loop; i++)
		freed += ebr_drain_record(d, &d->cpus[i & (EBR_CPUS - 1)], list);
	n = arena_atomic_load(&d->users_hwm, ARENA_RELAXED);
	for (i = 0; i < n && can_loop; i++)
		freed += ebr_drain_record(d, &d->users[i % EBR_USERS], list);
#if ARENA_IS_BPF
	/* unconditional: in BPF a branch on a count makes it precise and the
	 * verifier would walk the loops above once per value */
	arena_atomic_add(&d->freed, freed, ARENA_RELAXED);
	(void)self;
#else
	/* the drainer's own record: one writer, no atomic read-modify-write */
	arena_atomic_store(&self->freed, arena_atomic_load(&self->freed, ARENA_RELAXED) + freed, ARENA_RELAXED);
#endif
}

/*
 * Try to move the epoch on by one and free what became safe. Call it only
 * inside a critical section (see the header comment). Returns 1 if this call
 * advanced the epoch.
 */
static __always_inline int ebr_try_advance_body(struct ebr_domain __arena *d, struct ebr_record __arena *self)
{
	ap_u64 g = arena_atomic_load(&d->epoch, ARENA_SEQ_CST);
	ap_u32 i, ncpu = d->nr_cpus, nusr = arena_atomic_load(&d->users_hwm, ARENA_ACQUIRE);

	for (i = 0; i < ncpu && can_loop; i++) {
		ap_u64 s = arena_atomic_load(&d->cpus[i & (EBR_CPUS - 1)].state, ARENA_SEQ_CST);

		if (EBR_STATE_NEST(s) && EBR_STATE_EPOCH(s) != (g & (~0ULL >> 8)))
			return 0;
	}
	for (i = 0; i < nusr && can_loop; i++) {
		struct ebr_record __arena *r = &d->users[i % EBR_USERS];
		ap_u64 s = arena_atomic_load(&r->state, ARENA_SEQ_CST);

		if (EBR_STATE_NEST(s) && EBR_STATE_EPOCH(s) != (g & (~0ULL >> 8))) {
#if !ARENA_IS_BPF
			/* a live thread descheduled in its section looks the
			 * same: ask the kernel at most every millisecond */
			if (r != self && ebr_expiry_due(d) && ebr_owner_dead(r) && ebr_expire(d, r, s))
				continue;
#endif
			return 0;
		}
	}
	/* the epoch counts the advances too (it starts at 1) */
	if (arena_atomic_cmpxchg(&d->epoch, g, g + 1, ARENA_SEQ_CST) != g)
		return 0;
	ebr_drain(d, self, (ap_u32)((g + 2) % EBR_LISTS));
	return 1;
}

#if ARENA_IS_BPF
/* BPF reads no record of its own (ebr_drain counts into the domain), so the
 * subprog takes the domain alone: an argument the body never reads is passed
 * in whatever register state the caller had, and older verifiers refuse a
 * call whose argument is an arena pointer where a scalar is declared. */
ARENA_SUBPROG int ebr_try_advance_subprog(ap_u64 d)
{
	return ebr_try_advance_body(ARENA_PTR(struct ebr_domain, d), NULL);
}
#endif

static __always_inline int ebr_try_advance(struct ebr_domain __arena *d, struct ebr_record __arena *self)
{
#if ARENA_IS_BPF
	(void)self;
	return ebr_try_advance_subprog(ARENA_ADDR(d));
#else
	return ebr_try_advance_body(d, self);
#endif
}

/* Retire an object allocated with arena_alloc, after it was unlinked; call
 * inside the critical section in which it was unlinked. */
static __always_inline void ebr_retire(struct ebr_domain __arena *d, struct ebr_record __arena *r,
				       void __arena *obj)
{
	struct arena_obj __arena *o = arena_obj_of(obj);
	ap_u64 tag = arena_atomic_load(&d->epoch, ARENA_SEQ_CST);
	ap_u64 __arena *list = &r->limbo[tag % EBR_LISTS];
	ap_u64 head = arena_atomic_load(list, ARENA_RELAXED);

#if ARENA_IS_BPF
	/* a CPU record: tasks interleaving on the CPU may push at once */
	while (can_loop) {
		ap_u64 seen;

		arena_atomic_store(&o->link, head, ARENA_RELAXED);
		seen = arena_atomic_cmpxchg(list, head, ARENA_ADDR(obj), ARENA_RELEASE);
		if (seen == head)
			break;
		head = seen;
	}
#else
	/* A user record has one writer, its owner thread, and no drain can
	 * take this list meanwhile: a drain empties the list of tag G + 2
	 * while its drainer, active in epoch G, keeps the epoch from reaching
	 * G + 2, and this thread, inside its section, read tag <= G + 1 (the
	 * header comment). So a release store publishes the node, and no
	 * compare-and-swap is needed. */
	arena_atomic_store(&o->link, head, ARENA_RELAXED);
	arena_atomic_store(list, ARENA_ADDR(obj), ARENA_RELEASE);
#endif
#if ARENA_IS_BPF
	/* a CPU record: tasks interleaving on the CPU share it */
	if ((arena_atomic_add(&r->retired, 1, ARENA_RELAXED) & (EBR_ADVANCE_EVERY - 1)) ==
	    EBR_ADVANCE_EVERY - 1)
		ebr_try_advance(d, r);
#else
	{
		/* a user record has one writer: no atomic read-modify-write */
		ap_u64 n = arena_atomic_load(&r->retired, ARENA_RELAXED);

		arena_atomic_store(&r->retired, n + 1, ARENA_RELAXED);
		if ((n & (EBR_ADVANCE_EVERY - 1)) == EBR_ADVANCE_EVERY - 1)
			ebr_try_advance(d, r);
	}
#endif
}

/* Lay out a domain (userspace or sleepable BPF, before any participant). */
static __always_inline void ebr_init(struct ebr_domain __arena *d, ap_u32 nr_cpus)
{
	ap_u32 i, j;

	if (!nr_cpus || nr_cpus > EBR_CPUS)
		nr_cpus = EBR_CPUS;
	arena_store_once(&d->magic, 0);
	arena_store_once(&d->epoch, 1);
	arena_store_once(&d->nr_cpus, nr_cpus);
	arena_store_once(&d->users_hwm, 0);
	arena_store_once(&d->freed, 0);
	arena_store_once(&d->expired, 0);
	arena_store_once(&d->drain_lost, 0);
	arena_store_once(&d->expiry_check_ns, 0);
	for (i = 0; i < EBR_CPUS + EBR_USERS && can_loop; i++) {
		struct ebr_record __arena *r = i < EBR_CPUS ? &d->cpus[i] : &d->users[i - EBR_CPUS];

		/* volatile: no memset on arena memory in BPF */
		arena_store_once(&r->state, 0);
		arena_store_once(&r->owner, i < EBR_CPUS ? i + 1 : 0);
#if ARENA_IS_BPF
		arena_store_once(&r->ns, 0);
#else
		/* a user record's: the creator's (arena_owner_ns_before) */
		arena_store_once(&r->ns, i < EBR_CPUS ? 0 : arena_self_ns());
#endif
		arena_store_once(&r->heartbeat, 0);
		for (j = 0; j < EBR_LISTS; j++)
			arena_store_once(&r->limbo[j], 0);
		arena_store_once(&r->retired, 0);
		arena_store_once(&r->start, 0);
		arena_store_once(&r->freed, 0);
	}
	arena_atomic_store(&d->magic, EBR_MAGIC, ARENA_SEQ_CST);
}

static __always_inline void ebr_get_stats(struct ebr_domain __arena *d, struct ebr_stats *st)
{
	ap_u32 i;

	st->epoch = arena_atomic_load(&d->epoch, ARENA_RELAXED);
	st->advances = st->epoch - 1;
	st->freed = arena_atomic_load(&d->freed, ARENA_RELAXED);
	st->expired = arena_atomic_load(&d->expired, ARENA_RELAXED);
	st->drain_lost = arena_atomic_load(&d->drain_lost, ARENA_RELAXED);
	st->users = 0;
	st->retired = 0;
	st->active = 0;
	for (i = 0; i < EBR_CPUS + EBR_USERS && can_loop; i++) {
		struct ebr_record __arena *r = i < EBR_CPUS ? &d->cpus[i] : &d->users[i - EBR_CPUS];

		st->retired += arena_atomic_load(&r->retired, ARENA_RELAXED);
		st->freed += arena_atomic_load(&r->freed, ARENA_RELAXED);
		if (EBR_STATE_NEST(arena_atomic_load(&r->state, ARENA_RELAXED)))
			st->active++;
		if (i >= EBR_CPUS && arena_atomic_load(&r->owner, ARENA_RELAXED))
			st->users++;
	}
	st->pending = st->retired - st->freed;
}

#if !ARENA_IS_BPF
/* Claim a user record for the calling thread (reusing one whose owner is
 * gone). NULL when all EBR_USERS are taken by live threads. */
static inline struct ebr_record *ebr_register(struct ebr_domain *d)
{
	ap_u64 me = ebr_self_owner();
	ap_u32 i;

	for (i = 0; i < EBR_USERS; i++) {
		struct ebr_record *r = &d->users[i];
		ap_u64 o = arena_atomic_load(&r->owner, ARENA_ACQUIRE);
		ap_u32 hwm;

		if (o && !ebr_owner_dead(r))
			continue;
		if (!o)
			arena_owner_ns_before(&r->owner, &r->ns);
		if (arena_atomic_cmpxchg(&r->owner, o, me, ARENA_ACQ_REL) != o)
			continue;
		if (o)
			arena_atomic_inc(&d->expired, ARENA_RELAXED);
		arena_owner_ns_after(&r->ns);
		arena_atomic_store(&r->start, ebr_self_start(), ARENA_RELAXED);
		arena_atomic_store(&r->heartbeat, 0, ARENA_RELAXED);
		arena_atomic_store(&r->state, 0, ARENA_SEQ_CST);
		hwm = arena_atomic_load(&d->users_hwm, ARENA_RELAXED);
		while (hwm < i + 1) {
			ap_u32 seen = arena_atomic_cmpxchg(&d->users_hwm, hwm, i + 1, ARENA_ACQ_REL);

			if (seen == hwm)
				break;
			hwm = seen;
		}
		return r;
	}
	return NULL;
}

/* Give the record back (outside any critical section). Its retired objects
 * stay on its lists and are freed by later advances. */
static inline void ebr_unregister(struct ebr_domain *d, struct ebr_record *r)
{
	(void)d;
	arena_atomic_store(&r->state, 0, ARENA_SEQ_CST);
	arena_atomic_store(&r->owner, 0, ARENA_RELEASE);
}

/*
 * Wait until everything retired before this call is freed: three advances,
 * each from a fresh critical section. Returns 0, or -1 if some participant
 * kept the epoch from moving for max_tries attempts (each failed attempt
 * yields the CPU once).
 */
static inline int ebr_synchronize(struct ebr_domain *d, struct ebr_record *r, ap_u64 max_tries)
{
	ap_u64 t;
	int done = 0;

	for (t = 0; t < max_tries && done < EBR_LISTS; t++) {
		int advanced;

		if (ebr_enter(d, r))
			return -1;
		/* only our own advances count: their drains are over when
		 * ebr_try_advance returns */
		advanced = ebr_try_advance(d, r);
		ebr_exit(d, r);
		if (advanced)
			done++;
		else
			sched_yield(); /* let the participant we wait for run */
	}
	/* what this thread freed into its allocation cache goes back to its
	 * pages too: a caller that waits here wants the memory back */
	if (arena_thread_slot.heap)
		arena_heap_cache_flush(ARENA_PTR(struct arena_heap, arena_thread_slot.heap));
	return done >= EBR_LISTS ? 0 : -1;
}
#endif

#endif /* ARENA_EPOCH_H */
