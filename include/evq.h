/* SPDX-License-Identifier: MIT */
/*
 * evq: the pipeline's event queue. A bounded multi-producer ring of fixed-size
 * event records in the arena, with one consumer (the pipeline's drain).
 *
 * The ring is written once, as ck_ring is: struct evq and the evq_ring_*
 * functions hold the algorithm over slots of a given size, and
 * EVQ_DEFINE(q, T, copy, stamp) only adds struct q_slot (a commit word and a
 * T) and typed wrappers q_push, q_peek, q_consume, q_init, ... for records of
 * type T, in the manner of CK_RING_PROTOTYPE. It is instantiated twice: at
 * the end of this file as the pipeline's event queue (evq_*, over struct
 * ap_event records), and in include/ds/ds_evq.h over (key, value) pairs
 * (evq_kv_*), where it is the registered structure `evq` that the
 * data-structure tests and benchmarks drive.
 *
 * Producers (BPF programs on any CPU, possibly interleaved on one CPU by
 * preemption, and userspace in tests) never block and never allocate:
 *   1. take a sequence number (every event gets one, delivered or dropped);
 *   2. reserve a ticket by compare-and-swap on tail, after checking that the
 *      slot the ticket maps to was released by the consumer (tail - head <
 *      capacity); a full ring or too many lost races drops the event, counted
 *      by reason;
 *   3. copy the record into the slot and publish it by writing ticket + 1
 *      into the slot's commit word.
 * The consumer reads slots in ticket order while commit == ticket + 1, so an
 * event from one thread is never overtaken by its later events, and stores
 * head once per batch to release the slots.
 *
 * Doorbell: a consumer about to sleep announces it (ring_from, below), makes
 * sure every producer will see the announcement, and checks the ring once
 * more; a producer publishes its slot and then reads the announcement.
 * Either the consumer sees the slot, or the producer sees the announcement
 * and rings; the exchange on ring_from lets exactly one producer ring.
 * Store-then-load on both sides needs a full barrier between, paid on the
 * cheap side:
 *   - producers that run inside an RCU read-side section (tracepoint and
 *     other non-sleepable programs: EVQ_PUBLISH_RCU) publish with a plain
 *     release store; the consumer's side of the barrier is an RCU grace
 *     period (membarrier(MEMBARRIER_CMD_GLOBAL), i.e. synchronize_rcu())
 *     between setting the flag and the last check. A producer that was
 *     running before the grace period has finished and is visible after it;
 *     one that starts later sees the flag.
 *   - sleepable producers (lsm.s, SEC("syscall"): RCU tasks trace, not
 *     covered by that grace period) publish with an exchange, a full barrier
 *     of their own (EVQ_PUBLISH_FENCED);
 *   - a sleepable producer that publishes many records in one run (the burst
 *     generator) publishes each with a plain release store and pays one full
 *     barrier and one look at ring_from after the last
 *     (EVQ_PUBLISH_BATCH, then evq_batch_done()): the last record is then
 *     covered as above, and the earlier ones are visible before it.
 * A full barrier per event would cost the store buffer's drain of the whole
 * record (about a quarter of the producer's time on a getppid load); a grace
 * period per sleep costs nothing on the hot path.
 *
 * The announcement is a ticket, ring_from: a producer rings when the ticket
 * it published is >= ring_from, and EVQ_RING_NEVER (the reader is awake) is
 * above every ticket. Sleeping sets it to 0: the next event rings. Between
 * two drains of a steady trickle the reader naps instead: it sets ring_from
 * to head + threshold - 1 with a plain store and waits on a timer as well as
 * on the doorbell, so a producer rings only when the queue has filled to the
 * threshold, and otherwise the timer ends the nap. A nap needs no grace
 * period: a producer that has not seen the store yet merely does not ring,
 * and the timer bounds the wait. Without naps a reader that keeps up with a
 * slow producer either polls continuously or is rung for nearly every event;
 * a ring costs the producer an interrupt to itself (irq_work) and a wake-up
 * of the reader's CPU, both exits to the hypervisor on a virtual machine.
 */
