/* SPDX-License-Identifier: MIT */
/*
 * ds_skiplist: an ordered map, a lock-free skip list (Fraser; Herlihy and
 * Shavit) with range iteration.
 *
 * Level 0 is a Harris-Michael list and holds the set; levels 1.. are
 * shortcuts, each a sorted sub-list of the one below. A node's levels are
 * drawn at insert (p = 1/4, up to SL_LEVELS).
 *   insert  links level 0 with one compare-and-swap (the linearization
 *           point), then the upper levels bottom-up; it stops early if the
 *           node gets deleted meanwhile.
 *   delete  marks the node's upper links top-down, then its level-0 link
 *           (the winner of that mark is the deleter, the linearization
 *           point), then runs a find, which unlinks marked nodes at every
 *           level on the key's path.
 *   search  never writes: it steps over marked nodes.
 * Reclamation. A node is unlinked from all levels only when both the
 * deleter's clean-up find and the inserter's last link are done: an insert
 * still linking level 3 may link a node whose delete has already cleaned
 * up. So the node carries two flags: the inserter sets INSERTED when it has
 * stopped linking (after a clean-up find of its own if it sees the node
 * marked), the deleter sets DELETED after its clean-up find; whoever sets
 * the second flag retires the node. Nodes are never unlinked twice (every
 * unlink is a compare-and-swap of the predecessor's link from the node),
 * and a traversal that stands on an unlinked node is protected by its
 * epoch critical section.
 */
#ifndef DS_SKIPLIST_H
#define DS_SKIPLIST_H

#include "ds_api.h"

/* 4^8 = 64K keys at the expected fan-out; more keys only lengthen the top
 * level (1M keys: ~60 nodes there). Bounded by the BPF stack: a search path
 * is 2 * 8 * SL_LEVELS bytes. */
#define SL_LEVELS 8
#define SL_INSERTED 0x1U
#define SL_DELETED 0x2U

struct sl_node {
	ap_u64 key;
	ap_u64 val;
	ap_u32 levels; /* links in next[] (1..SL_LEVELS) */
	ap_u32 flags;  /* SL_INSERTED | SL_DELETED */
	ap_u64 next[SL_LEVELS]; /* allocated to levels entries; DS_MARK when deleted at that level */
};

#define SL_NODE_SIZE(levels) (sizeof(struct sl_node) - (SL_LEVELS - (levels)) * sizeof(ap_u64))

struct ds_skiplist {
	struct ds_head head;
	ap_u64 first __arena_cacheline_aligned; /* sentinel node with SL_LEVELS links, no key */
};

#define DS_META_skiplist                                                                       \
	.name = "skiplist",                                                                    \
	.description = "lock-free skip list (Fraser / Herlihy-Shavit), ordered range iteration", \
	.progress = "lock-free; search wait-free",                                             \
	.flags = DS_F_LOCK_FREE | DS_F_KEYED | DS_F_ORDERED | DS_F_RECLAIM | DS_F_READS_LOCKFREE, \
	.model = DS_MODEL_ANY,                                                                 \
	.ops = DS_OP_BIT(DS_OP_INIT) | DS_OP_BIT(DS_OP_INSERT) | DS_OP_BIT(DS_OP_DELETE) |           \
	       DS_OP_BIT(DS_OP_POP) | DS_OP_BIT(DS_OP_SEARCH) | DS_OP_BIT(DS_OP_VERIFY) |            \
	       DS_OP_BIT(DS_OP_ITERATE) | DS_OP_BIT(DS_OP_STATS),                              \
	.node_size = SL_NODE_SIZE(1) + ARENA_OBJ_HDR,                                          \
	.head_size = sizeof(struct ds_skiplist),

static __always_inline struct sl_node __arena *sl_node(ap_u64 addr)
{
	return ARENA_PTR(struct sl_node, addr);
}

static __always_inline int ds_skiplist_init(struct ds_ctx *c, struct ds_skiplist __arena *d,
					    const struct ds_config *cfg)
{
	struct sl_node __arena *s = (struct sl_node __arena *)ds_alloc(c, sizeof(struct sl_node));
	ap_u32 i;

	if (!s)
		return DS_NOMEM;
	arena_store_once(&s->key, 0);
	arena_store_once(&s->val, 0);
	arena_store_once(&s->levels, SL_LEVELS);
	arena_store_once(&s->flags, SL_INSERTED);
	for (i = 0; i < SL_LEVELS; i++)
		arena_store_once(&s->next[i], 0);
	ds_head_init(c, &d->head, DS_TYPE_skiplist, cfg);
	arena_store_once(&d->first, ARENA_ADDR(s));
	ds_head_publish(&d->head);
	return DS_OK;
}

