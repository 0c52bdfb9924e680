/* SPDX-License-Identifier: MIT */
/*
 * BPF-only: the path, uid and cgroup filters, judged in the producer against
 * the generation of tables userspace has published in the arena
 * (include/filter.h has the layout and the generation protocol).
 *
 * Each producer calls two functions: ap_filter_begin() once the record's
 * task fields are filled (uid and cgroup: a cheap early exit before the path
 * walk), and ap_filter_end() after the walk (the path prefixes, then the
 * re-check of the generation; on a change that may have rewritten the
 * tables it judges everything again with the newer generation). An event
 * passes iff
 *   (no include prefix, or its path is under one) and (under no exclude
 *   prefix) and (no uid, or its uid is one) and (no cgroup, or its cgroup
 *   or one of its ancestors is one).
 * A path that cannot be judged by its bytes passes the path test: one cut
 * short (AP_EV_PATH_TRUNCATED), empty, or holding an empty, "." or ".."
 * component (a mkdir/mknod argument on the fallback, kept as given): a
 * security tool reports too much rather than hide a file.
 */
#ifndef AP_FILTER_BPF_H
#define AP_FILTER_BPF_H

#if !defined(__bpf__)
#error "filter.bpf.h is for BPF programs"
#endif

#include "root.h"
#include "filter.h"
#include "arena/atomics.h"

/* What ap_filter_begin read, for ap_filter_end. */
struct ap_filter_state {
	__u64 seq;
};

static __always_inline struct ap_filter_tab __arena *ap_filter_tab_of(struct ap_root __arena *root,
								     __u64 seq)
{
	return ARENA_PTR(struct ap_filter_tab,
			 root->filter_tabs + ((seq >> 1) & 1) * sizeof(struct ap_filter_tab));
}

static __always_inline bool ap_filter_uid_ok(struct ap_filter_tab __arena *t, __u32 uid)
{
	__u32 slot, probe, i;

	if (!t->n_uids)
		return true;
	slot = ap_filter_uid_slot(uid);
	probe = t->uid_probe;
	for (i = arena_opaque(0); i < probe && i < AP_FILTER_SLOTS && arena_can_loop; i++) {
		__u32 v = t->uids[(slot + i) & (AP_FILTER_SLOTS - 1)];

		if (v == uid)
			return true;
		if (v == AP_FILTER_UID_EMPTY)
			return false;
	}
	return false;
}

static __always_inline bool ap_filter_cg_has(struct ap_filter_tab __arena *t, __u64 id)
{
	__u32 slot = ap_filter_cg_slot(id), probe = t->cg_probe, i;

	for (i = arena_opaque(0); i < probe && i < AP_FILTER_SLOTS && arena_can_loop; i++) {
		__u64 v = t->cgroups[(slot + i) & (AP_FILTER_SLOTS - 1)].id;

		if (v == id)
			return true;
		if (!v)
			return false;
	}
	return false;
}

/* The task's cgroup or an ancestor is in the set: only the levels some
 * configured cgroup lies at are looked at, one helper call each. */
static __always_inline bool ap_filter_cgroup_ok(struct ap_filter_tab __arena *t)
{
	__u64 levels;
	__u32 lvl;

	if (!t->n_cgroups)
		return true;
	levels = t->cg_levels;
	for (lvl = arena_opaque(0); lvl < AP_FILTER_CGROUP_LEVELS && arena_can_loop; lvl++) {
		__u64 id;

		if (!((levels >> lvl) & 1))
			continue;
		id = bpf_get_current_ancestor_cgroup_id(lvl);
		if (!id)
			return false; /* the task lies above this level, and every later one */
		if (ap_filter_cg_has(t, id))
			return true;
	}
	return false;
}

/* Is path[start .. start+len) (len bytes ending a component) one of pl's
 * prefixes? h: the running hash of those bytes. A global function, so the
 * verifier checks its loops once, not inside every step of the path's scan. */
__noinline int ap_filter_plist_has(struct ap_filter_plist __arena *pl __arg_arena, __u64 h,
				   __u32 len, const struct ap_event *ev __arg_nonnull, __u32 start)
{
	__u32 slot, probe, k, j;
	__u64 hh;

	if (len > AP_FILTER_PREFIX_MAX || !((pl->lens[len >> 6] >> (len & 63)) & 1))
		return false;
	hh = ap_filter_hash_end(h, len);
	slot = hh & (AP_FILTER_SLOTS - 1);
	probe = pl->max_probe;
	for (k = arena_opaque(0); k < probe && k < AP_FILTER_SLOTS && arena_can_loop; k++) {
		struct ap_filter_pslot __arena *s = &pl->slots[(slot + k) & (AP_FILTER_SLOTS - 1)];
		char __arena *b;

		if (!s->len)
			return false;
		if (s->hash != hh || s->len != len)
			continue;
		/* confirmed by the bytes: a hash never decides */
		b = pl->bytes[s->idx & (AP_FILTER_MAX_PREFIXES - 1)];
		for (j = arena_opaque(0); j < len && arena_can_loop; j++)
			if (b[j & (AP_FILTER_PREFIX_MAX - 1)] != ev->path[(start + j) & (AP_PATH_CAP - 1)])
				break;
		if (j == len)
			return true;
	}
	return false;
}

/* The scan of a path, one byte per bpf_loop step: a callback is verified
 * once, where an open-coded loop over 512 bytes made the verifier follow
 * the index's values. */