#ifndef AP_EVQ_H
#define AP_EVQ_H

#include "arena/arena.h"
#include "arena/atomics.h"
#include "arena/shim.h"
#include "event.h"

/* Lost compare-and-swap races tolerated before an event is dropped as busy. */
#define EVQ_RESERVE_TRIES 32

/* ring_from while the reader is awake: no ticket reaches it. */
#define EVQ_RING_NEVER (~(ap_u64)0)

/* Slots are released every so often within a batch, so a long batch does
 * not keep the queue looking full to the producers. */
#define EVQ_RELEASE_EVERY 256

/* The consumer's peek and release: always inlined in BPF (every arena
 * function is); plain inline in userspace, where gcc lays out the drain
 * loops better without the attribute (it moves their blocks). */
#if ARENA_IS_BPF
#define EVQ_CONSUMER_INLINE __always_inline
#else
#define EVQ_CONSUMER_INLINE inline
#endif

enum evq_push_result {
	EVQ_OK = 0,
	EVQ_OK_WAKE = 1,    /* published; the caller must ring the doorbell */
	EVQ_DROP_FULL = -1, /* counted in dropped_full */
	EVQ_DROP_BUSY = -2, /* counted in dropped_busy */
};

/* How a producer publishes: see "Doorbell" above. */
enum evq_publish_mode {
	EVQ_PUBLISH_RCU = 0,    /* non-sleepable producer, under RCU */
	EVQ_PUBLISH_FENCED = 1, /* sleepable producer, or not in the kernel */
	EVQ_PUBLISH_BATCH = 2,  /* many records in one run: q_batch_done() after */
};

/*
 * The ring, whatever its records: struct evq and the evq_ring_* functions
 * below hold the whole algorithm, over slots of slot_size bytes (a commit
 * word, then the record at rec_off). The callers pass sizeof and offsetof of
 * their slot type: constants, so once the functions are inlined the code is
 * what it would be for that type alone (in BPF every address is then a
 * constant offset the verifier bounds).
 */
struct evq {
	/* written by every producer */
	ap_u64 tail __arena_cacheline_aligned;
	ap_u64 seq;
	/* written by the consumer, read by producers */
	ap_u64 head __arena_cacheline_aligned;
	/* producers ring when they publish a ticket >= ring_from (see
	 * "Doorbell"); written by the consumer when it naps or sleeps, and by
	 * the one producer that rings */
	ap_u64 ring_from __arena_cacheline_aligned;
	/* counters, written rarely */
	ap_u64 dropped_full __arena_cacheline_aligned;
	ap_u64 dropped_busy;
	ap_u64 high_water;
	ap_u64 wakeups;
	/* read-only after init */
	ap_u64 capacity __arena_cacheline_aligned; /* a power of two */
	ap_u64 mask;
	void __arena *slots; /* capacity slots of the instance's slot type */
};

/* The slot ticket pos maps to; its first word is the commit word. */
static __always_inline ap_u64 __arena *evq_ring_slot(struct evq __arena *r, ap_u64 pos,
						     ap_u64 slot_size)
{
	return (ap_u64 __arena *)((char __arena *)r->slots + (pos & r->mask) * slot_size);
}

static __always_inline ap_u64 evq_ring_next_seq(struct evq __arena *r)
{
	return arena_atomic_add(&r->seq, 1, ARENA_RELAXED);
}

/* Keep the high-water mark: a compare-and-swap only when it grows. */
static __always_inline void evq_ring_note_occupancy(struct evq __arena *r, ap_u64 occ)
{
	ap_u64 cur = arena_atomic_load(&r->high_water, ARENA_RELAXED);
	int i;

	for (i = 0; i < 4 && occ > cur; i++) {
		ap_u64 seen = arena_atomic_cmpxchg(&r->high_water, cur, occ, ARENA_RELAXED);

		if (seen == cur)
			break;
		cur = seen;
	}
}