/* Levels for a new node, minus one: 0 with p 3/4, 1 with p 3/16, ... */
static __always_inline ap_u32 sl_random_top(struct ds_ctx *c)
{
	ap_u32 r = ds_random32(c), top = 0;

	while ((r & 3) == 0 && top < SL_LEVELS - 1) {
		top++;
		r >>= 2;
	}
	return top;
}

/*
 * A search path: for every level, the last node with key < the key looked
 * for (preds) and the first unmarked node with key >= it (succs). Each node
 * is kept as the low 32 bits of its address: an arena is at most 4 GiB and
 * starts at ARENA_BASE, whose low half is 0, and no object starts a page
 * (page and object headers come first), so 0 still means none. Half the
 * size keeps the path (64 bytes on the BPF stack) within the 512 bytes that
 * older verifiers allow the skip list's kernel batch across its calls, as
 * they round each frame up.
 */
struct sl_path {
	ap_u32 preds[SL_LEVELS];
	ap_u32 succs[SL_LEVELS];
};

_Static_assert((ARENA_BASE & 0xffffffffULL) == 0, "sl_path keeps the low half of arena addresses");

static __always_inline ap_u64 sl_path_node(ap_u32 low)
{
	return low ? ARENA_BASE + low : 0;
}

#define sl_pred(p, lvl) sl_path_node((p)->preds[lvl])
#define sl_succ(p, lvl) sl_path_node((p)->succs[lvl])

/*
 * Fill p for key, unlinking the marked nodes on the way. Returns 1 if
 * succs[0] holds key, 0 if not, -1 when the loop budget ran out.
 */
static __always_inline int sl_find_body(struct ds_skiplist __arena *d, ap_u64 key, struct sl_path *p)
{
	while (can_loop) {
		ap_u64 pred = d->first;
		int lvl, restart = 0;

		for (lvl = SL_LEVELS - 1; lvl >= 0; lvl--) {
			ap_u64 cur = DS_UNMARK(arena_atomic_load(&sl_node(pred)->next[lvl], ARENA_ACQUIRE));

			while (cur && can_loop) {
				ap_u64 succ = arena_atomic_load(&sl_node(cur)->next[lvl], ARENA_ACQUIRE);

				if (DS_MARKED(succ)) {
					if (arena_atomic_cmpxchg(&sl_node(pred)->next[lvl], cur, DS_UNMARK(succ),
								 ARENA_ACQ_REL) != cur) {
						restart = 1;
						break;
					}
					cur = DS_UNMARK(succ);
					continue;
				}
				if (sl_node(cur)->key >= key)
					break;
				pred = cur;
				cur = succ;
			}
			if (restart)
				break;
			p->preds[lvl] = (ap_u32)pred;
			p->succs[lvl] = (ap_u32)cur;
		}
		if (!restart)
			return p->succs[0] && sl_node(sl_succ(p, 0))->key == key;
	}
	return -1;
}

/* In BPF a global function, verified once: every operation calls it once
 * or more, and its level loop unrolls. */
ARENA_SUBPROG int sl_find_subprog(ap_u64 d, ap_u64 key, struct sl_path *p)
{
	if (!p)
		return -1;
	return sl_find_body(ARENA_PTR(struct ds_skiplist, d), key, p);
}

static __always_inline int sl_find(struct ds_skiplist __arena *d, ap_u64 key, struct sl_path *p)
{
#if ARENA_IS_BPF
	return sl_find_subprog(ARENA_ADDR(d), key, p);
#else
	return sl_find_body(d, key, p);
#endif
}

