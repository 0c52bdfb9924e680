/* SPDX-License-Identifier: MIT */
/*
 * ds_msqueue: the Michael-Scott lock-free FIFO queue (PODC 1996), any
 * number of producers and consumers on both sides.
 *
 * A singly linked list from qhead to qtail that always holds a dummy node
 * first: the element at the front lives in qhead->next. Enqueue links a new
 * node after the last one (CAS on its next) and then swings qtail (any
 * thread that finds qtail lagging helps). Dequeue reads the front element
 * out of qhead->next and swings qhead to it; the old dummy is retired, and
 * the dequeued node becomes the new dummy. Epoch reclamation keeps every
 * node that a concurrent operation may still read alive, which also rules
 * out ABA on qhead and qtail without counted pointers.
 */
#ifndef DS_MSQUEUE_H
#define DS_MSQUEUE_H

#include "ds_api.h"


struct msq_node {
	ap_u64 next;
	ap_u64 key;
	ap_u64 val;
};

struct ds_msqueue {
	struct ds_head head;
	ap_u64 qhead __arena_cacheline_aligned; /* the dummy node; consumers CAS it */
	ap_u64 qtail __arena_cacheline_aligned; /* the last node or one before; producers CAS it */
};

#define DS_META_msqueue \
		.name = "msqueue",                                                             \
		.description = "Michael-Scott FIFO queue, nodes reclaimed by epochs",          \
		.progress = "lock-free",                                                       \
		.flags = DS_F_LOCK_FREE | DS_F_FIFO | DS_F_RECLAIM,                            \
		.model = DS_MODEL_MPMC,                                                        \
		.ops = DS_OP_BIT(DS_OP_INIT) | DS_OP_BIT(DS_OP_INSERT) | DS_OP_BIT(DS_OP_POP) |      \
		       DS_OP_BIT(DS_OP_VERIFY) | DS_OP_BIT(DS_OP_ITERATE) | DS_OP_BIT(DS_OP_STATS), \
		.node_size = sizeof(struct msq_node) + ARENA_OBJ_HDR,                          \
		.head_size = sizeof(struct ds_msqueue),

static __always_inline int ds_msqueue_init(struct ds_ctx *c, struct ds_msqueue __arena *d,
					   const struct ds_config *cfg)
{
	struct msq_node __arena *dummy = (struct msq_node __arena *)ds_alloc(c, sizeof(struct msq_node));

	if (!dummy)
		return DS_NOMEM;
	arena_store_once(&dummy->next, 0);
	arena_store_once(&dummy->key, 0);
	arena_store_once(&dummy->val, 0);
	ds_head_init(c, &d->head, DS_TYPE_msqueue, cfg);
	arena_store_once(&d->qhead, ARENA_ADDR(dummy));
	arena_store_once(&d->qtail, ARENA_ADDR(dummy));
	ds_head_publish(&d->head);
	return DS_OK;
}

/* enqueue */
static __always_inline int ds_msqueue_insert(struct ds_ctx *c, struct ds_msqueue __arena *d, ap_u64 key,
					     ap_u64 val)
{
	struct msq_node __arena *node = (struct msq_node __arena *)ds_alloc(c, sizeof(struct msq_node));

	if (!node)
		return DS_NOMEM;
	node->key = key;
	node->val = val;
	arena_atomic_store(&node->next, 0, ARENA_RELAXED);
	while (can_loop) {
		ap_u64 tail = arena_atomic_load(&d->qtail, ARENA_ACQUIRE);
		struct msq_node __arena *t = ARENA_PTR(struct msq_node, tail);
		ap_u64 next = arena_atomic_load(&t->next, ARENA_ACQUIRE);

		if (tail != arena_atomic_load(&d->qtail, ARENA_ACQUIRE))
			continue;
		if (next) {
			/* qtail lags: help it on */
			arena_atomic_cmpxchg(&d->qtail, tail, next, ARENA_ACQ_REL);
			continue;
		}
		/* the linearization point: release publishes key and val */
		if (arena_atomic_cmpxchg(&t->next, 0, ARENA_ADDR(node), ARENA_ACQ_REL) == 0) {
			ds_test_step(5);
			arena_atomic_cmpxchg(&d->qtail, tail, ARENA_ADDR(node), ARENA_ACQ_REL);
			return DS_OK;
		}
	}
	/* never linked: nobody can have seen it */
	ds_free(c, node);
	return DS_BUSY;
}

