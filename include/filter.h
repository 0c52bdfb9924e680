/* SPDX-License-Identifier: MIT */
/*
 * The kernel-evaluated filters that userspace changes while the pipeline runs:
 * path prefixes to include and to exclude, uids, cgroups. Compiled both as BPF
 * and as userspace C: userspace writes the tables (pipeline/_core/filtergen.c),
 * the producers read them (bpf/filter.bpf.h).
 *
 * Two generations of tables live in arena pages the session lays out after the
 * queue's slots. Generation g uses table g & 1. The root's filter_seq counts
 * half-steps: filter_seq = 2g while generation g is in force, 2g + 1 while
 * userspace writes generation g + 1 into the other table (the table of g - 1,
 * which no longer judges anything). A producer reads filter_seq (acquire),
 * judges with table (seq >> 1) & 1, then reads filter_seq again: the table it
 * read can have been changed only once userspace started writing generation
 * g + 2, i.e. filter_seq >= 2g + 3; then it judges again with the newer
 * generation (seqlock-style; bounded). Nobody waits for anybody.
 *
 * Every table is a fixed open-addressing hash table, built whole by userspace
 * (no insert or delete while it judges anything), so a reader needs no epoch
 * section and no allocation: a non-sleepable tracepoint reads it directly.
 */
#ifndef AP_FILTER_H
#define AP_FILTER_H

#include "arena/arena.h"
#include "arena/shim.h" /* arena_hash64 */
#include "event.h"

/* Bounds of one generation (documented in the README). */
#define AP_FILTER_MAX_PREFIXES 64  /* include prefixes, and exclude prefixes, each */
#define AP_FILTER_PREFIX_MAX 256   /* bytes of one prefix */
#define AP_FILTER_MAX_UIDS 64
#define AP_FILTER_MAX_CGROUPS 64
#define AP_FILTER_CGROUP_LEVELS 64 /* a configured cgroup lies above level 64 */
#define AP_FILTER_SLOTS 128        /* slots of each table: twice the entries */
#define AP_FILTER_UID_EMPTY 0xffffffffu /* (uid_t)-1 is no user */
#define AP_FILTER_MAX_RETRIES 4

/* One prefix's slot: len 0 marks an empty slot. hash is the prefix's
 * ap_filter_hash_end; the bytes are in the list's bytes[idx]. */
struct ap_filter_pslot {
	ap_u64 hash;
	ap_u32 len;
	ap_u32 idx;
};

struct ap_filter_plist {
	ap_u32 count;
	ap_u32 max_probe; /* longest probe sequence any entry needs, in slots */
	/* bit L: some prefix is L bytes long, so only boundaries at those
	 * lengths are looked up (L <= AP_FILTER_PREFIX_MAX) */
	ap_u64 lens[AP_FILTER_PREFIX_MAX / 64 + 1];
	struct ap_filter_pslot slots[AP_FILTER_SLOTS];
	char bytes[AP_FILTER_MAX_PREFIXES][AP_FILTER_PREFIX_MAX];
};

struct ap_filter_cgslot {
	ap_u64 id; /* 0: empty */
};

struct ap_filter_tab {
	ap_u64 gen; /* the generation this table holds (checked by tests) */
	ap_u32 n_uids;
	ap_u32 n_cgroups;
	ap_u32 uid_probe;
	ap_u32 cg_probe;
	ap_u64 cg_levels; /* bit L: a configured cgroup is at level L */
	ap_u32 uids[AP_FILTER_SLOTS];
	struct ap_filter_cgslot cgroups[AP_FILTER_SLOTS];
	struct ap_filter_plist include;
	struct ap_filter_plist exclude;
};

#define AP_FILTER_TAB_PAGES ((sizeof(struct ap_filter_tab) + ARENA_PAGE_SIZE - 1) / ARENA_PAGE_SIZE)
/* Both generations' tables, right after the queue's slots. */
#define AP_FILTER_PAGES (2 * AP_FILTER_TAB_PAGES)

/* The hash of a path prefix: FNV-1a over its bytes from a per-run random
 * seed, then the length folded in and the bits mixed. Kernel and userspace
 * compute it the same way; the producer keeps the running state while it
 * scans the path once and finishes it at each component boundary. A hit is
 * always confirmed by comparing the bytes, so the hash only has to be fast;
 * the seed keeps a user from aiming paths at one slot. */
#define AP_FILTER_FNV_PRIME 0x100000001b3ULL

static __always_inline ap_u64 ap_filter_hash_step(ap_u64 h, unsigned char c)
{
	return (h ^ c) * AP_FILTER_FNV_PRIME;
}

static __always_inline ap_u64 ap_filter_hash_end(ap_u64 h, ap_u32 len)
{
	return arena_hash64(h ^ ((ap_u64)len << 48));
}

static __always_inline ap_u32 ap_filter_uid_slot(ap_u32 uid)
{
	return (ap_u32)(arena_hash64(uid) & (AP_FILTER_SLOTS - 1));
}

static __always_inline ap_u32 ap_filter_cg_slot(ap_u64 id)
{
	return (ap_u32)(arena_hash64(id) & (AP_FILTER_SLOTS - 1));
}

#endif /* AP_FILTER_H */
