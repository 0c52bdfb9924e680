/* SPDX-License-Identifier: MIT */
/*
 * The drain's cgroup table: cgroup id -> the JSON fields that name the cgroup
 * and its container, formatted once when userspace learns them (from the
 * cgroup2 tree: pipeline/cgroups.py) and copied into every line of that
 * cgroup. A record whose id is not in the table stops the drain before it,
 * so userspace resolves the id before that record is formatted: no line is
 * ever written with fields guessed, and no system call is made per event.
 */
#ifndef AP_CGTABLE_H
#define AP_CGTABLE_H

#include <stddef.h>
#include <stdint.h>

/* At most this many ids and this many bytes of fragments: anyone allowed to
 * create cgroups (a user's delegated subtree) can make ids without end, so a
 * full table evicts an id not looked up since the clock hand last passed it
 * (CLOCK, second chance); an evicted id that shows up again is resolved
 * again. Ids are never given twice, so an entry never goes stale. */
#define AP_CG_MAX_ENTRIES 65536
#define AP_CG_MAX_BYTES (64u << 20)
/* The longest cgroup path kept (PATH_MAX less its NUL): userspace reports a
 * longer one as unknown. */
#define AP_CG_PATH_MAX 4095

struct ap_cg_entry {
	uint64_t id; /* 0: a free slot (no cgroup has id 0) */
	char *frag;
	size_t len;
	unsigned char seen; /* looked up since the hand last passed */
};

struct ap_cgtab {
	struct ap_cg_entry *slots;
	size_t cap; /* a power of two, or 0 before the first put */
	size_t count;
	size_t longest; /* longest fragment ever stored: sizes the drain's buffer */
	size_t bytes; /* fragments held */
	size_t hand; /* the clock hand: next slot eviction looks at */
	uint64_t evicted;
};

void ap_cg_init(struct ap_cgtab *t);
void ap_cg_free(struct ap_cgtab *t);
/* The entry of id, or NULL; marks it seen (kept over unseen ones). */
const struct ap_cg_entry *ap_cg_get(struct ap_cgtab *t, uint64_t id);
/* Stores a copy of frag for id (replacing one held); 0, or ENOMEM/EINVAL. */
int ap_cg_put(struct ap_cgtab *t, uint64_t id, const char *frag, size_t len);
/* Removes id; 1 when it was held. */
int ap_cg_drop(struct ap_cgtab *t, uint64_t id);
void ap_cg_clear(struct ap_cgtab *t);

#endif
