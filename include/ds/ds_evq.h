/* SPDX-License-Identifier: MIT */
/*
 * ds_evq: the pipeline's event queue (include/evq.h) as a registered
 * structure. Not a second copy: the same ring (struct evq), with the typed
 * wrappers of EVQ_DEFINE over (key, value) records (evq_kv_*), and this
 * header adds the contract of ds_api.h around it.
 *
 * insert  q_push (publish mode FENCED: the callers are userspace and
 *         sleepable SEC("syscall") programs); a full ring is DS_FULL and too
 *         many lost races DS_BUSY, both counted in the ring's drop counters
 *         as in the pipeline.
 * pop     one record, in ticket order, by the holder of the consumer role
 *         (role.h: claimed once per batch or attach; DS_BUSY for another
 *         consumer): the ring has one consumer, and the role makes that so
 *         whichever side calls. DS_NOT_FOUND when the ring is
 *         empty; DS_BUSY when the slot at head is reserved and not yet
 *         published (its producer is between reserve and publish).
 * search, delete: DS_INVALID.
 *
 * Progress: producers never wait (a bounded number of compare-and-swap
 * tries, then the record is dropped and counted); the consumer waits on a
 * producer stopped between reserve and publish. No allocation per
 * operation, no reclamation.
 */
#ifndef DS_EVQ_H
#define DS_EVQ_H

#include "ds_api.h"
#include "evq.h"

#define DS_EVQ_DEFAULT_CAP 1024
#define DS_EVQ_MAX_CAP (1ULL << 20)

/* a record: two plain stores (not a struct copy, which clang may make a
 * memcpy that the BPF backend cannot lower for the arena) */
static __always_inline void ds_evq_copy(struct ds_kv __arena *dst, const struct ds_kv *src)
{
	dst->key = src->key;
	dst->val = src->val;
}

/* the ring's sequence number is taken and counted, but not stored */
#define ds_evq_stamp(kv, s) ((void)(kv), (void)(s))

EVQ_DEFINE(evq_kv, struct ds_kv, ds_evq_copy, ds_evq_stamp)

struct ds_evq {
	struct ds_head head;
	struct ds_roles roles; /* the consumer's (role.h) */
	struct evq q;
};

#define DS_META_evq                                                                            \
	.name = "evq",                                                                         \
	.description = "the pipeline's event queue: bounded MPSC ring, tickets by CAS, commit words", \
	.progress = "producers never wait (drop and count when full or contended); consumer waits on a producer mid-publish", \
	.flags = DS_F_BOUNDED | DS_F_FIFO,                                                     \
	.model = DS_MODEL_MPSC,                                                                \
	.ops = DS_OP_BIT(DS_OP_INIT) | DS_OP_BIT(DS_OP_INSERT) | DS_OP_BIT(DS_OP_POP) |              \
	       DS_OP_BIT(DS_OP_VERIFY) | DS_OP_BIT(DS_OP_ITERATE) | DS_OP_BIT(DS_OP_STATS),         \
	.node_size = sizeof(struct evq_kv_slot),                                               \
	.head_size = sizeof(struct ds_evq),

/* cfg->capacity: slots, rounded up to a power of two (default 1024). */
static __always_inline int ds_evq_init(struct ds_ctx *c, struct ds_evq __arena *d, const struct ds_config *cfg)
{
	ap_u64 cap = cfg && cfg->capacity ? cfg->capacity : DS_EVQ_DEFAULT_CAP;
	struct evq_kv_slot __arena *slots;

	if (cap > DS_EVQ_MAX_CAP)
		return DS_INVALID;
	cap = ds_pow2(cap);
	slots = (struct evq_kv_slot __arena *)ds_alloc(c, cap * sizeof(struct evq_kv_slot));
	if (!slots)
		return DS_NOMEM;
	if (evq_kv_init(&d->q, slots, cap)) {
		ds_free(c, slots);
		return DS_BUSY;
	}
	ds_head_init(c, &d->head, DS_TYPE_evq, cfg);
	arena_store_once(&d->head.cfg.capacity, cap);
	ds_roles_init(&d->roles);
	ds_head_publish(&d->head);
	return DS_OK;
}

static __always_inline int ds_evq_insert(struct ds_ctx *c, struct ds_evq __arena *d, ap_u64 key, ap_u64 val)
{
	struct ds_kv kv = {.key = key, .val = val};
	int res;

	(void)c;
	res = evq_kv_push(&d->q, &kv, EVQ_PUBLISH_FENCED);
	if (res >= 0) /* EVQ_OK, or EVQ_OK_WAKE: nobody sleeps on this ring */
		return DS_OK;
	return res == EVQ_DROP_FULL ? DS_FULL : DS_BUSY;
}

/* one record, by the holder of the consumer role: the ring's work only (a
 * batch that claimed the role at its start calls this directly) */
static __always_inline int ds_evq_pop_held(struct ds_evq __arena *d, ap_u64 *key, ap_u64 *val)
{
	struct ds_kv __arena *rec;
	ap_u64 head;

	head = arena_atomic_load(&d->q.head, ARENA_RELAXED);
	rec = evq_kv_peek(&d->q, head);
	if (rec) {
		*key = rec->key;
		*val = rec->val;
		evq_kv_release(&d->q, head + 1);
		return DS_OK;
	}
	/* A producer holds the ticket at head and has not published it: later
	 * tickets may be published already, so the ring is not empty and
	 * "empty" would not be linearizable. Retry. */
	if (arena_atomic_load(&d->q.tail, ARENA_ACQUIRE) != head)
		return DS_BUSY;
	return DS_NOT_FOUND;
}

