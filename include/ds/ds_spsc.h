/* SPDX-License-Identifier: MIT */
/*
 * ds_spsc: a bounded single-producer single-consumer ring in the style of
 * ck_ring and Folly's ProducerConsumerQueue. The producer owns ptail, the
 * consumer owns chead; each publishes its index with a release store and
 * reads the other's with an acquire load, and keeps a cached copy of it so
 * that most operations touch only their own cache line.
 *
 * Model: one producer and one consumer at a time, enforced through the
 * roles of role.h: a context claims its role once per batch or per attach
 * (a bare operation claims it around itself), and an operation of a
 * context that holds its role touches nothing but the ring; another
 * producer, or consumer, gets DS_BUSY.
 * Progress: wait-free for each role holder; no allocation.
 *
 * A holder killed mid-operation leaves the ring consistent: each side
 * changes shared state with one store of its index, after its slot is
 * written or read. A producer killed before that store loses the element it
 * was pushing; a consumer killed after reading a slot but before moving
 * chead leaves that element for the next consumer (it is delivered once
 * more if the dead one had already handed it on).
 */
#ifndef DS_SPSC_H
#define DS_SPSC_H

#include "ds_api.h"

#define DS_SPSC_DEFAULT_CAP 1024
#define DS_SPSC_MAX_CAP (1ULL << 20)

struct ds_spsc {
	struct ds_head head;
	/* producer's line */
	ap_u64 ptail __arena_cacheline_aligned; /* next slot to fill */
	ap_u64 plimit; /* the producer's cache: chead as it last saw it + capacity */
	/* consumer's line */
	ap_u64 chead __arena_cacheline_aligned; /* next slot to read */
	ap_u64 ccache;                          /* last ptail the consumer saw */
	struct ds_roles roles;
	/* read-only */
	ap_u64 mask __arena_cacheline_aligned;
	ap_u64 slots; /* struct ds_kv[mask + 1] */
};

#define DS_META_spsc                                                                           \
	.name = "spsc",                                                                        \
	.description = "bounded SPSC ring (ck_ring / Folly style) with cached indices",        \
	.progress = "wait-free for the producer and the consumer; no allocation",              \
	.flags = DS_F_BOUNDED | DS_F_FIFO,                                                     \
	.model = DS_MODEL_SPSC,                                                                \
	.ops = DS_OP_BIT(DS_OP_INIT) | DS_OP_BIT(DS_OP_INSERT) | DS_OP_BIT(DS_OP_POP) |              \
	       DS_OP_BIT(DS_OP_VERIFY) | DS_OP_BIT(DS_OP_ITERATE) | DS_OP_BIT(DS_OP_STATS),         \
	.node_size = sizeof(struct ds_kv),                                                     \
	.head_size = sizeof(struct ds_spsc),

static __always_inline struct ds_kv __arena *ds_spsc_slot(struct ds_spsc __arena *d, ap_u64 pos)
{
	return ARENA_PTR(struct ds_kv, d->slots + (pos & d->mask) * sizeof(struct ds_kv));
}

/* cfg->capacity: slots, rounded up to a power of two (default 1024). */
static __always_inline int ds_spsc_init(struct ds_ctx *c, struct ds_spsc __arena *d, const struct ds_config *cfg)
{
	ap_u64 cap = cfg && cfg->capacity ? cfg->capacity : DS_SPSC_DEFAULT_CAP;
	struct ds_kv __arena *slots;

	if (cap > DS_SPSC_MAX_CAP)
		return DS_INVALID;
	cap = ds_pow2(cap);
	slots = (struct ds_kv __arena *)ds_alloc(c, cap * sizeof(struct ds_kv));
	if (!slots)
		return DS_NOMEM;
	ds_head_init(c, &d->head, DS_TYPE_spsc, cfg);
	arena_store_once(&d->head.cfg.capacity, cap);
	arena_store_once(&d->ptail, 0);
	arena_store_once(&d->plimit, cap);
	arena_store_once(&d->chead, 0);
	arena_store_once(&d->ccache, 0);
	ds_roles_init(&d->roles);
	arena_store_once(&d->mask, cap - 1);
	arena_store_once(&d->slots, ARENA_ADDR(slots));
	ds_head_publish(&d->head);
	return DS_OK;
}

/*
 * The operations split in two: the ring's part (ds_spsc_push_held,
 * ds_spsc_pop_held), for a context that holds the role, and the claim
 * around it for one that does not. Through an end (spsc_end.h), or in a
 * ds_exec batch that claimed its roles at its start (batch.h), an
 * operation is the ring's part alone; a bare operation of a holder is one
 * load and one compare more (ds_role_held), with nothing to give back
 * after it.
 *
 * enqueue, by the producer. The read-only words are read before any store
 * into a slot (which the compiler must assume may alias them). The producer
 * caches the first position it may not fill (plimit: chead + capacity), so
 * that the common case is one compare with its own tail; indices count up
 * from 0 and never wrap (2^64 operations).
 */
static __always_inline int ds_spsc_push_held(struct ds_spsc __arena *d, ap_u64 key, ap_u64 val)
{
	ap_u64 mask = d->mask, slots = d->slots, tail, limit;
	struct ds_kv __arena *s;

	tail = arena_atomic_load(&d->ptail, ARENA_RELAXED);
	limit = arena_atomic_load(&d->plimit, ARENA_RELAXED);
	if (tail >= limit) {
		limit = arena_atomic_load(&d->chead, ARENA_ACQUIRE) + mask + 1;
		arena_atomic_store(&d->plimit, limit, ARENA_RELAXED);
		if (tail >= limit)
			return DS_FULL;
	}
	s = ARENA_PTR(struct ds_kv, slots) + (tail & mask);
	s->key = key;
	s->val = val;
	arena_atomic_store(&d->ptail, tail + 1, ARENA_RELEASE);
	return DS_OK;
}