/* dequeue */
static __always_inline int ds_msqueue_pop(struct ds_ctx *c, struct ds_msqueue __arena *d, ap_u64 *key,
					  ap_u64 *val)
{
	while (can_loop) {
		ap_u64 head = arena_atomic_load(&d->qhead, ARENA_ACQUIRE);
		struct msq_node __arena *h = ARENA_PTR(struct msq_node, head);
		ap_u64 next = arena_atomic_load(&h->next, ARENA_ACQUIRE);
		struct msq_node __arena *n;
		ap_u64 k, v;

		if (head != arena_atomic_load(&d->qhead, ARENA_ACQUIRE))
			continue;
		if (!next)
			return DS_NOT_FOUND; /* empty */
		n = ARENA_PTR(struct msq_node, next);
		/* read before the CAS: afterwards another dequeue may retire n */
		k = n->key;
		v = n->val;
		/* qhead must not pass qtail (an enqueuer could then read the
		 * retired dummy through qtail). qtail can still be head only
		 * while n is the last node: a node linked after n was linked by
		 * an enqueuer that had read qtail == n, and qtail only moves on.
		 * So qtail, the producers' line, is read only when n has no
		 * successor yet: a consumer behind its producers never reads it. */
		if (!arena_atomic_load(&n->next, ARENA_ACQUIRE) && arena_atomic_load(&d->qtail, ARENA_ACQUIRE) == head) {
			arena_atomic_cmpxchg(&d->qtail, head, next, ARENA_ACQ_REL);
			continue;
		}
#ifdef DS_TEST_BROKEN_QUEUE_DUP
		/* A deliberately broken variant, compiled only by tests/c/lin_driver.c to show
		 * that the linearizability checker catches it: check-then-store in place of
		 * the compare-and-swap, so two dequeues that read the same head both return
		 * its successor. The pause widens the window so that a short run meets it;
		 * the old dummy is not retired (two winners would retire it twice). */
		if (arena_atomic_load(&d->qhead, ARENA_ACQUIRE) == head) {
			ds_test_pause();
			arena_atomic_store(&d->qhead, next, ARENA_RELEASE);
			*key = k;
			*val = v;
			return DS_OK;
		}
		(void)c;
		(void)h;
#else
		if (arena_atomic_cmpxchg(&d->qhead, head, next, ARENA_ACQ_REL) == head) {
			ds_retire(c, h);
			*key = k;
			*val = v;
			return DS_OK;
		}
#endif
	}
	return DS_BUSY;
}

static __always_inline int ds_msqueue_delete(struct ds_ctx *c, struct ds_msqueue __arena *d, ap_u64 key,
					     ap_u64 *val)
{
	(void)val;
	(void)c; (void)d; (void)key;
	return DS_INVALID;
}

static __always_inline int ds_msqueue_search(struct ds_ctx *c, struct ds_msqueue __arena *d, ap_u64 key,
					     ap_u64 *val)
{
	(void)val;
	(void)c; (void)d; (void)key;
	return DS_INVALID;
}

/* Front to back, elements whose key is in [lo, hi) (quiescent snapshot). */
static __always_inline int ds_msqueue_iterate(struct ds_ctx *c, struct ds_msqueue __arena *d, ap_u64 lo,
					      ap_u64 hi, struct ds_kv __arena *out, ap_u64 cap, ap_u64 *n)
{
	(void)c;
	ap_u64 cur = arena_atomic_load(&ARENA_PTR(struct msq_node, d->qhead)->next, ARENA_ACQUIRE);

	*n = 0;
	while (cur && can_loop) {
		struct msq_node __arena *nd = ARENA_PTR(struct msq_node, cur);

		if (nd->key >= lo && nd->key < hi) {
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

/* Quiescent: a chain of live nodes from qhead, no cycle, qtail is its last node. */
static __always_inline int ds_msqueue_verify(struct ds_ctx *c, struct ds_msqueue __arena *d, struct ds_verify *v)
{
	ap_u64 cur, last, limit, n = 0;

	v->count = v->keysum = v->valsum = v->where = 0;
	if (ds_head_check(&d->head, DS_TYPE_msqueue))
		return DS_CORRUPT;
	limit = ds_walk_limit(c);
	last = arena_atomic_load(&d->qhead, ARENA_ACQUIRE);
	if (!ds_node_ok(last)) {
		v->where = 1;
		return DS_CORRUPT;
	}
	cur = arena_atomic_load(&ARENA_PTR(struct msq_node, last)->next, ARENA_ACQUIRE);
	while (cur && can_loop) {
		struct msq_node __arena *nd = ARENA_PTR(struct msq_node, cur);

		if (!ds_node_ok(cur)) {
			v->where = 2;
			return DS_CORRUPT;
		}
		if (++n > limit) {
			v->where = 3;
			return DS_CORRUPT;
		}
		v->count++;
		v->keysum += nd->key;
		v->valsum += nd->val;
		last = cur;
		cur = arena_atomic_load(&nd->next, ARENA_ACQUIRE);
	}
	if (cur)
		return DS_BUSY;
	if (arena_atomic_load(&d->qtail, ARENA_ACQUIRE) != last) {
		v->where = 4;
		return DS_CORRUPT;
	}
	return DS_OK;
}

#endif /* DS_MSQUEUE_H */
