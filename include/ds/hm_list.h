/* SPDX-License-Identifier: MIT */
/*
 * The Harris-Michael lock-free sorted linked list: the one copy of the
 * algorithm behind ds_list (one list) and ds_hash (one list per bucket).
 *
 * A list is a link word (the head) and nodes {next, key, val} in ascending
 * key order; keys are unique, key and val never change once the node is
 * linked. Deleting is two steps: mark the node's next word (bit 0: logical
 * deletion, the linearization point), then swing the predecessor's link past
 * it (physical). Whoever's compare-and-swap unlinks a node - the deleter or
 * a later find that meets the marked node - retires it, exactly once, to
 * epoch reclamation. Because nodes are not reused while any critical section
 * that could hold them is open, no link ever sees ABA.
 *
 * search never writes: it walks through marked nodes and answers from the
 * first node whose key is >= the one looked for, so reads are lock-free
 * (wait-free for a list of bounded length).
 */
#ifndef DS_HM_LIST_H
#define DS_HM_LIST_H

#include "ds_api.h"

struct hm_node {
	ap_u64 next; /* address of the next node | DS_MARK when this node is deleted */
	ap_u64 key;
	ap_u64 val;
};

/*
 * Find key's position: *prevp is the link word that held cur when it was
 * read, cur the first unmarked node with key >= key (0 at the end). Unlinks
 * and retires marked nodes it passes. Returns 1 if cur holds key, 0 if not,
 * -1 when the loop budget ran out.
 */
static __always_inline int hm_find(struct ds_ctx *c, ap_u64 __arena *head, ap_u64 key,
				   ap_u64 __arena **prevp, ap_u64 *curp)
{
	while (can_loop) {
		ap_u64 __arena *prev = head;
		ap_u64 cur = arena_atomic_load(prev, ARENA_ACQUIRE);
		int restart = 0;

		while (can_loop) {
			struct hm_node __arena *n;
			ap_u64 next, k;

			if (!cur) {
				*prevp = prev;
				*curp = 0;
				return 0;
			}
			n = ARENA_PTR(struct hm_node, cur);
			next = arena_atomic_load(&n->next, ARENA_ACQUIRE);
			if (DS_MARKED(next)) {
				/* fails if prev's node got marked or prev moved on */
				if (arena_atomic_cmpxchg(prev, cur, DS_UNMARK(next), ARENA_ACQ_REL) != cur) {
					restart = 1;
					break;
				}
				ds_retire(c, n);
				cur = DS_UNMARK(next);
				continue;
			}
			k = n->key;
			if (k >= key) {
				*prevp = prev;
				*curp = cur;
				return k == key;
			}
			prev = &n->next;
			cur = next;
		}
		if (!restart)
			break;
	}
	return -1;
}

static __always_inline int hm_insert(struct ds_ctx *c, ap_u64 __arena *head, ap_u64 key, ap_u64 val)
{
	struct hm_node __arena *node = 0;
	ap_u64 __arena *prev;
	ap_u64 cur;

	while (can_loop) {
		int r = hm_find(c, head, key, &prev, &cur);

		if (r < 0)
			break;
		if (r) {
			if (node)
				ds_free(c, node); /* never published */
			return DS_EXISTS;
		}
		if (!node) {
			node = (struct hm_node __arena *)ds_alloc(c, sizeof(struct hm_node));
			if (!node)
				return DS_NOMEM;
			node->key = key;
			node->val = val;
		}
		arena_atomic_store(&node->next, cur, ARENA_RELAXED);
		/* release: key, val and next are visible before the node is */
		if (arena_atomic_cmpxchg(prev, cur, ARENA_ADDR(node), ARENA_ACQ_REL) == cur)
			return DS_OK;
	}
	if (node)
		ds_free(c, node);
	return DS_BUSY;
}

/*
 * Delete key; with want, only while key maps to *want (DS_NOT_FOUND when key
 * is absent or its node holds another value). A node's val is fixed once it
 * is linked and the delete's mark is a compare-and-swap on that same node's
 * next word, so the mark succeeds only while the node (and with it
 * key -> val) is in the list: the check and the delete are one linearizable
 * step. A key deleted and inserted again with a new value between a caller's
 * decision and this call is a different node, and is left alone.
 */
static __always_inline int hm_delete_if(struct ds_ctx *c, ap_u64 __arena *head, ap_u64 key, ap_u64 *val,
					const ap_u64 *want)
{
	ap_u64 __arena *prev;
	ap_u64 cur;

	while (can_loop) {
		struct hm_node __arena *n;
		ap_u64 next;
		int r = hm_find(c, head, key, &prev, &cur);

		if (r < 0)
			break;
		if (!r)
			return DS_NOT_FOUND;
		n = ARENA_PTR(struct hm_node, cur);
		if (want && n->val != *want)
			return DS_NOT_FOUND;
		next = arena_atomic_load(&n->next, ARENA_ACQUIRE);
		if (DS_MARKED(next))
			continue; /* another delete won; find again */
		if (arena_atomic_cmpxchg(&n->next, next, next | DS_MARK, ARENA_ACQ_REL) != next)
			continue;
#ifdef DS_TEST_BROKEN_HASH_MISS
		ds_test_pause(); /* marked, not yet unlinked: see hm_search */
#endif
		if (val)
			*val = n->val;
		if (arena_atomic_cmpxchg(prev, cur, next, ARENA_ACQ_REL) == cur)
			ds_retire(c, n);
		else
			hm_find(c, head, key, &prev, &cur); /* unlinks and retires it */
		return DS_OK;
	}
	return DS_BUSY;
}

