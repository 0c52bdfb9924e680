/* SPDX-License-Identifier: MIT */
/*
 * ds_mpmc: a bounded MPMC queue after Dmitry Vyukov's. A power-of-two array
 * of cells, each with a sequence number that says which ticket it holds:
 *   seq == pos + 1   full, published for the consumer of ticket pos
 * (anything older: not yet published). Tickets are claimed by
 * compare-and-swap, producers' on enq and consumers' on deq.
 *
 * A producer knows ticket pos is free when pos - deq < capacity, because a
 * consumer reads its cell before it moves deq past its ticket, never after
 * (deq is read through the producers' cached limit, see the insert). It
 * claims pos, writes the element and publishes it with seq = pos + 1
 * (release). A consumer checks that the
 * cell at deq holds its ticket (seq, acquire), reads the element, and then
 * claims the ticket (release): a successful claim vouches for what it read
 * (no producer writes that cell before deq passes the ticket), a failed one
 * throws it away. So a consumer writes nothing into the cells, and nothing
 * on either side waits for a load of the cell before its claim but the
 * consumer's one of seq: the same chain of dependent loads as ck_ring's
 * MPMC ring. No allocation, no reclamation: one compare-and-swap per
 * operation in the common case.
 *
 * Progress: not lock-free in the strict sense. A producer stopped between
 * its claim and its publish holds up consumers at that cell until it
 * resumes; one that dies there blocks the queue for good. A consumer holds
 * nothing up: its claim is its last step. Both sides' operations are short
 * and never sleep.
 *
 * Empty: a pop reports DS_NOT_FOUND only when no producer has claimed the
 * cell (enq == pos). A claimed, unpublished cell gives DS_BUSY instead: a
 * later producer may already have published and returned, so "empty" there
 * would not be linearizable (the checker in pipeline/linearize finds it).
 */
#ifndef DS_MPMC_H
#define DS_MPMC_H

#include "ds_api.h"

#define DS_MPMC_DEFAULT_CAP 1024
#define DS_MPMC_MAX_CAP (1ULL << 20)

/* 32 bytes, two to a line: 24-byte cells (one in four across two lines)
 * measured slower in the race's one-thread run */
struct mpmc_cell {
	ap_u64 seq;
	ap_u64 key;
	ap_u64 val;
	ap_u64 pad;
};

struct ds_mpmc {
	struct ds_head head;
	ap_u64 enq __arena_cacheline_aligned;
	ap_u64 plimit; /* the producers' cache: deq as last read + capacity */
	ap_u64 deq __arena_cacheline_aligned;
	ap_u64 mask __arena_cacheline_aligned;
	ap_u64 cells; /* struct mpmc_cell[mask + 1] */
};

#define DS_META_mpmc                                                                           \
	.name = "mpmc",                                                                        \
	.description = "Vyukov bounded MPMC queue: array of cells with sequence numbers",      \
	.progress = "blocking only on a stalled peer mid-operation; no allocation",            \
	.flags = DS_F_BOUNDED | DS_F_FIFO,                                                     \
	.model = DS_MODEL_MPMC,                                                                \
	.ops = DS_OP_BIT(DS_OP_INIT) | DS_OP_BIT(DS_OP_INSERT) | DS_OP_BIT(DS_OP_POP) |              \
	       DS_OP_BIT(DS_OP_VERIFY) | DS_OP_BIT(DS_OP_ITERATE) | DS_OP_BIT(DS_OP_STATS),         \
	.node_size = sizeof(struct mpmc_cell),                                                 \
	.head_size = sizeof(struct ds_mpmc),

static __always_inline struct mpmc_cell __arena *ds_mpmc_cell(struct ds_mpmc __arena *d, ap_u64 pos)
{
	return ARENA_PTR(struct mpmc_cell, d->cells + (pos & d->mask) * sizeof(struct mpmc_cell));
}

