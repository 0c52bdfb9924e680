// SPDX-License-Identifier: MIT
/* The cgroup table (cgtable.h): open addressing with linear probing, and
 * removal by shifting the probe run back, so a lookup never meets a
 * tombstone. */
#include "cgtable.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void ap_cg_init(struct ap_cgtab *t)
{
	memset(t, 0, sizeof(*t));
}

void ap_cg_clear(struct ap_cgtab *t)
{
	for (size_t i = 0; i < t->cap; i++) {
		free(t->slots[i].frag);
		t->slots[i] = (struct ap_cg_entry){ 0 };
	}
	t->count = 0;
	t->bytes = 0;
	t->hand = 0;
}

void ap_cg_free(struct ap_cgtab *t)
{
	ap_cg_clear(t);
	free(t->slots);
	ap_cg_init(t);
}

/* ids are kernfs ids: sequential, so mix them before masking */
static inline size_t slot_of(const struct ap_cgtab *t, uint64_t id)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdULL;
	id ^= id >> 33;
	return (size_t)id & (t->cap - 1);
}

const struct ap_cg_entry *ap_cg_get(struct ap_cgtab *t, uint64_t id)
{
	if (!t->cap || !id)
		return NULL;
	for (size_t i = slot_of(t, id);; i = (i + 1) & (t->cap - 1)) {
		struct ap_cg_entry *e = &t->slots[i];

		if (e->id == id) {
			e->seen = 1;
			return e;
		}
		if (!e->id)
			return NULL;
	}
}

static int grow(struct ap_cgtab *t)
{
	size_t ncap = t->cap ? t->cap * 2 : 64;
	struct ap_cg_entry *old = t->slots, *ns = calloc(ncap, sizeof(*ns));
	size_t ocap = t->cap;

	if (!ns)
		return ENOMEM;
	t->slots = ns;
	t->cap = ncap;
	for (size_t i = 0; i < ocap; i++) {
		size_t j;

		if (!old[i].id)
			continue;
		for (j = slot_of(t, old[i].id); ns[j].id; j = (j + 1) & (ncap - 1))
			;
		ns[j] = old[i];
	}
	free(old);
	return 0;
}

/* Removes the first entry at or after the hand not seen since the hand last
 * passed it, clearing the marks it passes: ends within two turns. A removal
 * shifts later entries back into the hand's slot, so the hand stays. */
static void evict_one(struct ap_cgtab *t)
{
	for (;;) {
		struct ap_cg_entry *e;

		t->hand &= t->cap - 1;
		e = &t->slots[t->hand];
		if (e->id && !e->seen) {
			ap_cg_drop(t, e->id);
			t->evicted++;
			return;
		}
		e->seen = 0;
		t->hand++;
	}
}

int ap_cg_put(struct ap_cgtab *t, uint64_t id, const char *frag, size_t len)
{
	char *copy;
	size_t i;

	if (!id || len > AP_CG_MAX_BYTES)
		return EINVAL;
	copy = malloc(len ? len : 1);
	if (!copy)
		return ENOMEM;
	memcpy(copy, frag, len);
	/* replacing an entry frees its bytes first */
	ap_cg_drop(t, id);
	while (t->count && (t->count >= AP_CG_MAX_ENTRIES || t->bytes + len > AP_CG_MAX_BYTES))
		evict_one(t);
	/* at most half full: probe runs stay short */
	if ((t->count + 1) * 2 > t->cap && grow(t)) {
		free(copy);
		return ENOMEM;
	}
	for (i = slot_of(t, id); t->slots[i].id; i = (i + 1) & (t->cap - 1))
		;
	t->slots[i].id = id;
	t->slots[i].seen = 0;
	t->count++;
	t->slots[i].frag = copy;
	t->slots[i].len = len;
	t->bytes += len;
	if (len > t->longest)
		t->longest = len;
	return 0;
}

int ap_cg_drop(struct ap_cgtab *t, uint64_t id)
{
	size_t i, j, mask = t->cap - 1;

	if (!t->cap || !id)
		return 0;
	for (i = slot_of(t, id); t->slots[i].id != id; i = (i + 1) & mask)
		if (!t->slots[i].id)
			return 0;
	free(t->slots[i].frag);
	t->bytes -= t->slots[i].len;
	t->count--;
	/* shift later members of the run back over the hole when their home
	 * slot does not lie (cyclically) between the hole and them */
	for (j = (i + 1) & mask; t->slots[j].id; j = (j + 1) & mask) {
		size_t home = slot_of(t, t->slots[j].id);

		if (((j - home) & mask) >= ((j - i) & mask)) {
			t->slots[i] = t->slots[j];
			i = j;
		}
	}
	t->slots[i] = (struct ap_cg_entry){ 0 };
	return 1;
}