static __always_inline int hm_delete(struct ds_ctx *c, ap_u64 __arena *head, ap_u64 key, ap_u64 *val)
{
	return hm_delete_if(c, head, key, val, (const ap_u64 *)0);
}

static __always_inline int hm_delete_val(struct ds_ctx *c, ap_u64 __arena *head, ap_u64 key, ap_u64 val)
{
	return hm_delete_if(c, head, key, (ap_u64 *)0, &val);
}

static __always_inline int hm_search(ap_u64 __arena *head, ap_u64 key, ap_u64 *val)
{
	ap_u64 cur = arena_atomic_load(head, ARENA_ACQUIRE);

	while (cur && can_loop) {
		struct hm_node __arena *n = ARENA_PTR(struct hm_node, cur);
		ap_u64 next = arena_atomic_load(&n->next, ARENA_ACQUIRE);
		ap_u64 k = n->key;

#ifdef DS_TEST_BROKEN_HASH_MISS
		/* A deliberately broken variant, compiled only by tests/c/lin_driver.c to show
		 * that the linearizability checker catches it: the search gives up at a node
		 * being deleted instead of walking past it, and so misses a present key that
		 * lies behind it in the chain. */
		if (DS_MARKED(next))
			return DS_NOT_FOUND;
#endif
		if (k >= key) {
			if (k != key || DS_MARKED(next))
				return DS_NOT_FOUND;
			if (val)
				*val = n->val;
			return DS_OK;
		}
		cur = DS_UNMARK(next);
	}
	return cur ? DS_BUSY : DS_NOT_FOUND;
}

/* The first unmarked node's key (for pop). Returns DS_OK, DS_NOT_FOUND or DS_BUSY. */
static __always_inline int hm_first(ap_u64 __arena *head, ap_u64 *key)
{
	ap_u64 cur = arena_atomic_load(head, ARENA_ACQUIRE);

	while (cur && can_loop) {
		struct hm_node __arena *n = ARENA_PTR(struct hm_node, cur);
		ap_u64 next = arena_atomic_load(&n->next, ARENA_ACQUIRE);

		if (!DS_MARKED(next)) {
			*key = n->key;
			return DS_OK;
		}
		cur = DS_UNMARK(next);
	}
	return cur ? DS_BUSY : DS_NOT_FOUND;
}

/* Append the unmarked nodes with lo <= key < hi to out[*n..cap). */
static __always_inline int hm_collect(ap_u64 __arena *head, ap_u64 lo, ap_u64 hi, struct ds_kv __arena *out,
				      ap_u64 cap, ap_u64 *n)
{
	ap_u64 cur = arena_atomic_load(head, ARENA_ACQUIRE);

	while (cur && can_loop) {
		struct hm_node __arena *nd = ARENA_PTR(struct hm_node, cur);
		ap_u64 next = arena_atomic_load(&nd->next, ARENA_ACQUIRE);
		ap_u64 k = nd->key;

		if (k >= hi)
			return DS_OK;
		if (k >= lo && !DS_MARKED(next)) {
			if (*n >= cap)
				return DS_FULL;
			out[*n].key = k;
			out[*n].val = nd->val;
			*n += 1;
		}
		cur = DS_UNMARK(next);
	}
	return cur ? DS_BUSY : DS_OK;
}

/*
 * Check one list: every node a live allocation, none marked (quiescent),
 * keys strictly ascending, no cycle (at most limit nodes), and, when mask
 * is nonzero, every key hashing to bucket (ds_hash).
 */
static __always_inline int hm_verify(ap_u64 __arena *head, ap_u64 limit, struct ds_verify *v, ap_u64 bucket,
				     ap_u64 mask)
{
	ap_u64 cur = arena_atomic_load(head, ARENA_ACQUIRE), n = 0, prev_key = 0;
	/* a flag, not n != 0: BPF loops must not branch on a counter the
	 * verifier knows exactly, or it never sees the loop converge */
	int have_prev = 0;

	while (cur && can_loop) {
		struct hm_node __arena *nd;
		ap_u64 next, k;

		if (!ds_node_ok(cur)) {
			v->where = 1;
			return DS_CORRUPT;
		}
		nd = ARENA_PTR(struct hm_node, cur);
		next = arena_atomic_load(&nd->next, ARENA_ACQUIRE);
		k = nd->key;
		if (DS_MARKED(next)) {
			v->where = 2;
			return DS_CORRUPT;
		}
		if (have_prev && k <= prev_key) {
			v->where = 3;
			return DS_CORRUPT;
		}
		if (mask && (arena_hash64(k) & mask) != bucket) {
			v->where = 4;
			return DS_CORRUPT;
		}
		if (++n > limit) {
			v->where = 5;
			return DS_CORRUPT;
		}
		prev_key = k;
		have_prev = 1;
		v->count++;
		v->keysum += k;
		v->valsum += nd->val;
		cur = next;
	}
	return cur ? DS_BUSY : DS_OK;
}

#endif /* DS_HM_LIST_H */