/* Reserve a ticket. Returns 0 and sets *ticket, or an EVQ_DROP_* code after
 * counting the drop. */
static __always_inline int evq_ring_reserve(struct evq __arena *r, ap_u64 *ticket)
{
	ap_u64 cap = r->capacity;
	ap_u64 tail = arena_atomic_load(&r->tail, ARENA_RELAXED);
	int i;

	for (i = 0; i < EVQ_RESERVE_TRIES; i++) {
		ap_u64 head = arena_atomic_load(&r->head, ARENA_ACQUIRE);
		ap_u64 seen;

		/* signed: a stale tail may be behind head; the CAS then fails */
		/* drops are counted with release, as tail moves: a reader of
		 * either that then reads seq sees the push's sequence number */
		if ((ap_s64)(tail - head) >= (ap_s64)cap) {
			arena_atomic_inc(&r->dropped_full, ARENA_RELEASE);
			return EVQ_DROP_FULL;
		}
		seen = arena_atomic_cmpxchg(&r->tail, tail, tail + 1, ARENA_ACQ_REL);
		if (seen == tail) {
			*ticket = tail;
			evq_ring_note_occupancy(r, tail + 1 - head);
			return 0;
		}
		tail = seen;
	}
	arena_atomic_inc(&r->dropped_busy, ARENA_RELEASE);
	return EVQ_DROP_BUSY;
}

/* The reader waits for ticket and this producer won the right to ring it.
 * The exchange may take a later announcement than the one loaded (the
 * reader woke and napped again meanwhile): that rings a nap early, which
 * costs a drain and nothing else. */
static __always_inline int evq_ring_claim_wakeup(struct evq __arena *r, ap_u64 ticket)
{
	if (ticket >= arena_atomic_load(&r->ring_from, ARENA_RELAXED) &&
	    arena_atomic_exchange(&r->ring_from, EVQ_RING_NEVER, ARENA_SEQ_CST) != EVQ_RING_NEVER) {
		arena_atomic_inc(&r->wakeups, ARENA_RELAXED);
		return 1;
	}
	return 0;
}

/* Publish a reserved slot. Returns EVQ_OK_WAKE when the consumer sleeps and
 * this producer won the right to ring. */
static __always_inline int evq_ring_publish(struct evq __arena *r, ap_u64 ticket, ap_u64 slot_size,
					    int mode)
{
	ap_u64 __arena *commit = evq_ring_slot(r, ticket, slot_size);

	if (mode == EVQ_PUBLISH_FENCED) {
		/* release for the record and a full barrier before the load */
		arena_atomic_exchange(commit, ticket + 1, ARENA_SEQ_CST);
	} else {
		/* release for the record; the barrier is the consumer's grace
		 * period (RCU) or evq_ring_batch_done() (BATCH) */
		arena_atomic_store(commit, ticket + 1, ARENA_RELEASE);
		if (mode == EVQ_PUBLISH_BATCH)
			return EVQ_OK;
	}
	return evq_ring_claim_wakeup(r, ticket) ? EVQ_OK_WAKE : EVQ_OK;
}

/* After the last EVQ_PUBLISH_BATCH record of a run: returns 1 when the
 * caller must ring the doorbell. The last ticket reserved by anyone stands
 * for the run's: at least as late, and published or about to be. */
static __always_inline int evq_ring_batch_done(struct evq __arena *r)
{
	arena_memory_barrier();
	return evq_ring_claim_wakeup(r, arena_atomic_load(&r->tail, ARENA_RELAXED) - 1);
}

/* ---- consumer side (one consumer at a time) ---- */

/* The record at pos once it is published, or NULL. */
static EVQ_CONSUMER_INLINE void __arena *evq_ring_peek(struct evq __arena *r, ap_u64 pos,
							ap_u64 slot_size, ap_u64 rec_off)
{
	ap_u64 __arena *commit = evq_ring_slot(r, pos, slot_size);

	if (arena_atomic_load(commit, ARENA_ACQUIRE) != pos + 1)
		return 0;
	return (char __arena *)commit + rec_off;
}

