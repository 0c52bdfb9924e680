// SPDX-License-Identifier: MIT
/*
 * A generation of filters, from userspace: the table the generation in force
 * does not use is written whole and then published by one release store of
 * the root's filter_seq (include/filter.h has the protocol the producers
 * follow). The seed of the prefix hash is the root's, so kernel and
 * userspace compute the same slots.
 */
#include "filtergen.h"

#include "coreutil.h"

#include <errno.h>
#include <string.h>

static int check_prefix(const struct ap_filter_prefix *p, char *err, size_t errlen)
{
	if (p->len < 2 || p->len > AP_FILTER_PREFIX_MAX || p->bytes[0] != '/' ||
	    memchr(p->bytes, 0, p->len))
		return ap_fail(err, errlen, EINVAL,
			    "a path prefix must be absolute, 2-%d bytes long, without NUL",
			    AP_FILTER_PREFIX_MAX);
	return 0;
}

static int fill_plist(struct ap_filter_plist *pl, uint64_t seed, const struct ap_filter_prefix *ps,
		      size_t n, char *err, size_t errlen)
{
	if (n > AP_FILTER_MAX_PREFIXES)
		return ap_fail(err, errlen, EINVAL, "at most %d prefixes of each kind",
			    AP_FILTER_MAX_PREFIXES);
	for (size_t i = 0; i < n; i++) {
		uint64_t h = seed;
		uint32_t slot, k;
		int ret = check_prefix(&ps[i], err, errlen);

		if (ret)
			return ret;
		for (size_t j = 0; j < ps[i].len; j++)
			h = ap_filter_hash_step(h, ps[i].bytes[j]);
		h = ap_filter_hash_end(h, (ap_u32)ps[i].len);
		slot = (uint32_t)(h & (AP_FILTER_SLOTS - 1));
		for (k = 0; k < AP_FILTER_SLOTS; k++) {
			struct ap_filter_pslot *s = &pl->slots[(slot + k) & (AP_FILTER_SLOTS - 1)];

			if (s->len == ps[i].len && s->hash == h &&
			    !memcmp(pl->bytes[s->idx], ps[i].bytes, ps[i].len))
				break; /* given twice */
			if (s->len)
				continue;
			memcpy(pl->bytes[i], ps[i].bytes, ps[i].len);
			s->hash = h;
			s->idx = (ap_u32)i;
			s->len = (ap_u32)ps[i].len;
			pl->lens[ps[i].len >> 6] |= 1ULL << (ps[i].len & 63);
			pl->count++;
			break;
		}
		if (k + 1 > pl->max_probe)
			pl->max_probe = k + 1;
	}
	return 0;
}

static int fill_tab(struct ap_filter_tab *t, uint64_t seed, const struct ap_filter_spec *sp,
		    char *err, size_t errlen)
{
	int ret;

	if (sp->n_uids > AP_FILTER_MAX_UIDS || sp->n_cgroups > AP_FILTER_MAX_CGROUPS)
		return ap_fail(err, errlen, EINVAL, "at most %d uids and %d cgroups",
			    AP_FILTER_MAX_UIDS, AP_FILTER_MAX_CGROUPS);
	for (int i = 0; i < AP_FILTER_SLOTS; i++)
		t->uids[i] = AP_FILTER_UID_EMPTY;
	for (size_t i = 0; i < sp->n_uids; i++) {
		uint32_t uid = sp->uids[i], slot = ap_filter_uid_slot(uid), k;

		if (uid == AP_FILTER_UID_EMPTY)
			return ap_fail(err, errlen, EINVAL, "uid %u is no user", uid);
		for (k = 0; k < AP_FILTER_SLOTS; k++) {
			uint32_t *v = &t->uids[(slot + k) & (AP_FILTER_SLOTS - 1)];

			if (*v == uid)
				break;
			if (*v != AP_FILTER_UID_EMPTY)
				continue;
			*v = uid;
			t->n_uids++;
			break;
		}
		if (k + 1 > t->uid_probe)
			t->uid_probe = k + 1;
	}
	for (size_t i = 0; i < sp->n_cgroups; i++) {
		uint64_t id = sp->cgroups[i].id;
		uint32_t slot = ap_filter_cg_slot(id), k;

		if (!id || sp->cgroups[i].level >= AP_FILTER_CGROUP_LEVELS)
			return ap_fail(err, errlen, EINVAL,
				    "a cgroup needs a nonzero id and a level below %d",
				    AP_FILTER_CGROUP_LEVELS);
		for (k = 0; k < AP_FILTER_SLOTS; k++) {
			struct ap_filter_cgslot *v = &t->cgroups[(slot + k) & (AP_FILTER_SLOTS - 1)];

			if (v->id == id)
				break;
			if (v->id)
				continue;
			v->id = id;
			t->n_cgroups++;
			t->cg_levels |= 1ULL << sp->cgroups[i].level;
			break;
		}
		if (k + 1 > t->cg_probe)
			t->cg_probe = k + 1;
	}
	ret = fill_plist(&t->include, seed, sp->include, sp->n_include, err, errlen);
	if (!ret)
		ret = fill_plist(&t->exclude, seed, sp->exclude, sp->n_exclude, err, errlen);
	return ret;
}

int ap_filter_publish(struct ap_root *root, const struct ap_filter_spec *spec, uint64_t *gen,
		      char *err, size_t errlen)
{
	static struct ap_filter_tab next;
	uint64_t seq = arena_atomic_load(&root->filter_seq, ARENA_RELAXED);
	uint64_t g = (seq >> 1) + 1;
	struct ap_filter_tab *t;
	int ret;

	/* built outside the arena first: a bad spec leaves both tables as
	 * they are and the generation in force unchanged */
	memset(&next, 0, sizeof(next));
	ret = fill_tab(&next, root->filter_seed, spec, err, errlen);
	if (ret)
		return ret;
	next.gen = g;
	t = (struct ap_filter_tab *)(uintptr_t)(root->filter_tabs + (g & 1) * sizeof(*t));
	/* odd: the table of generation g - 2 is being written; a producer
	 * still judging with it sees this and judges again */
	arena_atomic_store(&root->filter_seq, seq + 1, ARENA_RELAXED);
	arena_memory_barrier();
	memcpy(t, &next, sizeof(*t));
	arena_atomic_store(&root->filter_seq, 2 * g, ARENA_RELEASE);
	*gen = g;
	return 0;
}
