/* SPDX-License-Identifier: MIT */
/*
 * The registry: every data structure, one line each.
 *
 *   X(id, name)   id: a stable small number (the kernel programs, the C
 *                 extension and saved configs refer to it); name: the NAME of
 *                 include/ds/ds_NAME.h, which follows the contract in
 *                 ds_api.h.
 *
 * DS_REGISTRY(X) expands X once per structure. It feeds:
 *   - bpf/ds_ops.bpf.c: one SEC("syscall") program ds_run_NAME per line;
 *   - ds_apply() below: the dispatch userspace batches, the C extension and
 *     the stress runner use;
 *   - ds_meta_table[]: names, descriptions and properties for
 *     `python -m pipeline ds list` and the tests, which run every line.
 * Adding a structure: write ds_NAME.h (its head type id is DS_TYPE_NAME),
 * add its X line to DS_REGISTRY and its #include below the enum.
 */
#ifndef DS_REGISTRY_H
#define DS_REGISTRY_H

#include "ds_api.h"

#define DS_REGISTRY(X) \
	X(1, list)     \
	X(2, msqueue)  \
	X(3, hash)     \
	X(4, skiplist) \
	X(5, mpmc)     \
	X(6, mpsc)     \
	X(7, spsc)     \
	X(8, stack)    \
	X(9, evq)

/* DS_TYPE_NAME = id, for the headers and their callers */
enum ds_type {
#define DS_TYPE_ENUM(id, name) DS_TYPE_##name = id,
	DS_REGISTRY(DS_TYPE_ENUM)
#undef DS_TYPE_ENUM
};

/* one past the largest id */
#define DS_TYPES_END 16

/* the structures, in the order of the list above */
#include "ds_list.h"
#include "ds_msqueue.h"
#include "ds_hash.h"
#include "ds_skiplist.h"
#include "ds_mpmc.h"
#include "ds_mpsc.h"
#include "ds_spsc.h"
#include "ds_stack.h"
#include "ds_evq.h"

/*
 * Run one operation on the instance at address ds of registered type type.
 * key/val are the inputs (insert uses both, delete and search the key);
 * okey and oval receive what pop, delete and search return. In BPF, call it
 * with a constant type: the other structures' code is then not compiled in.
 */
static __always_inline int ds_apply(struct ds_ctx *c, ap_u32 type, ap_u64 ds, ap_u32 op, ap_u64 key,
				    ap_u64 val, ap_u64 *okey, ap_u64 *oval)
{
	switch (type) {
#define DS_APPLY_CASE(id, name)                                                                  \
	case id:                                                                                 \
		switch (op) {                                                                    \
		case DS_OP_INSERT:                                                               \
			return ds_##name##_insert(c, ARENA_PTR(struct ds_##name, ds), key, val); \
		case DS_OP_DELETE:                                                               \
			*okey = key;                                                             \
			return ds_##name##_delete(c, ARENA_PTR(struct ds_##name, ds), key, oval); \
		case DS_OP_SEARCH:                                                               \
			*okey = key;                                                             \
			return ds_##name##_search(c, ARENA_PTR(struct ds_##name, ds), key, oval); \
		case DS_OP_POP:                                                                  \
			return ds_##name##_pop(c, ARENA_PTR(struct ds_##name, ds), okey, oval);  \
		default:                                                                         \
			return DS_INVALID;                                                       \
		}
		DS_REGISTRY(DS_APPLY_CASE)
#undef DS_APPLY_CASE
	}
	return DS_INVALID;
}

/* ds_apply with its value in and results out in one struct ds_kv: io->val
 * is the value to insert; io->key and io->val receive what pop, delete and
 * search return. */
static __always_inline int ds_apply_kv(struct ds_ctx *c, ap_u32 type, ap_u64 ds, ap_u32 op, ap_u64 key,
				       struct ds_kv *io)
{
	ap_u64 okey = 0, oval = 0;
	int res = ds_apply(c, type, ds, op, key, io->val, &okey, &oval);

	io->key = okey;
	io->val = oval;
	return res;
}

static __always_inline int ds_init_type(struct ds_ctx *c, ap_u32 type, ap_u64 ds, const struct ds_config *cfg)
{
	switch (type) {
#define DS_INIT_CASE(id, name) \
	case id:               \
		return ds_##name##_init(c, ARENA_PTR(struct ds_##name, ds), cfg);
		DS_REGISTRY(DS_INIT_CASE)
#undef DS_INIT_CASE
	}
	return DS_INVALID;
}

static __always_inline int ds_verify_type(struct ds_ctx *c, ap_u32 type, ap_u64 ds, struct ds_verify *v)
{
	switch (type) {
#define DS_VERIFY_CASE(id, name) \
	case id:                 \
		return ds_##name##_verify(c, ARENA_PTR(struct ds_##name, ds), v);
		DS_REGISTRY(DS_VERIFY_CASE)
#undef DS_VERIFY_CASE
	}
	return DS_INVALID;
}

static __always_inline int ds_iterate_type(struct ds_ctx *c, ap_u32 type, ap_u64 ds, ap_u64 lo, ap_u64 hi,
					   struct ds_kv __arena *out, ap_u64 cap, ap_u64 *n)
{
	switch (type) {
#define DS_ITER_CASE(id, name) \
	case id:               \
		return ds_##name##_iterate(c, ARENA_PTR(struct ds_##name, ds), lo, hi, out, cap, n);
		DS_REGISTRY(DS_ITER_CASE)
#undef DS_ITER_CASE
	}
	return DS_INVALID;
}

#if !ARENA_IS_BPF
/* Metadata by id (entries of ids not registered have name NULL). */
static const struct ds_meta ds_meta_table[DS_TYPES_END] = {
#define DS_META_ENTRY(id_, name) [id_] = {.id = id_, DS_META_##name},
	DS_REGISTRY(DS_META_ENTRY)
#undef DS_META_ENTRY
};

static inline const struct ds_meta *ds_meta_of(ap_u32 type)
{
	if (type >= DS_TYPES_END || !ds_meta_table[type].name)
		return NULL;
	return &ds_meta_table[type];
}

/*
 * Whether operations of the type must run inside an epoch critical section:
 * only the types that retire nodes (DS_F_RECLAIM). The others never free
 * what a concurrent operation may still read (a bounded array; mpsc frees a
 * popped node at once, see ds_mpsc.h), so their batches leave out the
 * section's two atomic read-modify-writes. An unknown type: yes.
 */
static inline int ds_type_needs_section(ap_u32 type)
{
	return type >= DS_TYPES_END || !ds_meta_table[type].name || (ds_meta_table[type].flags & DS_F_RECLAIM);
}

static inline const struct ds_meta *ds_meta_by_name(const char *name)
{
	ap_u32 i;

	for (i = 0; i < DS_TYPES_END; i++) {
		const char *a = ds_meta_table[i].name, *b = name;

		if (!a)
			continue;
		while (*a && *a == *b)
			a++, b++;
		if (!*a && !*b)
			return &ds_meta_table[i];
	}
	return NULL;
}

/* The instance size to allocate for a type. */
static inline ap_u64 ds_head_size(ap_u32 type)
{
	const struct ds_meta *m = ds_meta_of(type);

	return m ? m->head_size : 0;
}
#endif

#endif /* DS_REGISTRY_H */