/* Release every slot before pos to the producers. */
static EVQ_CONSUMER_INLINE void evq_ring_release(struct evq __arena *r, ap_u64 pos)
{
	arena_atomic_store(&r->head, pos, ARENA_RELEASE);
}

/* Lay out a ring over capacity (a power of two) slots, before any producer
 * can see it. Returns 0, or -1 when a BPF loop budget cut it short. */
static __always_inline int evq_ring_init(struct evq __arena *r, void __arena *slots,
					 ap_u64 capacity, ap_u64 slot_size)
{
	ap_u64 i;

	/* volatile stores: no memset on arena memory in BPF */
	arena_store_once(&r->tail, 0);
	arena_store_once(&r->seq, 0);
	arena_store_once(&r->head, 0);
	arena_store_once(&r->ring_from, EVQ_RING_NEVER);
	arena_store_once(&r->dropped_full, 0);
	arena_store_once(&r->dropped_busy, 0);
	arena_store_once(&r->high_water, 0);
	arena_store_once(&r->wakeups, 0);
	arena_store_once(&r->capacity, capacity);
	arena_store_once(&r->mask, capacity - 1);
	arena_store_once(&r->slots, slots);
	/* through the argument: r->slots and r->mask would be loaded again
	 * after every volatile store */
	for (i = arena_opaque(0); i < capacity && can_loop; i++)
		arena_store_once((ap_u64 __arena *)((char __arena *)slots + i * slot_size), 0);
	return i < capacity ? -1 : 0;
}

#if !ARENA_IS_BPF
/* The consumer's loop, from q_consume (the typed wrapper calls its callback
 * directly, so the compiler can inline it into the loop):
 *	head = r->head; n = 0;
 *	while (n < max && (rec = peek(head))) {
 *		fn(rec, ctx);
 *		head = evq_ring_consumed(r, head, ++n);
 *	}
 *	evq_ring_consume_done(r, head, n);
 * Slots are handed back every EVQ_RELEASE_EVERY records and at the end. */
static inline ap_u64 evq_ring_consumed(struct evq *r, ap_u64 head, ap_u64 n)
{
	head++;
	if (n % EVQ_RELEASE_EVERY == 0)
		evq_ring_release(r, head);
	return head;
}

static inline void evq_ring_consume_done(struct evq *r, ap_u64 head, ap_u64 n)
{
	if (n % EVQ_RELEASE_EVERY)
		evq_ring_release(r, head);
}

/* Sleeping takes three steps: evq_ring_announce_sleep(); a barrier that
 * reaches every producer (an RCU grace period, see "Doorbell");
 * evq_ring_may_sleep(), which looks once more. The caller may poll for a
 * record between them and call evq_ring_cancel_sleep() if one arrives. */
static inline void evq_ring_announce_sleep(struct evq *r)
{
	arena_atomic_exchange(&r->ring_from, 0, ARENA_SEQ_CST);
}

/* Withdraws a sleep's or a nap's announcement. */
static inline void evq_ring_cancel_sleep(struct evq *r)
{
	arena_atomic_store(&r->ring_from, EVQ_RING_NEVER, ARENA_RELAXED);
}

/* A nap: ring once the queue holds threshold (>= 1) records; the caller
 * waits on the doorbell with a timeout, then calls evq_ring_cancel_sleep(). */
static inline void evq_ring_nap(struct evq *r, ap_u64 threshold)
{
	arena_atomic_store(&r->ring_from, r->head + (threshold ? threshold : 1) - 1,
			   ARENA_RELAXED);
}

/* Returns 1 when the caller may sleep on the doorbell, 0 (announcement
 * withdrawn) when something was published meanwhile. */