static __always_inline int ds_skiplist_insert(struct ds_ctx *c, struct ds_skiplist __arena *d, ap_u64 key,
					      ap_u64 val)
{
	struct sl_path p = {};
	ap_u64 node = 0;
	struct sl_node __arena *n = 0;
	ap_u32 top = sl_random_top(c), lvl;
	int r, linked = 0;

	while (can_loop) {
		r = sl_find(d, key, &p);
		if (r < 0)
			break;
		if (r) {
			if (n)
				ds_free(c, n); /* never published */
			return DS_EXISTS;
		}
		if (!n) {
			n = (struct sl_node __arena *)ds_alloc(c, SL_NODE_SIZE(top + 1));
			if (!n)
				return DS_NOMEM;
			node = ARENA_ADDR(n);
			n->key = key;
			n->val = val;
			n->levels = top + 1;
			arena_store_once(&n->flags, 0);
		}
		for (lvl = 0; lvl <= top; lvl++)
			arena_atomic_store(&n->next[lvl], sl_succ(&p, lvl), ARENA_RELAXED);
		/* the linearization point; release publishes the node */
		if (arena_atomic_cmpxchg(&sl_node(sl_pred(&p, 0))->next[0], sl_succ(&p, 0), node, ARENA_ACQ_REL) ==
		    sl_succ(&p, 0)) {
			linked = 1;
			break;
		}
	}
	if (!linked) {
		if (n)
			ds_free(c, n);
		return DS_BUSY;
	}
	for (lvl = 1; lvl <= top; lvl++) {
		int stop = 0;

		while (can_loop) {
			ap_u64 succ = sl_succ(&p, lvl);
			ap_u64 mine = arena_atomic_load(&n->next[lvl], ARENA_ACQUIRE);

			if (DS_MARKED(mine)) {
				stop = 1; /* being deleted: link no higher */
				break;
			}
			if (mine != succ && arena_atomic_cmpxchg(&n->next[lvl], mine, succ, ARENA_ACQ_REL) != mine) {
				stop = 1; /* marked meanwhile */
				break;
			}
			if (arena_atomic_cmpxchg(&sl_node(sl_pred(&p, lvl))->next[lvl], succ, node, ARENA_ACQ_REL) == succ)
				break;
			/* the neighbourhood changed: look again */
			r = sl_find(d, key, &p);
			if (r <= 0 || sl_succ(&p, 0) != node) {
				stop = 1; /* deleted (or budget gone) */
				break;
			}
		}
		if (stop)
			break;
	}
	/* if it was deleted while we linked, make sure none of our links stays;
	 * if the loop budget ran out first, leave the flag unset: the node
	 * leaks rather than being freed while still linked */
	if (DS_MARKED(arena_atomic_load(&n->next[0], ARENA_ACQUIRE)) && sl_find(d, key, &p) < 0)
		return DS_OK;
	if (arena_atomic_or(&n->flags, SL_INSERTED, ARENA_ACQ_REL) & SL_DELETED)
		ds_retire(c, n);
	return DS_OK;
}

/* Delete the node found at p->succs[0]; DS_NOT_FOUND if another delete won. */
static __always_inline int sl_delete_found(struct ds_ctx *c, struct ds_skiplist __arena *d, ap_u64 key,
					   struct sl_path *p, ap_u64 *val)
{
	struct sl_node __arena *n = sl_node(sl_succ(p, 0));
	ap_u32 lvl = n->levels;

	/* upper levels, top down */
	while (lvl > 1 && can_loop) {
		ap_u64 w;

		lvl--;
		w = arena_atomic_load(&n->next[lvl], ARENA_ACQUIRE);
		while (!DS_MARKED(w) && can_loop) {
			ap_u64 seen = arena_atomic_cmpxchg(&n->next[lvl], w, w | DS_MARK, ARENA_ACQ_REL);

			if (seen == w)
				break;
			w = seen;
		}
	}
	/* level 0: the winner deletes */
	while (can_loop) {
		ap_u64 w = arena_atomic_load(&n->next[0], ARENA_ACQUIRE);

		if (DS_MARKED(w))
			return DS_NOT_FOUND;
		if (arena_atomic_cmpxchg(&n->next[0], w, w | DS_MARK, ARENA_ACQ_REL) == w)
			break;
	}
	if (val)
		*val = n->val;
	/* unlink at every level (budget gone: leak it rather than free it linked) */
	if (sl_find(d, key, p) < 0)
		return DS_OK;
	if (arena_atomic_or(&n->flags, SL_DELETED, ARENA_ACQ_REL) & SL_INSERTED)
		ds_retire(c, n);
	return DS_OK;
}

static __always_inline int ds_skiplist_delete(struct ds_ctx *c, struct ds_skiplist __arena *d, ap_u64 key,
					      ap_u64 *val)
{
	struct sl_path p = {};
	int r = sl_find(d, key, &p);

	if (r < 0)
		return DS_BUSY;
	if (!r)
		return DS_NOT_FOUND;
	return sl_delete_found(c, d, key, &p, val);
}

/* The first node with key >= key, stepping over marked nodes; 0 if none. */
static __always_inline ap_u64 sl_seek(struct ds_skiplist __arena *d, ap_u64 key)
{
	ap_u64 pred = d->first, cur = 0;
	int lvl;

	for (lvl = SL_LEVELS - 1; lvl >= 0; lvl--) {
		cur = DS_UNMARK(arena_atomic_load(&sl_node(pred)->next[lvl], ARENA_ACQUIRE));
		while (cur && can_loop) {
			ap_u64 succ = arena_atomic_load(&sl_node(cur)->next[lvl], ARENA_ACQUIRE);

			if (DS_MARKED(succ)) {
				cur = DS_UNMARK(succ);
				continue;
			}
			if (sl_node(cur)->key >= key)
				break;
			pred = cur;
			cur = succ;
		}
	}
	return cur;
}

