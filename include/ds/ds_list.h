/* SPDX-License-Identifier: MIT */
/*
 * ds_list: the seed's linked list - records keyed by pid with a timestamp
 * as value - made concurrent: one Harris-Michael lock-free sorted list
 * (hm_list.h). Kernel programs and user threads insert, delete and search at
 * once; pop removes the smallest key; iterate returns a key range in order.
 * O(n) per operation: it is the simple baseline the other structures are
 * measured against.
 */
#ifndef DS_LIST_H
#define DS_LIST_H

#include "ds_api.h"
#include "hm_list.h"


struct ds_list {
	struct ds_head head;
	ap_u64 first __arena_cacheline_aligned; /* link word of the first node */
};

#define DS_META_list \
		.name = "list",                                                               \
		.description = "sorted linked list (Harris-Michael), key = pid, value = timestamp", \
		.progress = "lock-free; search wait-free",                                    \
		.flags = DS_F_LOCK_FREE | DS_F_KEYED | DS_F_ORDERED | DS_F_RECLAIM |          \
			 DS_F_READS_LOCKFREE,                                                 \
		.model = DS_MODEL_ANY,                                                        \
		.ops = DS_OP_BIT(DS_OP_INIT) | DS_OP_BIT(DS_OP_INSERT) | DS_OP_BIT(DS_OP_DELETE) |  \
		       DS_OP_BIT(DS_OP_POP) | DS_OP_BIT(DS_OP_SEARCH) | DS_OP_BIT(DS_OP_VERIFY) |   \
		       DS_OP_BIT(DS_OP_ITERATE) | DS_OP_BIT(DS_OP_STATS),                     \
		.node_size = sizeof(struct hm_node) + ARENA_OBJ_HDR,                          \
		.head_size = sizeof(struct ds_list),

static __always_inline int ds_list_init(struct ds_ctx *c, struct ds_list __arena *d, const struct ds_config *cfg)
{
	ds_head_init(c, &d->head, DS_TYPE_list, cfg);
	arena_store_once(&d->first, 0);
	ds_head_publish(&d->head);
	return DS_OK;
}

static __always_inline int ds_list_insert(struct ds_ctx *c, struct ds_list __arena *d, ap_u64 key, ap_u64 val)
{
	return hm_insert(c, &d->first, key, val);
}

static __always_inline int ds_list_delete(struct ds_ctx *c, struct ds_list __arena *d, ap_u64 key, ap_u64 *val)
{
	return hm_delete(c, &d->first, key, val);
}

static __always_inline int ds_list_search(struct ds_ctx *c, struct ds_list __arena *d, ap_u64 key, ap_u64 *val)
{
	(void)c;
	return hm_search(&d->first, key, val);
}

/* Remove the smallest key. */
static __always_inline int ds_list_pop(struct ds_ctx *c, struct ds_list __arena *d, ap_u64 *key, ap_u64 *val)
{
	while (can_loop) {
		ap_u64 k = 0;
		int r = hm_first(&d->first, &k);

		if (r != DS_OK)
			return r;
		r = hm_delete(c, &d->first, k, val);
		if (r == DS_OK) {
			*key = k;
			return DS_OK;
		}
		if (r != DS_NOT_FOUND)
			return r;
		/* someone else took it: look again */
	}
	return DS_BUSY;
}

static __always_inline int ds_list_iterate(struct ds_ctx *c, struct ds_list __arena *d, ap_u64 lo, ap_u64 hi,
					   struct ds_kv __arena *out, ap_u64 cap, ap_u64 *n)
{
	(void)c;
	*n = 0;
	return hm_collect(&d->first, lo, hi, out, cap, n);
}

static __always_inline int ds_list_verify(struct ds_ctx *c, struct ds_list __arena *d, struct ds_verify *v)
{
	v->count = v->keysum = v->valsum = v->where = 0;
	if (ds_head_check(&d->head, DS_TYPE_list))
		return DS_CORRUPT;
	return hm_verify(&d->first, ds_walk_limit(c), v, 0, 0);
}

#endif /* DS_LIST_H */