static inline int evq_ring_may_sleep(struct evq *r, ap_u64 slot_size)
{
	ap_u64 head;

	arena_memory_barrier();
	head = r->head;
	if (arena_atomic_load(evq_ring_slot(r, head, slot_size), ARENA_ACQUIRE) != head + 1)
		return 1;
	evq_ring_cancel_sleep(r);
	return 0;
}
#endif

/*
 * EVQ_DEFINE(q, T, copy, stamp): typed wrappers over struct evq for records
 * of type T, in the manner of ck_ring's CK_RING_PROTOTYPE: struct q_slot (a
 * commit word and a T) and q_push, q_reserve, q_publish, q_batch_done,
 * q_peek, q_release, q_init, q_slot_at, and in userspace q_consume and the
 * sleep protocol (q_announce_sleep, q_may_sleep, q_cancel_sleep, q_nap).
 *   copy(T __arena *dst, const T *src)   writes a finished record into its
 *                                        slot (plain or volatile stores: no
 *                                        memcpy on arena memory in BPF);
 *   stamp(T *rec, ap_u64 seq)            gives the record the sequence number
 *                                        q_push took for it (or ignores it).
 */
#define EVQ_DEFINE(q, T, copy, stamp)                                                            \
	struct q##_slot {                                                                        \
		ap_u64 commit; /* ticket + 1 once the record is complete */                     \
		T rec;                                                                           \
	};                                                                                       \
                                                                                                 \
	static __always_inline struct q##_slot __arena *q##_slot_at(struct evq __arena *r,      \
								     ap_u64 pos)                 \
	{                                                                                        \
		return (struct q##_slot __arena *)evq_ring_slot(r, pos, sizeof(struct q##_slot)); \
	}                                                                                        \
                                                                                                 \
	static __always_inline int q##_reserve(struct evq __arena *r, ap_u64 *ticket)           \
	{                                                                                        \
		return evq_ring_reserve(r, ticket);                                              \
	}                                                                                        \
                                                                                                 \
	static __always_inline int q##_publish(struct evq __arena *r, ap_u64 ticket, int mode)  \
	{                                                                                        \
		return evq_ring_publish(r, ticket, sizeof(struct q##_slot), mode);               \
	}                                                                                        \
                                                                                                 \
	static __always_inline int q##_batch_done(struct evq __arena *r)                        \
	{                                                                                        \
		return evq_ring_batch_done(r);                                                   \
	}                                                                                        \
                                                                                                 \
	/* The whole producer path: returns an enum evq_push_result. The sequence                \
	 * number is taken first, so that dropped records use one up too. */                     \
	static __always_inline int q##_push(struct evq __arena *r, T *rec, int mode)            \
	{                                                                                        \
		ap_u64 ticket;                                                                   \
		int err;                                                                         \
                                                                                                 \
		stamp(rec, evq_ring_next_seq(r));                                                \
		err = evq_ring_reserve(r, &ticket);                                              \
		if (err)                                                                         \
			return err;                                                              \
		copy(&q##_slot_at(r, ticket)->rec, rec);                                         \
		return q##_publish(r, ticket, mode);                                             \
	}                                                                                        \
                                                                                                 \
	static EVQ_CONSUMER_INLINE T __arena *q##_peek(struct evq __arena *r, ap_u64 pos)       \
	{                                                                                        \
		return (T __arena *)evq_ring_peek(r, pos, sizeof(struct q##_slot),               \
						  __builtin_offsetof(struct q##_slot, rec));     \
	}                                                                                        \
                                                                                                 \
	static EVQ_CONSUMER_INLINE void q##_release(struct evq __arena *r, ap_u64 pos)          \
	{                                                                                        \
		evq_ring_release(r, pos);                                                        \
	}                                                                                        \
                                                                                                 \
	static __always_inline int q##_init(struct evq __arena *r, struct q##_slot __arena *slots, \
					    ap_u64 capacity)                                     \
	{                                                                                        \
		return evq_ring_init(r, slots, capacity, sizeof(struct q##_slot));               \
	}                                                                                        \
                                                                                                 \
	EVQ_DEFINE_USER(q, T)

#if ARENA_IS_BPF
#define EVQ_DEFINE_USER(q, T)
#else
/* q_consume: hands up to max ready records, in order, to fn (which must be
 * done with the record when it returns), releases them, and returns how
 * many. */
#define EVQ_DEFINE_USER(q, T)                                                                    \
	static inline ap_u64 q##_consume(struct evq *r, ap_u64 max, void (*fn)(const T *rec, void *ctx), \
					 void *ctx)                                              \
	{                                                                                        \
		ap_u64 head = r->head, n = 0;                                                    \
		const T *rec;                                                                    \
                                                                                                 \
		while (n < max && (rec = q##_peek(r, head)) != NULL) {                           \
			fn(rec, ctx);                                                            \
			head = evq_ring_consumed(r, head, ++n);                                  \
		}                                                                                \
		evq_ring_consume_done(r, head, n);                                               \
		return n;                                                                        \
	}                                                                                        \
                                                                                                 \
	static inline void q##_announce_sleep(struct evq *r)                                     \
	{                                                                                        \
		evq_ring_announce_sleep(r);                                                      \
	}                                                                                        \
                                                                                                 \
	static inline void q##_cancel_sleep(struct evq *r)                                       \
	{                                                                                        \
		evq_ring_cancel_sleep(r);                                                        \
	}                                                                                        \
                                                                                                 \
	static inline void q##_nap(struct evq *r, ap_u64 threshold)                              \
	{                                                                                        \
		evq_ring_nap(r, threshold);                                                      \
	}                                                                                        \
                                                                                                 \
	static inline int q##_may_sleep(struct evq *r)                                           \
	{                                                                                        \
		return evq_ring_may_sleep(r, sizeof(struct q##_slot));                           \
	}
#endif

/* ---- the pipeline's event queue: struct evq of struct ap_event ---- */

/* Copy a record's head into its slot: the fixed fields and the words the
 * name occupies. Producers without a path (path_len 0) build only a struct
 * ap_event_head and publish it with this alone (evq_reserve, evq_slot_at,
 * evq_publish). */
static __always_inline void evq_copy_event_head(struct ap_event __arena *dst,
						const struct ap_event_head *src)
{
	const ap_u64 *s = (const ap_u64 *)src;
	ap_u64 __arena *d = (ap_u64 __arena *)dst;
	ap_u32 words = (__builtin_offsetof(struct ap_event_head, name) + src->name_len + 1 + 7) / 8;
	ap_u32 i;

	for (i = 0; i < sizeof(struct ap_event_head) / 8; i++) {
		if (i >= words)
			break;
		/* volatile: keeps clang from turning the loop into a memcpy,
		 * which the BPF backend cannot lower for address space 1 */
		arena_store_once(&d[i], s[i]);
	}
}

/* Copy a finished record (built in a scratch map) into the slot: its head,
 * then the words of the path's tail (the path ends at the end of its
 * field), from the field's last word backwards. */
static __always_inline void evq_copy_event(struct ap_event __arena *dst, const struct ap_event *src)
{
	const ap_u64 *s = (const ap_u64 *)src;
	ap_u64 __arena *d = (ap_u64 __arena *)dst;
	ap_u32 path_words = (src->path_len + 7) / 8;
	ap_u32 i;

	evq_copy_event_head(dst, (const struct ap_event_head *)src);
	for (i = 0; i < AP_PATH_CAP / 8; i++) {
		ap_u32 w = sizeof(struct ap_event) / 8 - 1 - i;

		if (i >= path_words)
			break;
		arena_store_once(&d[w], s[w]);
	}
}

/* Every event gets its sequence number, delivered or dropped. */
#define evq_stamp_event(ev, s) ((ev)->seq = (s))

EVQ_DEFINE(evq, struct ap_event, evq_copy_event, evq_stamp_event)

#endif /* AP_EVQ_H */
