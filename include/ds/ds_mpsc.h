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
 * from the consumer until it resumes (pop says DS_BUSY then). Empty
 * (DS_NOT_FOUND) only when no push is under way: behind an unlinked push
 * a later one may have returned, so "empty" there would not be
 * linearizable; that costs a load of qhead on an empty queue's pop.
 *
 * A consumer killed holding the role is taken over by the next one (role.h).
 * Killed mid-pop, it leaves a queue the next consumer can go on with: it
 * changes shared state by single stores of qtail, except when it pops the
 * last node, where it puts the stub back behind it (ds_mpsc_restub). That is
 * a compare-and-swap of qhead from the node to the stub and then the node's
 * link, with the node recorded in `relink` around the two: a consumer that
 * finds the queue stopped at the recorded node completes the link once it
 * can tell that the stub went in (ds_mpsc_finish_restub). A consumer killed
 * anywhere loses at most the element it was returning (qtail moved, the
 * values not yet handed back), and that node's memory.
 *
 * A producer stopped or killed between its exchange and its link hides the
 * elements behind it for as long as it stays there (the algorithm's: the
 * link it owes is in its registers alone); pop says DS_BUSY meanwhile.
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
	ap_u64 relink;                          /* the node the consumer is putting the stub behind, 0: none */
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
	arena_store_once(&d->relink, 0);
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
	ds_test_step(4);
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

/*
 * The consumer puts the stub behind tail, the last node, so that tail gets a
 * successor and can be popped. A compare-and-swap from tail (not the
 * producers' exchange) so that a consumer taking over can tell whether the
 * stub went in: the stub is out of the queue here, its link is cleared first
 * and it is reachable only through this swap, so "qhead is the stub, or the
 * stub has a successor" means the swap happened. A failed swap means a
 * producer got tail as its predecessor and links it itself. Returns tail's
 * successor, 0 if there is none yet.
 */
static __always_inline ap_u64 ds_mpsc_restub(struct ds_mpsc __arena *d, ap_u64 tail)
{
	ap_u64 stub = ARENA_ADDR(&d->stub);

	arena_atomic_store(&d->stub.next, 0, ARENA_RELAXED);
	arena_atomic_store(&d->relink, tail, ARENA_RELEASE);
	ds_test_step(1);
	/* full barrier: the cleared link and the record are visible before the stub is reachable */
	if (arena_atomic_cmpxchg(&d->qhead, tail, stub, ARENA_ACQ_REL) == tail) {
		ds_test_step(2);
		arena_atomic_store(&ARENA_PTR(struct mpsc_node, tail)->next, stub, ARENA_RELEASE);
	}
	ds_test_step(3);
	arena_atomic_store(&d->relink, 0, ARENA_RELEASE);
	return arena_atomic_load(&ARENA_PTR(struct mpsc_node, tail)->next, ARENA_ACQUIRE);
}

/* While a consumer's record is set: 1 when the swap that puts the stub
 * back happened (head: qhead as read). The stub is out of the queue before
 * it and reachable only through it, and its link was cleared first, so it
 * is in once it is the last node or has a successor. */
static __always_inline int ds_mpsc_stub_queued(struct ds_mpsc __arena *d, ap_u64 head)
{
	return head == ARENA_ADDR(&d->stub) || arena_atomic_load(&d->stub.next, ARENA_ACQUIRE);
}

/*
 * tail has no successor and is not qhead, and a consumer recorded it in
 * relink: a consumer died putting the stub behind it. If its swap happened,
 * link tail to the stub as it would have. If the stub is not the last node
 * and has no successor yet, either the swap did not happen and a producer is
 * linking tail, or it did and a producer is linking the stub: 0, try again
 * later, as behind any producer mid-push. The record can outlive its pop
 * only until the consumer next passes the stub, which clears it first; till
 * then the stub's link stays as the swap's step left it, so a later node at
 * the same address cannot be mistaken for the recorded one.
 */
static __always_inline ap_u64 ds_mpsc_finish_restub(struct ds_mpsc __arena *d, ap_u64 tail)
{
	ap_u64 stub = ARENA_ADDR(&d->stub);

	if (!ds_mpsc_stub_queued(d, arena_atomic_load(&d->qhead, ARENA_ACQUIRE)))
		return 0;
	arena_atomic_store(&ARENA_PTR(struct mpsc_node, tail)->next, stub, ARENA_RELEASE);
	arena_atomic_store(&d->relink, 0, ARENA_RELEASE);
	return stub;
}

/* pop, by the holder of the consumer role: the queue's work only (a batch
 * that claimed the role at its start calls this directly) */
static __always_inline int ds_mpsc_pop_held(struct ds_ctx *c, struct ds_mpsc __arena *d, ap_u64 *key, ap_u64 *val)
{
	ap_u64 stub = ARENA_ADDR(&d->stub), tail, next;

	tail = arena_atomic_load(&d->qtail, ARENA_RELAXED);
	next = arena_atomic_load(&ARENA_PTR(struct mpsc_node, tail)->next, ARENA_ACQUIRE);
	if (tail == stub) {
		/* Empty only if no producer is mid-push: a push after one that
		 * has exchanged but not linked may have returned already, and
		 * "empty" would then contradict it. */
		if (!next)
			return arena_atomic_load(&d->qhead, ARENA_ACQUIRE) == stub ? DS_NOT_FOUND : DS_BUSY;
		/* any record is older than the stub's last insertion */
		if (arena_atomic_load(&d->relink, ARENA_RELAXED))
			arena_atomic_store(&d->relink, 0, ARENA_RELAXED);
		arena_atomic_store(&d->qtail, next, ARENA_RELAXED);
		tail = next;
		next = arena_atomic_load(&ARENA_PTR(struct mpsc_node, tail)->next, ARENA_ACQUIRE);
	}
	if (!next) {
		/* tail looks last: it is, unless a producer is between its
		 * exchange and its link, or a consumer died between the stub's
		 * swap and its link */
		if (tail == arena_atomic_load(&d->qhead, ARENA_ACQUIRE))
			next = ds_mpsc_restub(d, tail);
		else if (tail == arena_atomic_load(&d->relink, ARENA_ACQUIRE))
			next = ds_mpsc_finish_restub(d, tail);
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

/*
 * cur's successor for a walk of a quiescent queue: its link, or the stub
 * when a consumer died after the swap that put the stub behind cur and
 * before the link (the next pop completes it). In a quiescent queue only
 * qhead lacks a link, so the record cannot point such a walk astray.
 */
static __always_inline ap_u64 ds_mpsc_walk_next(struct ds_mpsc __arena *d, ap_u64 cur)
{
	ap_u64 stub = ARENA_ADDR(&d->stub), head;
	ap_u64 next = arena_atomic_load(&ARENA_PTR(struct mpsc_node, cur)->next, ARENA_ACQUIRE);

	if (next || cur == stub || cur != arena_atomic_load(&d->relink, ARENA_ACQUIRE))
		return next;
	head = arena_atomic_load(&d->qhead, ARENA_ACQUIRE);
	if (head != cur && ds_mpsc_stub_queued(d, head))
		return stub;
	return 0;
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
		cur = ds_mpsc_walk_next(d, cur);
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
		cur = ds_mpsc_walk_next(d, cur);
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