/* cfg->capacity: cells, rounded up to a power of two (default 1024). */
static __always_inline int ds_mpmc_init(struct ds_ctx *c, struct ds_mpmc __arena *d, const struct ds_config *cfg)
{
	ap_u64 cap = cfg && cfg->capacity ? cfg->capacity : DS_MPMC_DEFAULT_CAP, i;
	struct mpmc_cell __arena *cells;

	if (cap > DS_MPMC_MAX_CAP)
		return DS_INVALID;
	cap = ds_pow2(cap);
	cells = (struct mpmc_cell __arena *)ds_alloc(c, cap * sizeof(struct mpmc_cell));
	if (!cells)
		return DS_NOMEM;
	/* as if ticket i - cap had been published and consumed */
	for (i = arena_opaque(0); i < cap && can_loop; i++)
		arena_store_once(&cells[i].seq, i - cap + 1);
	ds_head_init(c, &d->head, DS_TYPE_mpmc, cfg);
	arena_store_once(&d->head.cfg.capacity, cap);
	arena_store_once(&d->enq, 0);
	arena_store_once(&d->plimit, cap);
	arena_store_once(&d->deq, 0);
	arena_store_once(&d->mask, cap - 1);
	arena_store_once(&d->cells, ARENA_ADDR(cells));
	ds_head_publish(&d->head);
	return DS_OK;
}

/* enqueue; DS_FULL when every cell holds an element or is still being read.
 * Producers share a cache of the first ticket they may not take (plimit:
 * deq as some producer last read it, plus the capacity; on their own line,
 * beside enq), so that deq, which the consumers' claims keep moving, is read
 * only when a producer reaches that limit. A limit from any deq ever read is
 * safe, deq only grows; a stale one written over a newer one only makes the
 * next producer read deq again. */
static __always_inline int ds_mpmc_insert(struct ds_ctx *c, struct ds_mpmc __arena *d, ap_u64 key, ap_u64 val)
{
	(void)c;
	ap_u64 cap = d->mask + 1;
	ap_u64 pos = arena_atomic_load(&d->enq, ARENA_RELAXED);
	/* acquire: pairs with the release of the producer that stored it, which
	 * read deq with acquire: the cells below it are read and left */
	ap_u64 limit = arena_atomic_load(&d->plimit, ARENA_ACQUIRE);

	while (can_loop) {
		ap_u64 seen;

		/* signed: a limit read after a stale pos may be far ahead of it */
		if ((ap_s64)(pos - limit) >= 0) {
			/* acquire: the consumer of ticket pos - cap read its cell
			 * before it moved deq past it */
			limit = arena_atomic_load(&d->deq, ARENA_ACQUIRE) + cap;
			arena_atomic_store(&d->plimit, limit, ARENA_RELEASE);
			if ((ap_s64)(pos - limit) >= 0)
				return DS_FULL;
		}
		seen = arena_atomic_cmpxchg(&d->enq, pos, pos + 1, ARENA_RELAXED);
		if (seen == pos) {
			struct mpmc_cell __arena *cell = ds_mpmc_cell(d, pos);

			arena_atomic_store(&cell->key, key, ARENA_RELAXED);
			arena_atomic_store(&cell->val, val, ARENA_RELAXED);
			arena_atomic_store(&cell->seq, pos + 1, ARENA_RELEASE);
			return DS_OK;
		}
		pos = seen;
	}
	return DS_BUSY;
}

/* dequeue; DS_NOT_FOUND when empty, DS_BUSY when the next element is still
 * being written */
