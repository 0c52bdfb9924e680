/* SPDX-License-Identifier: MIT */
/*
 * evq: the pipeline's event queue. A bounded multi-producer ring of fixed-size
 * event records in the arena, with one consumer (the pipeline's drain).
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
 * Doorbell: a consumer about to sleep sets reader_sleeping, makes sure every
 * producer will see it (below), and checks the ring once more; a producer
 * publishes its slot and then reads reader_sleeping. Either the consumer sees
 * the slot, or the producer sees the flag and rings; the exchange on
 * reader_sleeping lets exactly one producer ring. Store-then-load on both
 * sides needs a full barrier between, paid on the cheap side:
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
 *     barrier and one look at reader_sleeping after the last
 *     (EVQ_PUBLISH_BATCH, then evq_batch_done()): the last record is then
 *     covered as above, and the earlier ones are visible before it.
 * A full barrier per event would cost the store buffer's drain of the whole
 * record (about a quarter of the producer's time on a getppid load); a grace
 * period per sleep costs nothing on the hot path.
 */
#ifndef AP_EVQ_H
#define AP_EVQ_H

#include "arena/arena.h"
#include "arena/atomics.h"
#include "event.h"

/* Lost compare-and-swap races tolerated before an event is dropped as busy. */
#define EVQ_RESERVE_TRIES 32

struct evq_slot {
	ap_u64 commit; /* ticket + 1 once the record is complete */
	struct ap_event ev;
};

struct evq {
	/* written by every producer */
	ap_u64 tail __arena_cacheline_aligned;
	ap_u64 seq;
	/* written by the consumer, read by producers */
	ap_u64 head __arena_cacheline_aligned;
	/* written by the consumer when it sleeps, by one producer when it rings */
	ap_u64 reader_sleeping __arena_cacheline_aligned;
	/* counters, written rarely */
	ap_u64 dropped_full __arena_cacheline_aligned;
	ap_u64 dropped_busy;
	ap_u64 high_water;
	ap_u64 wakeups;
	/* read-only after init */
	ap_u64 capacity __arena_cacheline_aligned; /* a power of two */
	ap_u64 mask;
	struct evq_slot __arena *slots;
};

enum evq_push_result {
	EVQ_OK = 0,
	EVQ_OK_WAKE = 1,    /* published; the caller must ring the doorbell */
	EVQ_DROP_FULL = -1, /* counted in dropped_full */
	EVQ_DROP_BUSY = -2, /* counted in dropped_busy */
};

static __always_inline ap_u64 evq_next_seq(struct evq __arena *q)
{
	return arena_atomic_add(&q->seq, 1, ARENA_RELAXED);
}

/* Keep the high-water mark: a compare-and-swap only when it grows. */
static __always_inline void evq_note_occupancy(struct evq __arena *q, ap_u64 occ)
{
	ap_u64 cur = arena_atomic_load(&q->high_water, ARENA_RELAXED);
	int i;

	for (i = 0; i < 4 && occ > cur; i++) {
		ap_u64 seen = arena_atomic_cmpxchg(&q->high_water, cur, occ, ARENA_RELAXED);
		if (seen == cur)
			break;
		cur = seen;
	}
}

/*
 * Reserve a ticket. Returns 0 and sets *ticket, or an EVQ_DROP_* code after
 * counting the drop.
 */
static __always_inline int evq_reserve(struct evq __arena *q, ap_u64 *ticket)
{
	ap_u64 cap = q->capacity;
	ap_u64 tail = arena_atomic_load(&q->tail, ARENA_RELAXED);
	int i;

	for (i = 0; i < EVQ_RESERVE_TRIES; i++) {
		ap_u64 head = arena_atomic_load(&q->head, ARENA_ACQUIRE);
		ap_u64 seen;

		/* signed: a stale tail may be behind head; the CAS then fails */
		if ((ap_s64)(tail - head) >= (ap_s64)cap) {
			arena_atomic_inc(&q->dropped_full, ARENA_RELAXED);
			return EVQ_DROP_FULL;
		}
		seen = arena_atomic_cmpxchg(&q->tail, tail, tail + 1, ARENA_ACQ_REL);
		if (seen == tail) {
			*ticket = tail;
			evq_note_occupancy(q, tail + 1 - head);
			return 0;
		}
		tail = seen;
	}
	arena_atomic_inc(&q->dropped_busy, ARENA_RELAXED);
	return EVQ_DROP_BUSY;
}

static __always_inline struct ap_event __arena *evq_slot_event(struct evq __arena *q, ap_u64 ticket)
{
	return &q->slots[ticket & q->mask].ev;
}

/* How a producer publishes: see "Doorbell" above. */
enum evq_publish_mode {
	EVQ_PUBLISH_RCU = 0,    /* non-sleepable producer, under RCU */
	EVQ_PUBLISH_FENCED = 1, /* sleepable producer, or not in the kernel */
	EVQ_PUBLISH_BATCH = 2,  /* many records in one run: evq_batch_done() after */
};

/* The reader sleeps and this producer won the right to ring it. */
static __always_inline int evq_claim_wakeup(struct evq __arena *q)
{
	if (arena_atomic_load(&q->reader_sleeping, ARENA_RELAXED) &&
	    arena_atomic_exchange(&q->reader_sleeping, 0, ARENA_SEQ_CST)) {
		arena_atomic_inc(&q->wakeups, ARENA_RELAXED);
		return 1;
	}
	return 0;
}

