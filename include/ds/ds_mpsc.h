/* SPDX-License-Identifier: MIT */
/*
 * ds_mpsc: Dmitry Vyukov's intrusive MPSC queue. Producers (any number,
 * both sides) link a node with one exchange on qhead and one store into the
 * previous node; the single consumer walks from qtail. A stub node that
 * lives in the queue header keeps the list non-empty, so neither side ever
 * needs a compare-and-swap loop.
 *
 * The consumer returns a node only once its next link is set, and the only
 * write a producer makes to an older node is that link: so a popped node is
 * freed at once, no epoch reclamation needed.
 *
 * Model: one consumer at a time, enforced through the consumer role of
 * role.h: claimed once per batch or per attach (a bare pop claims it around
 * itself); a pop of a context that holds it touches no lock word; another
 * consumer gets DS_BUSY. Progress: producers are wait-free; a producer
 * stopped between its exchange and its link hides the elements behind it
 * from the consumer until it resumes (pop says DS_BUSY then).
 *
 * A consumer killed holding the role is taken over by the next one (role.h).
 * Killed mid-pop, it leaves a consistent queue: it changes shared state by
 * single stores of qtail and by linking the stub, which is a producer's
 * push. It loses at most the element it was popping (and that node's
 * memory), and if it died between the stub's exchange and its link, the
 * elements pushed after that stay hidden, as behind a dead producer.
 */
#ifndef DS_MPSC_H
#define DS_MPSC_H

#include "ds_api.h"

struct mpsc_node {
	ap_u64 next;
	ap_u64 key;
	ap_u64 val;
};

struct ds_mpsc {
	struct ds_head head;
	ap_u64 qhead __arena_cacheline_aligned; /* the last node pushed (producers exchange it) */
	ap_u64 qtail __arena_cacheline_aligned; /* the consumer's next node */
	struct ds_roles roles;                  /* the consumer's */
	struct mpsc_node stub __arena_cacheline_aligned;
};

#define DS_META_mpsc                                                                           \
	.name = "mpsc",                                                                        \
	.description = "Vyukov intrusive MPSC queue with a stub node",                         \
	.progress = "producers wait-free; consumer blocked only by a producer mid-push",       \
	.flags = DS_F_FIFO,                                                                    \
	.model = DS_MODEL_MPSC,                                                                \
	.ops = DS_OP_BIT(DS_OP_INIT) | DS_OP_BIT(DS_OP_INSERT) | DS_OP_BIT(DS_OP_POP) |              \
	       DS_OP_BIT(DS_OP_VERIFY) | DS_OP_BIT(DS_OP_ITERATE) | DS_OP_BIT(DS_OP_STATS),         \
	.node_size = sizeof(struct mpsc_node) + ARENA_OBJ_HDR,                                 \
	.head_size = sizeof(struct ds_mpsc),

static __always_inline int ds_mpsc_init(struct ds_ctx *c, struct ds_mpsc __arena *d, const struct ds_config *cfg)
{
	ap_u64 stub = ARENA_ADDR(&d->stub);

	ds_head_init(c, &d->head, DS_TYPE_mpsc, cfg);
	arena_store_once(&d->stub.next, 0);
	arena_store_once(&d->stub.key, 0);
	arena_store_once(&d->stub.val, 0);
	arena_store_once(&d->qhead, stub);
	arena_store_once(&d->qtail, stub);
	ds_roles_init(&d->roles);
	ds_head_publish(&d->head);
	return DS_OK;
}

static __always_inline void ds_mpsc_link(struct ds_mpsc __arena *d, ap_u64 node)
{
	ap_u64 prev;

	arena_atomic_store(&ARENA_PTR(struct mpsc_node, node)->next, 0, ARENA_RELAXED);
	/* full barrier: the node's fields are visible before it is reachable */
	prev = arena_atomic_exchange(&d->qhead, node, ARENA_ACQ_REL);
	arena_atomic_store(&ARENA_PTR(struct mpsc_node, prev)->next, node, ARENA_RELEASE);
}

/* push */
static __always_inline int ds_mpsc_insert(struct ds_ctx *c, struct ds_mpsc __arena *d, ap_u64 key, ap_u64 val)
{
	struct mpsc_node __arena *n = (struct mpsc_node __arena *)ds_alloc(c, sizeof(struct mpsc_node));

	if (!n)
		return DS_NOMEM;
	n->key = key;
	n->val = val;
	ds_mpsc_link(d, ARENA_ADDR(n));
	return DS_OK;
}

/* pop, by the holder of the consumer role: the queue's work only (a batch
 * that claimed the role at its start calls this directly) */
