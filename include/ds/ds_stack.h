/* SPDX-License-Identifier: MIT */
/*
 * ds_stack: a Treiber stack (IBM 1986), CK-style "upmc": any number of
 * pushers and poppers on both sides.
 *
 * top is a link word; push links a new node in front of it with one
 * compare-and-swap, pop swings top to the first node's successor. A pop
 * that read top == A and A->next == B must not succeed after A was popped,
 * freed, reused and pushed again (ABA): the node is retired to epoch
 * reclamation instead of freed, so A cannot come back while the pop's
 * critical section is open, and the plain compare-and-swap is safe.
 */
#ifndef DS_STACK_H
#define DS_STACK_H

#include "ds_api.h"

struct stk_node {
	ap_u64 next;
	ap_u64 key;
	ap_u64 val;
};

struct ds_stack {
	struct ds_head head;
	ap_u64 top __arena_cacheline_aligned;
};

#define DS_META_stack                                                                          \
	.name = "stack",                                                                       \
	.description = "Treiber stack (CK-style upmc), nodes reclaimed by epochs",             \
	.progress = "lock-free",                                                               \
	.flags = DS_F_LOCK_FREE | DS_F_LIFO | DS_F_RECLAIM,                                    \
	.model = DS_MODEL_MPMC,                                                                \
	.ops = DS_OP_BIT(DS_OP_INIT) | DS_OP_BIT(DS_OP_INSERT) | DS_OP_BIT(DS_OP_POP) |              \
	       DS_OP_BIT(DS_OP_VERIFY) | DS_OP_BIT(DS_OP_ITERATE) | DS_OP_BIT(DS_OP_STATS),         \
	.node_size = sizeof(struct stk_node) + ARENA_OBJ_HDR,                                  \
	.head_size = sizeof(struct ds_stack),

static __always_inline int ds_stack_init(struct ds_ctx *c, struct ds_stack __arena *d, const struct ds_config *cfg)
{
	ds_head_init(c, &d->head, DS_TYPE_stack, cfg);
	arena_store_once(&d->top, 0);
	ds_head_publish(&d->head);
	return DS_OK;
}

/* push */
static __always_inline int ds_stack_insert(struct ds_ctx *c, struct ds_stack __arena *d, ap_u64 key, ap_u64 val)
{
	struct stk_node __arena *n = (struct stk_node __arena *)ds_alloc(c, sizeof(struct stk_node));
	ap_u64 top;

	if (!n)
		return DS_NOMEM;
	n->key = key;
	n->val = val;
	top = arena_atomic_load(&d->top, ARENA_RELAXED);
	while (can_loop) {
		ap_u64 seen;

		arena_atomic_store(&n->next, top, ARENA_RELAXED);
		/* release: the node's fields before the node */
		seen = arena_atomic_cmpxchg(&d->top, top, ARENA_ADDR(n), ARENA_ACQ_REL);
		if (seen == top)
			return DS_OK;
		top = seen;
	}
	ds_free(c, n);
	return DS_BUSY;
}

/* pop */
static __always_inline int ds_stack_pop(struct ds_ctx *c, struct ds_stack __arena *d, ap_u64 *key, ap_u64 *val)
{
	ap_u64 top = arena_atomic_load(&d->top, ARENA_ACQUIRE);

	while (can_loop) {
		struct stk_node __arena *n;
		ap_u64 next, seen;

		if (!top)
			return DS_NOT_FOUND;
		n = ARENA_PTR(struct stk_node, top);
		next = arena_atomic_load(&n->next, ARENA_RELAXED);
		seen = arena_atomic_cmpxchg(&d->top, top, next, ARENA_ACQ_REL);
		if (seen == top) {
			*key = n->key;
			*val = n->val;
			ds_retire(c, n);
			return DS_OK;
		}
		top = seen;
	}
	return DS_BUSY;
}

static __always_inline int ds_stack_delete(struct ds_ctx *c, struct ds_stack __arena *d, ap_u64 key, ap_u64 *val)
{
	(void)c; (void)d; (void)key; (void)val;
	return DS_INVALID;
}

static __always_inline int ds_stack_search(struct ds_ctx *c, struct ds_stack __arena *d, ap_u64 key, ap_u64 *val)
{
	(void)c; (void)d; (void)key; (void)val;
	return DS_INVALID;
}

/* Top to bottom, elements whose key is in [lo, hi) (quiescent snapshot). */
static __always_inline int ds_stack_iterate(struct ds_ctx *c, struct ds_stack __arena *d, ap_u64 lo, ap_u64 hi,
					    struct ds_kv __arena *out, ap_u64 cap, ap_u64 *n)
{
	(void)c;
	ap_u64 cur = arena_atomic_load(&d->top, ARENA_ACQUIRE);

	*n = 0;
	while (cur && can_loop) {
		struct stk_node __arena *nd = ARENA_PTR(struct stk_node, cur);

		if (nd->key >= lo && nd->key < hi) {
			if (*n >= cap)
				return DS_FULL;
			out[*n].key = nd->key;
			out[*n].val = nd->val;
			*n += 1;
		}
		cur = arena_atomic_load(&nd->next, ARENA_RELAXED);
	}
	return cur ? DS_BUSY : DS_OK;
}

static __always_inline int ds_stack_verify(struct ds_ctx *c, struct ds_stack __arena *d, struct ds_verify *v)
{
	ap_u64 cur, limit, n = 0;

	v->count = v->keysum = v->valsum = v->where = 0;
	if (ds_head_check(&d->head, DS_TYPE_stack))
		return DS_CORRUPT;
	limit = ds_walk_limit(c);
	cur = arena_atomic_load(&d->top, ARENA_ACQUIRE);
	while (cur && can_loop) {
		struct stk_node __arena *nd = ARENA_PTR(struct stk_node, cur);

		if (!ds_node_ok(cur)) {
			v->where = 1;
			return DS_CORRUPT;
		}
		if (++n > limit) {
			v->where = 2;
			return DS_CORRUPT;
		}
		v->count++;
		v->keysum += nd->key;
		v->valsum += nd->val;
		cur = arena_atomic_load(&nd->next, ARENA_RELAXED);
	}
	return cur ? DS_BUSY : DS_OK;
}

#endif /* DS_STACK_H */