/* Publish a reserved slot. Returns EVQ_OK_WAKE when the consumer sleeps and
 * this producer won the right to ring. */
static __always_inline int evq_publish(struct evq __arena *q, ap_u64 ticket, int mode)
{
	struct evq_slot __arena *slot = &q->slots[ticket & q->mask];

	if (mode == EVQ_PUBLISH_FENCED) {
		/* release for the record and a full barrier before the load */
		arena_atomic_exchange(&slot->commit, ticket + 1, ARENA_SEQ_CST);
	} else {
		/* release for the record; the barrier is the consumer's grace
		 * period (RCU) or evq_batch_done() (BATCH) */
		arena_atomic_store(&slot->commit, ticket + 1, ARENA_RELEASE);
		if (mode == EVQ_PUBLISH_BATCH)
			return EVQ_OK;
	}
	return evq_claim_wakeup(q) ? EVQ_OK_WAKE : EVQ_OK;
}

/* After the last EVQ_PUBLISH_BATCH record of a run: returns 1 when the
 * caller must ring the doorbell. */
static __always_inline int evq_batch_done(struct evq __arena *q)
{
	arena_memory_barrier();
	return evq_claim_wakeup(q);
}

/* Copy a finished record (built on the stack or in a scratch map) into the
 * slot: the header, then only the words the name occupies. */
static __always_inline void evq_copy_event(struct ap_event __arena *dst, const struct ap_event *src)
{
	const ap_u64 *s = (const ap_u64 *)src;
	ap_u64 __arena *d = (ap_u64 __arena *)dst;
	ap_u32 words = (__builtin_offsetof(struct ap_event, name) + src->name_len + 1 + 7) / 8;
	ap_u32 i;

	for (i = 0; i < sizeof(struct ap_event) / 8; i++) {
		if (i >= words)
			break;
		/* volatile: keeps clang from turning the loop into a memcpy,
		 * which the BPF backend cannot lower for address space 1 */
		arena_store_once(&d[i], s[i]);
	}
}

/* The whole producer path: returns an enum evq_push_result. ev->seq is set
 * here so that dropped events use up a sequence number too. */
static __always_inline int evq_push(struct evq __arena *q, struct ap_event *ev, int mode)
{
	ap_u64 ticket;
	int err;

	ev->seq = evq_next_seq(q);
	err = evq_reserve(q, &ticket);
	if (err)
		return err;
	evq_copy_event(evq_slot_event(q, ticket), ev);
	return evq_publish(q, ticket, mode);
}

#if !ARENA_IS_BPF
/* ---- consumer side (userspace, one consumer at a time) ---- */

/* The next ready record, or NULL when the slot at head is not published. */
static inline const struct ap_event *evq_peek(const struct evq *q, ap_u64 pos)
{
	const struct evq_slot *slot = &q->slots[pos & q->mask];

	if (arena_atomic_load(&slot->commit, ARENA_ACQUIRE) != pos + 1)
		return NULL;
	return &slot->ev;
}

/* Release every slot before pos to the producers. */
static inline void evq_release(struct evq *q, ap_u64 pos)
{
	arena_atomic_store(&q->head, pos, ARENA_RELEASE);
}

/* Slots are released every so often within a batch, so a long batch does
 * not keep the queue looking full to the producers. */
#define EVQ_RELEASE_EVERY 256

/* Hands up to max ready records, in order, to fn (which must be done with
 * the record when it returns), releases them, and returns how many. */
static inline ap_u64 evq_consume(struct evq *q, ap_u64 max,
				 void (*fn)(const struct ap_event *ev, void *ctx), void *ctx)
{
	ap_u64 head = q->head, n = 0;
	const struct ap_event *ev;

	while (n < max && (ev = evq_peek(q, head)) != NULL) {
		fn(ev, ctx);
		head++;
		if (++n % EVQ_RELEASE_EVERY == 0)
			evq_release(q, head);
	}
	if (n % EVQ_RELEASE_EVERY)
		evq_release(q, head);
	return n;
}

/* Sleeping takes three steps: evq_announce_sleep(); a barrier that reaches
 * every producer (an RCU grace period, see "Doorbell"); evq_may_sleep(),
 * which looks once more. The caller may poll evq_peek() between them and
 * call evq_cancel_sleep() if something arrives. */
static inline void evq_announce_sleep(struct evq *q)
{
	arena_atomic_exchange(&q->reader_sleeping, 1, ARENA_SEQ_CST);
}

static inline void evq_cancel_sleep(struct evq *q)
{
	arena_atomic_store(&q->reader_sleeping, 0, ARENA_RELAXED);
}

/* Returns 1 when the caller may sleep on the doorbell, 0 (announcement
 * withdrawn) when something was published meanwhile. */
static inline int evq_may_sleep(struct evq *q)
{
	arena_memory_barrier();
	if (evq_peek(q, q->head) == NULL)
		return 1;
	evq_cancel_sleep(q);
	return 0;
}

static inline void evq_init(struct evq *q, struct evq_slot *slots, ap_u64 capacity)
{
	ap_u64 i;

	q->tail = q->seq = q->head = 0;
	q->reader_sleeping = 0;
	q->dropped_full = q->dropped_busy = q->high_water = q->wakeups = 0;
	q->capacity = capacity;
	q->mask = capacity - 1;
	q->slots = slots;
	for (i = 0; i < capacity; i++)
		slots[i].commit = 0;
}
#endif

#endif /* AP_EVQ_H */