static __always_inline int ds_mpsc_pop_held(struct ds_ctx *c, struct ds_mpsc __arena *d, ap_u64 *key, ap_u64 *val)
{
	ap_u64 stub = ARENA_ADDR(&d->stub), tail, next;

	tail = arena_atomic_load(&d->qtail, ARENA_RELAXED);
	next = arena_atomic_load(&ARENA_PTR(struct mpsc_node, tail)->next, ARENA_ACQUIRE);
	if (tail == stub) {
		if (!next)
			return DS_NOT_FOUND;
		arena_atomic_store(&d->qtail, next, ARENA_RELAXED);
		tail = next;
		next = arena_atomic_load(&ARENA_PTR(struct mpsc_node, tail)->next, ARENA_ACQUIRE);
	}
	if (!next) {
		/* tail looks last: it is, unless a producer is between its
		 * exchange and its link */
		if (tail != arena_atomic_load(&d->qhead, ARENA_ACQUIRE))
			return DS_BUSY;
		/* put the stub behind it, so that tail gets a successor */
		ds_mpsc_link(d, stub);
		next = arena_atomic_load(&ARENA_PTR(struct mpsc_node, tail)->next, ARENA_ACQUIRE);
		if (!next)
			return DS_BUSY;
	}
	arena_atomic_store(&d->qtail, next, ARENA_RELAXED);
	*key = ARENA_PTR(struct mpsc_node, tail)->key;
	*val = ARENA_PTR(struct mpsc_node, tail)->val;
	ds_free(c, ARENA_PTR(void, tail));
	return DS_OK;
}

/* pop: the single consumer */
static __always_inline int ds_mpsc_pop(struct ds_ctx *c, struct ds_mpsc __arena *d, ap_u64 *key, ap_u64 *val)
{
	int res, how = ds_role_begin(c, &d->roles, DS_ROLE_CONSUMER);

	if (how < 0)
		return DS_BUSY;
	res = ds_mpsc_pop_held(c, d, key, val);
	ds_role_end(&d->roles, DS_ROLE_CONSUMER, how);
	return res;
}

static __always_inline int ds_mpsc_delete(struct ds_ctx *c, struct ds_mpsc __arena *d, ap_u64 key, ap_u64 *val)
{
	(void)c; (void)d; (void)key; (void)val;
	return DS_INVALID;
}

static __always_inline int ds_mpsc_search(struct ds_ctx *c, struct ds_mpsc __arena *d, ap_u64 key, ap_u64 *val)
{
	(void)c; (void)d; (void)key; (void)val;
	return DS_INVALID;
}

/* Front to back, skipping the stub (quiescent snapshot). */
static __always_inline int ds_mpsc_iterate(struct ds_ctx *c, struct ds_mpsc __arena *d, ap_u64 lo, ap_u64 hi,
					   struct ds_kv __arena *out, ap_u64 cap, ap_u64 *n)
{
	(void)c;
	ap_u64 stub = ARENA_ADDR(&d->stub);
	ap_u64 cur = arena_atomic_load(&d->qtail, ARENA_ACQUIRE);

	*n = 0;
	while (cur && can_loop) {
		struct mpsc_node __arena *nd = ARENA_PTR(struct mpsc_node, cur);

		if (cur != stub && nd->key >= lo && nd->key < hi) {
			if (*n >= cap)
				return DS_FULL;
			out[*n].key = nd->key;
			out[*n].val = nd->val;
			*n += 1;
		}
		cur = arena_atomic_load(&nd->next, ARENA_ACQUIRE);
	}
	return cur ? DS_BUSY : DS_OK;
}

/* Quiescent: from qtail, a chain of live nodes (and the stub at most once)
 * ending at qhead; the consumer role free. */
static __always_inline int ds_mpsc_verify(struct ds_ctx *c, struct ds_mpsc __arena *d, struct ds_verify *v)
{
	ap_u64 stub = ARENA_ADDR(&d->stub), cur, last = 0, limit, n = 0;
	int stubs = 0;

	v->count = v->keysum = v->valsum = v->where = 0;
	if (ds_head_check(&d->head, DS_TYPE_mpsc))
		return DS_CORRUPT;
	if (ds_roles_busy(&d->roles)) {
		v->where = 1;
		return DS_BUSY;
	}
	limit = ds_walk_limit(c);
	cur = arena_atomic_load(&d->qtail, ARENA_ACQUIRE);
	while (cur && can_loop) {
		struct mpsc_node __arena *nd = ARENA_PTR(struct mpsc_node, cur);

		if (cur == stub) {
			if (stubs) {
				v->where = 2;
				return DS_CORRUPT;
			}
			stubs = 1;
		} else {
			if (!ds_node_ok(cur)) {
				v->where = 3;
				return DS_CORRUPT;
			}
			if (++n > limit) {
				v->where = 4;
				return DS_CORRUPT;
			}
			v->count++;
			v->keysum += nd->key;
			v->valsum += nd->val;
		}
		last = cur;
		cur = arena_atomic_load(&nd->next, ARENA_ACQUIRE);
	}
	if (cur)
		return DS_BUSY;
	if (last != arena_atomic_load(&d->qhead, ARENA_ACQUIRE)) {
		v->where = 5;
		return DS_CORRUPT;
	}
	return DS_OK;
}

#endif /* DS_MPSC_H */
