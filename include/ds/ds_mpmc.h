/* SPDX-License-Identifier: MIT */
/*
 * ds_mpmc: Dmitry Vyukov's bounded MPMC queue. A power-of-two array of
 * cells, each with a sequence number that says whose turn it is:
 *   seq == pos       free for the producer of ticket pos
 *   seq == pos + 1   full, for the consumer of ticket pos
 * A producer claims ticket pos by compare-and-swap on enq when its cell is
 * free, writes the element, and publishes it with seq = pos + 1 (release);
 * a consumer claims pos on deq when the cell is full, reads the element and
 * frees the cell for the next round with seq = pos + capacity. No
 * allocation, no reclamation: one compare-and-swap per operation in the
 * common case.
 *
 * Progress: not lock-free in the strict sense. A producer stopped between
 * its claim and its publish holds up consumers at that cell until it
 * resumes; one that dies there blocks the queue for good. Both sides'
 * operations are short and never sleep.
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

struct mpmc_cell {
	ap_u64 seq;
	ap_u64 key;
	ap_u64 val;
	ap_u64 pad;
};

struct ds_mpmc {
	struct ds_head head;
	ap_u64 enq __arena_cacheline_aligned;
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

/*
 * The ticket an operation tries first. In userspace, while this thread is
 * the only one moving the index it claims on (its last claim found the index
 * where its claim before had left it), the ticket after its last one, kept
 * in its context (struct ds_hint): reading the index instead would wait for
 * the last claim's compare-and-swap to complete before the cell's read could
 * start, and from the guess the cell is read at once. The claim's
 * compare-and-swap confirms the guess, or returns the index for the loop to
 * go on from; full or empty is reported only from a ticket read off the
 * index. When other threads move the index the guess would be stale, a
 * read of a cell they write and then of the index anyway, so the thread
 * reads the index first until it has the index to itself again.
 * Returns DS_MPMC_GUESS when *pos is a guess, DS_MPMC_STEADY when the next
 * operation may guess if this one claims the first ticket it tries.
 */
#define DS_MPMC_GUESS 1
#define DS_MPMC_STEADY 2

static __always_inline int ds_mpmc_first(struct ds_ctx *c, struct ds_mpmc __arena *d, int pop, ap_u64 *pos)
{
#if !ARENA_IS_BPF
	struct ds_hint *h = pop ? &c->pop_hint : &c->push_hint;
	ap_u64 at = ARENA_ADDR(d);

	if (h->at == (at | 1)) {
		*pos = h->pos;
		return DS_MPMC_GUESS | DS_MPMC_STEADY;
	}
	*pos = arena_atomic_load(pop ? &d->deq : &d->enq, ARENA_RELAXED);
	return h->at == at && *pos == h->pos ? DS_MPMC_STEADY : 0;
#else
	(void)c;
	*pos = arena_atomic_load(pop ? &d->deq : &d->enq, ARENA_RELAXED);
	return 0;
#endif
}

/* After a claim of ticket pos: where this thread's next one starts, and
 * whether it may start there without reading the index (bit 0 of at; an
 * instance's address is a multiple of 8). */
static __always_inline void ds_mpmc_note(struct ds_ctx *c, struct ds_mpmc __arena *d, int pop, ap_u64 pos,
					 int how)
{
#if !ARENA_IS_BPF
	struct ds_hint *h = pop ? &c->pop_hint : &c->push_hint;

	h->at = ARENA_ADDR(d) | (ap_u64)!!(how & DS_MPMC_STEADY);
	h->pos = pos + 1;
#else
	(void)c; (void)d; (void)pop; (void)pos; (void)how;
#endif
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
	for (i = arena_opaque(0); i < cap && can_loop; i++)
		arena_store_once(&cells[i].seq, i);
	ds_head_init(c, &d->head, DS_TYPE_mpmc, cfg);
	arena_store_once(&d->head.cfg.capacity, cap);
	arena_store_once(&d->enq, 0);
	arena_store_once(&d->deq, 0);
	arena_store_once(&d->mask, cap - 1);
	arena_store_once(&d->cells, ARENA_ADDR(cells));
	ds_head_publish(&d->head);
	return DS_OK;
}

/* enqueue; DS_FULL when every cell holds an element */
static __always_inline int ds_mpmc_insert(struct ds_ctx *c, struct ds_mpmc __arena *d, ap_u64 key, ap_u64 val)
{
	ap_u64 pos;
	int how = ds_mpmc_first(c, d, 0, &pos);

	while (can_loop) {
		struct mpmc_cell __arena *cell = ds_mpmc_cell(d, pos);
		ap_u64 seq = arena_atomic_load(&cell->seq, ARENA_ACQUIRE);
		ap_s64 dif = (ap_s64)(seq - pos);

		if (dif == 0) {
			ap_u64 seen = arena_atomic_cmpxchg(&d->enq, pos, pos + 1, ARENA_RELAXED);

			if (seen == pos) {
				cell->key = key;
				cell->val = val;
				arena_atomic_store(&cell->seq, pos + 1, ARENA_RELEASE);
				ds_mpmc_note(c, d, 0, pos, how);
				return DS_OK;
			}
			pos = seen;
		} else if (dif < 0 && !(how & DS_MPMC_GUESS)) {
			return DS_FULL;
		} else {
			pos = arena_atomic_load(&d->enq, ARENA_RELAXED);
		}
		how = 0;
	}
	return DS_BUSY;
}

/* dequeue; DS_NOT_FOUND when empty (or the next element is still being written) */
static __always_inline int ds_mpmc_pop(struct ds_ctx *c, struct ds_mpmc __arena *d, ap_u64 *key, ap_u64 *val)
{
	ap_u64 pos;
	int how = ds_mpmc_first(c, d, 1, &pos);

	while (can_loop) {
		struct mpmc_cell __arena *cell = ds_mpmc_cell(d, pos);
		ap_u64 seq = arena_atomic_load(&cell->seq, ARENA_ACQUIRE);
		ap_s64 dif = (ap_s64)(seq - (pos + 1));

		if (dif == 0) {
			ap_u64 seen = arena_atomic_cmpxchg(&d->deq, pos, pos + 1, ARENA_RELAXED);

			if (seen == pos) {
				*key = cell->key;
				*val = cell->val;
				arena_atomic_store(&cell->seq, pos + d->mask + 1, ARENA_RELEASE);
				ds_mpmc_note(c, d, 1, pos, how);
				return DS_OK;
			}
			pos = seen;
		} else if (dif < 0 && !(how & DS_MPMC_GUESS)) {
			/* claimed but not yet published: not empty, just not ready */
			if (arena_atomic_load(&d->enq, ARENA_ACQUIRE) != pos)
				return DS_BUSY;
			return DS_NOT_FOUND;
		} else {
			pos = arena_atomic_load(&d->deq, ARENA_RELAXED);
		}
		how = 0;
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
 * full (seq = pos + 1), the others free for their next ticket. */
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
		} else if (seq != pos) {
			v->where = 4;
			return DS_CORRUPT;
		}
	}
	return DS_OK;
}

#endif /* DS_MPMC_H */