static __always_inline int ds_skiplist_search(struct ds_ctx *c, struct ds_skiplist __arena *d, ap_u64 key,
					      ap_u64 *val)
{
	(void)c;
	ap_u64 cur = sl_seek(d, key);

	if (!cur || sl_node(cur)->key != key)
		return DS_NOT_FOUND;
	if (val)
		*val = sl_node(cur)->val;
	return DS_OK;
}

/* Remove the smallest key. */
static __always_inline int ds_skiplist_pop(struct ds_ctx *c, struct ds_skiplist __arena *d, ap_u64 *key,
					   ap_u64 *val)
{
	while (can_loop) {
		ap_u64 cur = DS_UNMARK(arena_atomic_load(&sl_node(d->first)->next[0], ARENA_ACQUIRE));
		ap_u64 k;
		int r;

		/* the first unmarked node */
		while (cur && can_loop) {
			ap_u64 succ = arena_atomic_load(&sl_node(cur)->next[0], ARENA_ACQUIRE);

			if (!DS_MARKED(succ))
				break;
			cur = DS_UNMARK(succ);
		}
		if (!cur)
			return DS_NOT_FOUND;
		k = sl_node(cur)->key;
		r = ds_skiplist_delete(c, d, k, val);
		if (r == DS_OK) {
			*key = k;
			return DS_OK;
		}
		if (r != DS_NOT_FOUND)
			return r;
	}
	return DS_BUSY;
}

/* Keys in [lo, hi), ascending. */
static __always_inline int ds_skiplist_iterate(struct ds_ctx *c, struct ds_skiplist __arena *d, ap_u64 lo,
					       ap_u64 hi, struct ds_kv __arena *out, ap_u64 cap, ap_u64 *n)
{
	(void)c;
	ap_u64 cur = sl_seek(d, lo);

	*n = 0;
	while (cur && can_loop) {
		struct sl_node __arena *nd = sl_node(cur);
		ap_u64 succ = arena_atomic_load(&nd->next[0], ARENA_ACQUIRE);

		if (nd->key >= hi)
			return DS_OK;
		if (!DS_MARKED(succ)) {
			if (*n >= cap)
				return DS_FULL;
			out[*n].key = nd->key;
			out[*n].val = nd->val;
			*n += 1;
		}
		cur = DS_UNMARK(succ);
	}
	return cur ? DS_BUSY : DS_OK;
}

/*
 * Quiescent: every level sorted strictly ascending, free of marks, made of
 * live nodes tall enough for it and fully inserted; each level a
 * sub-sequence of the one below.
 */
static __always_inline int ds_skiplist_verify(struct ds_ctx *c, struct ds_skiplist __arena *d,
					      struct ds_verify *v)
{
	ap_u64 limit;
	int lvl;

	v->count = v->keysum = v->valsum = v->where = 0;
	if (ds_head_check(&d->head, DS_TYPE_skiplist) || !ds_node_ok(d->first))
		return DS_CORRUPT;
	limit = ds_walk_limit(c);
	for (lvl = SL_LEVELS - 1; lvl >= 0; lvl--) {
		ap_u64 cur = arena_atomic_load(&sl_node(d->first)->next[lvl], ARENA_ACQUIRE);
		/* the walk of the level below, advanced in step (sub-sequence check) */
		ap_u64 below = lvl ? arena_atomic_load(&sl_node(d->first)->next[lvl - 1], ARENA_ACQUIRE) : 0;
		ap_u64 prev_key = 0, n = 0;
		int have_prev = 0;

		while (cur && can_loop) {
			struct sl_node __arena *nd = sl_node(cur);
			ap_u64 next;

			if (DS_MARKED(cur) || !ds_node_ok(cur)) {
				v->where = 1;
				return DS_CORRUPT;
			}
			next = arena_atomic_load(&nd->next[lvl], ARENA_ACQUIRE);
			if (DS_MARKED(next)) {
				v->where = 2;
				return DS_CORRUPT;
			}
			if (nd->levels <= (ap_u32)lvl || nd->levels > SL_LEVELS || !(nd->flags & SL_INSERTED)) {
				v->where = 3;
				return DS_CORRUPT;
			}
			if (have_prev && nd->key <= prev_key) {
				v->where = 4;
				return DS_CORRUPT;
			}
			if (++n > limit) {
				v->where = 5;
				return DS_CORRUPT;
			}
			if (lvl) {
				while (below && below != cur && can_loop)
					below = DS_UNMARK(arena_atomic_load(&sl_node(below)->next[lvl - 1],
									    ARENA_ACQUIRE));
				if (below != cur) {
					v->where = 6;
					return DS_CORRUPT;
				}
			} else {
				v->count++;
				v->keysum += nd->key;
				v->valsum += nd->val;
			}
			prev_key = nd->key;
			have_prev = 1;
			cur = next;
		}
		if (cur)
			return DS_BUSY;
	}
	return DS_OK;
}

#endif /* DS_SKIPLIST_H */