struct ap_filter_scan {
	const struct ap_event *ev;
	struct ap_filter_tab __arena *t;
	__u64 h; /* the hash of path[start .. start+i) */
	__u32 start, len, comp; /* comp: bytes of the component so far */
	__u32 n_inc, n_exc;
	char c1, c2; /* its last two bytes */
	__u8 in, out, unjudged;
};

static long ap_filter_scan_step(__u64 idx, void *data)
{
	struct ap_filter_scan *sc = data;
	const struct ap_event *ev = sc->ev;
	__u32 i = (__u32)idx + 1, len = sc->len; /* byte 0 is the leading '/' */
	char c = i < len ? ev->path[(sc->start + i) & (AP_PATH_CAP - 1)] : '/';

	if (c == '/') {
		/* an empty, "." or ".." component (other than a trailing
		 * '/') leaves the bytes unlike the place the file is */
		if ((!sc->comp && i + 1 < len) || (sc->comp == 1 && sc->c1 == '.') ||
		    (sc->comp == 2 && sc->c1 == '.' && sc->c2 == '.')) {
			sc->unjudged = 1;
			return 1;
		}
		if (sc->comp) {
			if (sc->n_inc && !sc->in)
				sc->in = ap_filter_plist_has(&sc->t->include, sc->h, i, ev, sc->start);
			if (sc->n_exc && !sc->out)
				sc->out = ap_filter_plist_has(&sc->t->exclude, sc->h, i, ev, sc->start);
		}
		sc->comp = 0;
	} else {
		sc->c2 = sc->c1;
		sc->c1 = c;
		sc->comp++;
	}
	sc->h = ap_filter_hash_step(sc->h, c);
	return 0;
}

/* The path test: 1 passes, 0 does not (judged against table t, with the
 * prefix hash's seed). A global function, verified once. */
__noinline int ap_filter_path_ok(__u64 seed, struct ap_filter_tab __arena *t __arg_arena,
				 const struct ap_event *ev __arg_nonnull)
{
	struct ap_filter_scan sc = {};

	sc.n_inc = t->include.count;
	sc.n_exc = t->exclude.count;
	if (!sc.n_inc && !sc.n_exc)
		return 1;
	sc.len = ev->path_len;
	if ((ev->flags & AP_EV_PATH_TRUNCATED) || !sc.len || sc.len > AP_PATH_CAP)
		return 1; /* cannot be judged: reported */
	sc.start = AP_PATH_CAP - sc.len;
	if (ev->path[sc.start & (AP_PATH_CAP - 1)] != '/')
		return 1;
	sc.ev = ev;
	sc.t = t;
	/* values the verifier cannot know, so the steps' states converge */
	sc.comp = arena_opaque(0);
	sc.in = arena_opaque(0);
	sc.out = arena_opaque(0);
	sc.h = ap_filter_hash_step(seed, '/');
	/* every later '/' and the end close a component */
	bpf_loop(sc.len, ap_filter_scan_step, &sc, 0);
	if (sc.unjudged)
		return 1;
	return (!sc.n_inc || sc.in) && !sc.out;
}

/* Judge the task's uid and cgroup with the generation in force now; false:
 * the event is not produced. */
static __always_inline bool ap_filter_begin(struct ap_root __arena *root,
					    const struct ap_event *ev, struct ap_filter_state *st)
{
	__u32 tries;

	st->seq = arena_atomic_load(&root->filter_seq, ARENA_ACQUIRE);
	if (!st->seq)
		return true; /* no generation was ever published */
	for (tries = arena_opaque(0); tries < AP_FILTER_MAX_RETRIES && arena_can_loop; tries++) {
		struct ap_filter_tab __arena *t = ap_filter_tab_of(root, st->seq);
		bool ok = ap_filter_uid_ok(t, ev->uid) && ap_filter_cgroup_ok(t);
		__u64 now;

		if (ok)
			return true; /* ap_filter_end checks the generation */
		arena_compiler_barrier(); /* the tables are read before the re-check */
		now = arena_atomic_load(&root->filter_seq, ARENA_ACQUIRE);
		if (now < (st->seq | 1) + 2)
			return false; /* the table was not rewritten while read */
		st->seq = now;
	}
	return true; /* ap_filter_end judges it once more or lets it through */
}

/* After the path walk: the path test, and the generation check for the
 * whole verdict. false: the event is not produced. Sets the record's
 * filter_gen. */
static __always_inline bool ap_filter_end(struct ap_root __arena *root, struct ap_event *ev,
					  struct ap_filter_state *st)
{
	__u32 tries;

	if (!st->seq)
		return true;
	for (tries = arena_opaque(0); tries < AP_FILTER_MAX_RETRIES && arena_can_loop; tries++) {
		struct ap_filter_tab __arena *t = ap_filter_tab_of(root, st->seq);
		bool ok = ap_filter_uid_ok(t, ev->uid) && ap_filter_cgroup_ok(t) &&
			  ap_filter_path_ok(root->filter_seed, t, ev);
		__u64 now;

		arena_compiler_barrier(); /* the tables are read before the re-check */
		now = arena_atomic_load(&root->filter_seq, ARENA_ACQUIRE);

		/* table (seq >> 1) & 1 is rewritten only once generation
		 * (seq >> 1) + 2 is being written: seq >= 2g + 3 */
		if (now < (st->seq | 1) + 2) {
			ev->filter_gen = (__u16)(st->seq >> 1);
			ev->flags |= AP_EV_FILTER_GEN;
			return ok;
		}
		st->seq = now;
	}
	arena_atomic_add(&root->filter_unjudged, 1, ARENA_RELAXED);
	return true;
}

#endif /* AP_FILTER_BPF_H */