static __always_inline int ds_mpmc_pop(struct ds_ctx *c, struct ds_mpmc __arena *d, ap_u64 *key, ap_u64 *val)
{
	(void)c;
	ap_u64 pos = arena_atomic_load(&d->deq, ARENA_RELAXED);

	while (can_loop) {
		struct mpmc_cell __arena *cell = ds_mpmc_cell(d, pos);
		ap_u64 seq = arena_atomic_load(&cell->seq, ARENA_ACQUIRE);
		ap_s64 dif = (ap_s64)(seq - (pos + 1));

		if (dif == 0) {
			/* read before the claim: no producer writes this cell again
			 * until deq passes pos, so a successful claim vouches for
			 * what was read, and a failed one throws it away */
			ap_u64 k = arena_atomic_load(&cell->key, ARENA_RELAXED);
			ap_u64 v = arena_atomic_load(&cell->val, ARENA_RELAXED);
			ap_u64 seen = arena_atomic_cmpxchg(&d->deq, pos, pos + 1, ARENA_RELEASE);

			if (seen == pos) {
				*key = k;
				*val = v;
				return DS_OK;
			}
			pos = seen;
		} else if (dif < 0) {
			/* claimed but not yet published: not empty, just not ready */
			if (arena_atomic_load(&d->enq, ARENA_ACQUIRE) != pos)
				return DS_BUSY;
			return DS_NOT_FOUND;
		} else {
			pos = arena_atomic_load(&d->deq, ARENA_RELAXED);
		}
	}
	return DS_BUSY;
}

static __always_inline int ds_mpmc_delete(struct ds_ctx *c, struct ds_mpmc __arena *d, ap_u64 key, ap_u64 *val)
{
	(void)c; (void)d; (void)key; (void)val;
	return DS_INVALID;
}

static __always_inline int ds_mpmc_search(struct ds_ctx *c, struct ds_mpmc __arena *d, ap_u64 key, ap_u64 *val)
{
	(void)c; (void)d; (void)key; (void)val;
	return DS_INVALID;
}

/* Front to back (quiescent snapshot). */
static __always_inline int ds_mpmc_iterate(struct ds_ctx *c, struct ds_mpmc __arena *d, ap_u64 lo, ap_u64 hi,
					   struct ds_kv __arena *out, ap_u64 cap, ap_u64 *n)
{
	(void)c;
	ap_u64 pos = arena_atomic_load(&d->deq, ARENA_ACQUIRE);
	ap_u64 end = arena_atomic_load(&d->enq, ARENA_ACQUIRE);

	*n = 0;
	while (pos < end && can_loop) {
		struct mpmc_cell __arena *cell = ds_mpmc_cell(d, pos);

		if (cell->key >= lo && cell->key < hi) {
			if (*n >= cap)
				return DS_FULL;
			out[*n].key = cell->key;
			out[*n].val = cell->val;
			*n += 1;
		}
		pos++;
	}
	return pos < end ? DS_BUSY : DS_OK;
}

/* Quiescent: 0 <= enq - deq <= capacity; cells of tickets [deq, enq) are
 * full (seq = pos + 1), the others still carry the ticket of their last
 * round (seq = pos - capacity + 1). */
static __always_inline int ds_mpmc_verify(struct ds_ctx *c, struct ds_mpmc __arena *d, struct ds_verify *v)
{
	(void)c;
	ap_u64 deq, enq, cap, pos;

	v->count = v->keysum = v->valsum = v->where = 0;
	if (ds_head_check(&d->head, DS_TYPE_mpmc))
		return DS_CORRUPT;
	cap = d->mask + 1;
	if (!d->mask || (d->mask & cap) || !ds_node_ok(d->cells)) {
		v->where = 1;
		return DS_CORRUPT;
	}
	deq = arena_atomic_load(&d->deq, ARENA_ACQUIRE);
	enq = arena_atomic_load(&d->enq, ARENA_ACQUIRE);
	if (enq - deq > cap) {
		v->where = 2;
		return DS_CORRUPT;
	}
	for (pos = deq; pos < deq + cap && can_loop; pos++) {
		struct mpmc_cell __arena *cell = ds_mpmc_cell(d, pos);
		ap_u64 seq = arena_atomic_load(&cell->seq, ARENA_ACQUIRE);

		if (pos < enq) {
			if (seq != pos + 1) {
				v->where = 3;
				return DS_CORRUPT;
			}
			v->count++;
			v->keysum += cell->key;
			v->valsum += cell->val;
		} else if (seq != pos - cap + 1) {
			v->where = 4;
			return DS_CORRUPT;
		}
	}
	return DS_OK;
}

#endif /* DS_MPMC_H */