/* the single consumer: one record */
static __always_inline int ds_evq_pop(struct ds_ctx *c, struct ds_evq __arena *d, ap_u64 *key, ap_u64 *val)
{
	int res, how = ds_role_begin(c, &d->roles, DS_ROLE_CONSUMER);

	if (how < 0)
		return DS_BUSY;
	res = ds_evq_pop_held(d, key, val);
	ds_role_end(&d->roles, DS_ROLE_CONSUMER, how);
	return res;
}

static __always_inline int ds_evq_delete(struct ds_ctx *c, struct ds_evq __arena *d, ap_u64 key, ap_u64 *val)
{
	(void)c; (void)d; (void)key; (void)val;
	return DS_INVALID;
}

static __always_inline int ds_evq_search(struct ds_ctx *c, struct ds_evq __arena *d, ap_u64 key, ap_u64 *val)
{
	(void)c; (void)d; (void)key; (void)val;
	return DS_INVALID;
}

/* Front to back over the published records (quiescent snapshot); DS_BUSY
 * when a record in [head, tail) is still being written. */
static __always_inline int ds_evq_iterate(struct ds_ctx *c, struct ds_evq __arena *d, ap_u64 lo, ap_u64 hi,
					  struct ds_kv __arena *out, ap_u64 cap, ap_u64 *n)
{
	ap_u64 pos = arena_atomic_load(&d->q.head, ARENA_ACQUIRE);
	ap_u64 end = arena_atomic_load(&d->q.tail, ARENA_ACQUIRE);
	int res = DS_OK;

	(void)c;
	*n = 0;
	while (pos < end && can_loop) {
		struct ds_kv __arena *rec = evq_kv_peek(&d->q, pos);

		pos++;
		if (!rec) {
			res = DS_BUSY;
			continue;
		}
		if (rec->key >= lo && rec->key < hi) {
			if (*n >= cap)
				return DS_FULL;
			out[*n].key = rec->key;
			out[*n].val = rec->val;
			*n += 1;
		}
	}
	return pos < end ? DS_BUSY : res;
}

/*
 * Quiescent, for every slot of the ring from head to head + capacity:
 *   - head <= tail <= head + capacity, high_water <= capacity;
 *   - tickets in [head, tail) are published (commit = ticket + 1); one whose
 *     commit still says the previous round is in flight (DS_BUSY);
 *   - the other slots hold their previous round's ticket (or nothing yet);
 *   - every push is accounted for: seq = tail + dropped_full + dropped_busy
 *     (DS_BUSY while a push is between its sequence number and its ticket).
 * The consumer role held: DS_BUSY.
 */
static __always_inline int ds_evq_verify(struct ds_ctx *c, struct ds_evq __arena *d, struct ds_verify *v)
{
	struct evq __arena *q = &d->q;
	ap_u64 head, tail, cap, seq, drops, pos;
	int busy = 0;

	(void)c;
	v->count = v->keysum = v->valsum = v->where = 0;
	if (ds_head_check(&d->head, DS_TYPE_evq))
		return DS_CORRUPT;
	if (ds_roles_busy(&d->roles)) {
		v->where = 1;
		return DS_BUSY;
	}
	cap = q->capacity;
	if (cap < 2 || (cap & (cap - 1)) || q->mask != cap - 1 || cap != d->head.cfg.capacity ||
	    !ds_node_ok(ARENA_ADDR(q->slots))) {
		v->where = 2;
		return DS_CORRUPT;
	}
	drops = arena_atomic_load(&q->dropped_full, ARENA_ACQUIRE) +
		arena_atomic_load(&q->dropped_busy, ARENA_ACQUIRE);
	head = arena_atomic_load(&q->head, ARENA_ACQUIRE);
	tail = arena_atomic_load(&q->tail, ARENA_ACQUIRE);
	seq = arena_atomic_load(&q->seq, ARENA_ACQUIRE);
	if ((ap_s64)(tail - head) < 0) {
		v->where = 3;
		return DS_CORRUPT;
	}
	if (tail - head > cap) {
		v->where = 4;
		return DS_CORRUPT;
	}
	if (arena_atomic_load(&q->high_water, ARENA_RELAXED) > cap) {
		v->where = 5;
		return DS_CORRUPT;
	}
	for (pos = head; pos < head + cap && can_loop; pos++) {
		struct evq_kv_slot __arena *slot = evq_kv_slot_at(q, pos);
		ap_u64 commit = arena_atomic_load(&slot->commit, ARENA_ACQUIRE);
		/* what the slot says when its previous round was consumed */
		ap_u64 before = pos >= cap ? pos - cap + 1 : 0;

		if (pos < tail && commit == pos + 1) {
			v->count++;
			v->keysum += slot->rec.key;
			v->valsum += slot->rec.val;
		} else if (commit == before || commit == pos + 1) {
			/* in flight (reserved, not yet published), or free; a free slot
			 * already published is a push that raced this walk */
			busy |= pos < tail || commit == pos + 1;
		} else {
			v->where = 6;
			return DS_CORRUPT;
		}
	}
	if (pos < head + cap)
		return DS_BUSY;
	if (busy) {
		v->where = 7;
		return DS_BUSY;
	}
	if (seq != tail + drops) {
		v->where = 8;
		return (ap_s64)(seq - (tail + drops)) < 0 ? DS_CORRUPT : DS_BUSY;
	}
	return DS_OK;
}

#endif /* DS_EVQ_H */