/* dequeue, by the consumer. The slot is read into locals and chead moved
 * before the results are written out: a store through key or val (which
 * may alias the ring's words, as far as the compiler knows) then comes
 * last, and nothing is read back after it. */
static __always_inline int ds_spsc_pop_held(struct ds_spsc __arena *d, ap_u64 *key, ap_u64 *val)
{
	ap_u64 mask = d->mask, slots = d->slots, head, seen, k, v;
	struct ds_kv __arena *s;

	head = arena_atomic_load(&d->chead, ARENA_RELAXED);
	seen = arena_atomic_load(&d->ccache, ARENA_RELAXED);
	if (head == seen) {
		seen = arena_atomic_load(&d->ptail, ARENA_ACQUIRE);
		arena_atomic_store(&d->ccache, seen, ARENA_RELAXED);
		if (head == seen)
			return DS_NOT_FOUND;
	}
	s = ARENA_PTR(struct ds_kv, slots) + (head & mask);
	k = s->key;
	v = s->val;
	arena_atomic_store(&d->chead, head + 1, ARENA_RELEASE);
	*key = k;
	*val = v;
	return DS_OK;
}

static __always_inline int ds_spsc_insert(struct ds_ctx *c, struct ds_spsc __arena *d, ap_u64 key, ap_u64 val)
{
	int how, res;

	if (ds_role_likely(ds_role_held(c, &d->roles, DS_ROLE_PRODUCER)))
		return ds_spsc_push_held(d, key, val);
	how = ds_role_begin_slow(c, &d->roles, DS_ROLE_PRODUCER);
	if (how < 0)
		return DS_BUSY;
	res = ds_spsc_push_held(d, key, val);
	ds_role_end(&d->roles, DS_ROLE_PRODUCER, how);
	return res;
}

static __always_inline int ds_spsc_pop(struct ds_ctx *c, struct ds_spsc __arena *d, ap_u64 *key, ap_u64 *val)
{
	int how, res;

	if (ds_role_likely(ds_role_held(c, &d->roles, DS_ROLE_CONSUMER)))
		return ds_spsc_pop_held(d, key, val);
	how = ds_role_begin_slow(c, &d->roles, DS_ROLE_CONSUMER);
	if (how < 0)
		return DS_BUSY;
	res = ds_spsc_pop_held(d, key, val);
	ds_role_end(&d->roles, DS_ROLE_CONSUMER, how);
	return res;
}

static __always_inline int ds_spsc_delete(struct ds_ctx *c, struct ds_spsc __arena *d, ap_u64 key, ap_u64 *val)
{
	(void)c; (void)d; (void)key; (void)val;
	return DS_INVALID;
}

static __always_inline int ds_spsc_search(struct ds_ctx *c, struct ds_spsc __arena *d, ap_u64 key, ap_u64 *val)
{
	(void)c; (void)d; (void)key; (void)val;
	return DS_INVALID;
}

/* Front to back (quiescent snapshot). */
static __always_inline int ds_spsc_iterate(struct ds_ctx *c, struct ds_spsc __arena *d, ap_u64 lo, ap_u64 hi,
					   struct ds_kv __arena *out, ap_u64 cap, ap_u64 *n)
{
	(void)c;
	ap_u64 pos = arena_atomic_load(&d->chead, ARENA_ACQUIRE);
	ap_u64 end = arena_atomic_load(&d->ptail, ARENA_ACQUIRE);

	*n = 0;
	while (pos < end && can_loop) {
		struct ds_kv __arena *s = ds_spsc_slot(d, pos);

		if (s->key >= lo && s->key < hi) {
			if (*n >= cap)
				return DS_FULL;
			out[*n].key = s->key;
			out[*n].val = s->val;
			*n += 1;
		}
		pos++;
	}
	return pos < end ? DS_BUSY : DS_OK;
}

/* Quiescent: 0 <= ptail - chead <= capacity, roles free, caches behind
 * the indices they copy (plimit: at most chead + capacity, at least ptail). */
static __always_inline int ds_spsc_verify(struct ds_ctx *c, struct ds_spsc __arena *d, struct ds_verify *v)
{
	(void)c;
	ap_u64 head, tail, cap, pos;

	v->count = v->keysum = v->valsum = v->where = 0;
	if (ds_head_check(&d->head, DS_TYPE_spsc))
		return DS_CORRUPT;
	cap = d->mask + 1;
	if (!d->mask || (d->mask & cap) || !ds_node_ok(d->slots)) {
		v->where = 1;
		return DS_CORRUPT;
	}
	if (ds_roles_busy(&d->roles)) {
		v->where = 2;
		return DS_BUSY;
	}
	head = arena_atomic_load(&d->chead, ARENA_ACQUIRE);
	tail = arena_atomic_load(&d->ptail, ARENA_ACQUIRE);
	if (tail - head > cap || d->plimit - cap > head || d->plimit < tail || d->ccache > tail) {
		v->where = 3;
		return DS_CORRUPT;
	}
	for (pos = head; pos < tail && can_loop; pos++) {
		struct ds_kv __arena *s = ds_spsc_slot(d, pos);

		v->count++;
		v->keysum += s->key;
		v->valsum += s->val;
	}
	return DS_OK;
}

#endif /* DS_SPSC_H */
