/* SPDX-License-Identifier: MIT */
/*
 * ds_hash: a concurrent hash map, the index user-side inserts and searches
 * target. Michael's lock-free hash table: a power-of-two array of buckets
 * sized by the config, each bucket a Harris-Michael sorted list (hm_list.h)
 * holding the keys that hash there. Inserts and deletes are lock-free;
 * searches never write and never wait. Nodes of deleted keys are retired to
 * epoch reclamation. The table does not resize: give it about as many
 * buckets as keys you expect (chains stay short at load factor 1).
 */
#ifndef DS_HASH_H
#define DS_HASH_H

#include "ds_api.h"
#include "hm_list.h"

#define DS_HASH_DEFAULT_BUCKETS 4096
#define DS_HASH_MAX_BUCKETS (1ULL << 21)

struct ds_hash {
	struct ds_head head;
	ap_u64 mask __arena_cacheline_aligned; /* buckets - 1 */
	ap_u64 buckets;                        /* address of ap_u64[mask + 1] link words */
};

#define DS_META_hash \
		.name = "hash",                                                                 \
		.description = "hash map, fixed bucket array of Harris-Michael lists (Michael 2002)", \
		.progress = "lock-free; search wait-free for bounded chains",                   \
		.flags = DS_F_LOCK_FREE | DS_F_KEYED | DS_F_RECLAIM | DS_F_READS_LOCKFREE,      \
		.model = DS_MODEL_ANY,                                                          \
		.ops = DS_OP_BIT(DS_OP_INIT) | DS_OP_BIT(DS_OP_INSERT) | DS_OP_BIT(DS_OP_DELETE) |    \
		       DS_OP_BIT(DS_OP_SEARCH) | DS_OP_BIT(DS_OP_VERIFY) | DS_OP_BIT(DS_OP_ITERATE) | \
		       DS_OP_BIT(DS_OP_STATS),                                                  \
		.node_size = sizeof(struct hm_node) + ARENA_OBJ_HDR,                            \
		.head_size = sizeof(struct ds_hash),

static __always_inline ap_u64 __arena *ds_hash_bucket(struct ds_hash __arena *d, ap_u64 key)
{
	return ARENA_PTR(ap_u64, d->buckets + ((arena_hash64(key) & d->mask) << 3));
}

/* cfg->capacity: buckets, rounded up to a power of two (default 4096). */
static __always_inline int ds_hash_init(struct ds_ctx *c, struct ds_hash __arena *d, const struct ds_config *cfg)
{
	ap_u64 nb = cfg && cfg->capacity ? cfg->capacity : DS_HASH_DEFAULT_BUCKETS, i;
	ap_u64 __arena *b;

	if (nb > DS_HASH_MAX_BUCKETS)
		return DS_INVALID;
	nb = ds_pow2(nb);
	b = (ap_u64 __arena *)ds_alloc(c, nb * sizeof(ap_u64));
	if (!b)
		return DS_NOMEM;
	for (i = arena_opaque(0); i < nb && can_loop; i++)
		arena_store_once(&b[i], 0); /* volatile: no memset on arena memory in BPF */
	ds_head_init(c, &d->head, DS_TYPE_hash, cfg);
	arena_store_once(&d->head.cfg.capacity, nb);
	arena_store_once(&d->mask, nb - 1);
	arena_store_once(&d->buckets, ARENA_ADDR(b));
	ds_head_publish(&d->head);
	return DS_OK;
}

static __always_inline int ds_hash_insert(struct ds_ctx *c, struct ds_hash __arena *d, ap_u64 key, ap_u64 val)
{
	return hm_insert(c, ds_hash_bucket(d, key), key, val);
}

static __always_inline int ds_hash_delete(struct ds_ctx *c, struct ds_hash __arena *d, ap_u64 key, ap_u64 *val)
{
	return hm_delete(c, ds_hash_bucket(d, key), key, val);
}

/* Delete key only while it maps to val (hm_delete_val). */
static __always_inline int ds_hash_delete_val(struct ds_ctx *c, struct ds_hash __arena *d, ap_u64 key, ap_u64 val)
{
	return hm_delete_val(c, ds_hash_bucket(d, key), key, val);
}

static __always_inline int ds_hash_search(struct ds_ctx *c, struct ds_hash __arena *d, ap_u64 key, ap_u64 *val)
{
	(void)c;
	return hm_search(ds_hash_bucket(d, key), key, val);
}

static __always_inline int ds_hash_pop(struct ds_ctx *c, struct ds_hash __arena *d, ap_u64 *key, ap_u64 *val)
{
	(void)c; (void)d; (void)key; (void)val;
	return DS_INVALID;
}

/* Keys in [lo, hi), in bucket order (not key order). */
static __always_inline int ds_hash_iterate(struct ds_ctx *c, struct ds_hash __arena *d, ap_u64 lo, ap_u64 hi,
					   struct ds_kv __arena *out, ap_u64 cap, ap_u64 *n)
{
	(void)c;
	ap_u64 i;
	int r = DS_OK;

	*n = 0;
	for (i = arena_opaque(0); i <= d->mask && can_loop; i++) {
		r = hm_collect(ARENA_PTR(ap_u64, d->buckets + (i << 3)), lo, hi, out, cap, n);
		if (r != DS_OK)
			break;
	}
	return r;
}

static __always_inline int ds_hash_verify(struct ds_ctx *c, struct ds_hash __arena *d, struct ds_verify *v)
{
	ap_u64 i, limit;
	int r = DS_OK;

	v->count = v->keysum = v->valsum = v->where = 0;
	if (ds_head_check(&d->head, DS_TYPE_hash))
		return DS_CORRUPT;
	if (!d->mask || (d->mask & (d->mask + 1)) || !ds_node_ok(d->buckets)) {
		v->where = 10;
		return DS_CORRUPT;
	}
	limit = ds_walk_limit(c);
	for (i = arena_opaque(0); i <= d->mask && can_loop; i++) {
		r = hm_verify(ARENA_PTR(ap_u64, d->buckets + (i << 3)), limit, v, i, d->mask);
		if (r != DS_OK)
			break;
	}
	return r;
}

#endif /* DS_HASH_H */
