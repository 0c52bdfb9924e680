// SPDX-License-Identifier: MIT
/*
 * Queues and stacks whose added values are distinct: is there a
 * linearization of the history?
 *
 * With distinct values a search over orders is not needed. Following
 * Henzinger, Sezgin and Vafeiadis ("Aspect-oriented linearizability proofs",
 * CONCUR 2013) and Bouajjani, Emmi, Enea and Hamza ("On reducing
 * linearizability to state reachability", ICALP 2015), a history of such a
 * collection is linearizable exactly when it contains none of a few
 * violation patterns, each about one or two values (plus, for an empty
 * answer, the values around it). Each pattern below is found in O(n log n)
 * over the whole history, so 100,000 operations take milliseconds.
 *
 * Notation for a value v: its add (enqueue/push) ran over [a, b], its
 * removal (dequeue/pop), if any, over [c, d]. "x precedes y" means x
 * responded before y was invoked (resp(x) < inv(y)); then x takes effect
 * first in every linearization. Operations with equal times overlap.
 *
 * Both kinds:
 *   UNKNOWN     a removal returned a value no add put in.
 *   TWICE       two removals returned the same value.
 *   BEFORE_ADD  a removal of v precedes the add of v.
 *   EMPTY       an empty answer (NOT_FOUND) over [e, f] needs a moment in
 *               [e, f] when the structure held nothing. Value v is certainly
 *               inside during the open interval (b, c) (after its add
 *               certainly happened, before its removal could have started;
 *               (b, infinity) when never removed). If the union of these
 *               intervals covers [e, f], no such moment exists. Ordering
 *               constraints between values cannot make a value stay longer
 *               than its own interval in a way the union misses: a value
 *               kept inside by another value's later removal (FIFO: w added
 *               before v must leave before v does) is covered by that other
 *               value's own interval, which spans the same time.
 * Queues (FIFO: the add order is the removal order):
 *   FIFO        u's add precedes v's add, v is removed, and u's removal
 *               does not start before v's removal ends (v came out first
 *               although u went in first).
 *   FIFO_LOST   u's add precedes v's add, v is removed, u never is.
 * Stacks (LIFO: v added while u is inside leaves before u):
 *   LIFO        u's add precedes v's add, v's add precedes u's removal (so v
 *               went in while u was certainly inside), and v's removal does
 *               not end before u's removal starts, or v is never removed.
 *
 * For queues these patterns are complete (the papers above), and
 * tests/test_linearize.py compares the verdicts with an exhaustive search on
 * many small random histories, correct and broken. For stacks the pairwise
 * patterns are not complete (a violation can need a chain of three values:
 * see stack.c), so a stack history in which no pattern is found is decided
 * by the exact search in stack.c; the patterns stay in front because they
 * are cheap and name the values at fault.
 *
 * Results: add OK puts the value in; remove OK takes it out; remove
 * NOT_FOUND is the empty answer. Every other result (FULL, BUSY, NOMEM,
 * INVALID, CORRUPT) is an operation that took no effect: left out, counted
 * as ignored. A FULL answer is thus not checked against the capacity (it
 * changes nothing, so it cannot make a wrong value come out; that the
 * structure was really full is a progress property, not a safety one).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lin.h"

#define NONE UINT32_MAX
#define INF UINT64_MAX

struct val {
	uint64_t v;
	uint64_t a, b, c, d; /* add [a, b], removal [c, d] (c = d = INF: never removed) */
	uint32_t add, rem;   /* record indices; rem NONE when never removed */
};

struct rv {
	uint64_t v;
	uint32_t rec;
};

static int rv_cmp(const void *x, const void *y)
{
	const struct rv *p = x, *q = y;

	if (p->v != q->v)
		return p->v < q->v ? -1 : 1;
	return p->rec < q->rec ? -1 : p->rec > q->rec;
}

static int cmp_u64(uint64_t x, uint64_t y)
{
	return x < y ? -1 : x > y;
}

static int val_by_b(const void *x, const void *y)
{
	const struct val *p = x, *q = y;

	return cmp_u64(p->b, q->b) ? cmp_u64(p->b, q->b) : cmp_u64(p->v, q->v);
}

/* presence intervals (lo, hi), open, and whose they are */
struct iv {
	uint64_t lo, hi;
	uint32_t val;
};

static int iv_cmp(const void *x, const void *y)
{
	const struct iv *p = x, *q = y;

	return cmp_u64(p->lo, q->lo) ? cmp_u64(p->lo, q->lo) : cmp_u64(q->hi, p->hi);
}

static void set_idx(struct lin_out *out, int what, uint64_t key, const uint32_t *idx, uint32_t n)
{
	uint32_t i;

	out->verdict = LIN_VIOLATION;
	out->what = what;
	out->key = key;
	out->nidx = 0;
	for (i = 0; i < n && out->nidx < LIN_IDX_MAX; i++)
		if (idx[i] != NONE)
			out->idx[out->nidx++] = idx[i];
}

/* queue: FIFO and FIFO_LOST. vals sorted by b. */
static int check_fifo(const struct val *vals, size_t nv, struct lin_out *out)
{
	/* prefix over the b order: the latest removal start among removed values,
	 * and the first never-removed value */
	uint64_t *pmax = malloc((nv ? nv : 1) * sizeof(*pmax));
	uint32_t *parg = malloc((nv ? nv : 1) * sizeof(*parg));
	uint32_t lost = NONE;
	size_t i;
	int bad = 0;

	if (!pmax || !parg) {
		free(pmax);
		free(parg);
		return -1;
	}
	for (i = 0; i < nv; i++) {
		uint64_t m = i ? pmax[i - 1] : 0;
		uint32_t arg = i ? parg[i - 1] : NONE;

		if (vals[i].rem != NONE && (arg == NONE || vals[i].c > m)) {
			m = vals[i].c;
			arg = (uint32_t)i;
		}
		pmax[i] = m;
		parg[i] = arg;
		if (vals[i].rem == NONE && lost == NONE)
			lost = (uint32_t)i;
	}
	for (i = 0; i < nv && !bad; i++) {
		const struct val *v = &vals[i];
		size_t lo = 0, hi = nv;

		if (v->rem == NONE)
			continue;
		/* k: values whose add ended before v's add began (b < v.a) */
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;

			if (vals[mid].b < v->a)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (!lo)
			continue;
		if (lost != NONE && lost < lo) {
			uint32_t idx[3] = {vals[lost].add, v->add, v->rem};

			set_idx(out, LIN_W_FIFO_LOST, vals[lost].v, idx, 3);
			bad = 1;
		} else if (parg[lo - 1] != NONE && pmax[lo - 1] > v->d) {
			const struct val *u = &vals[parg[lo - 1]];
			uint32_t idx[4] = {u->add, v->add, v->rem, u->rem};

			set_idx(out, LIN_W_FIFO, u->v, idx, 4);
			bad = 1;
		}
	}
	free(pmax);
	free(parg);
	return bad;
}

/*
 * stack: LIFO. For each removed u, is there a v with a_v > b_u, b_v < c_u
 * and (c_v > d_u or never removed)? Removed values u in order of c; values v
 * enter a max segment tree (indexed by the rank of a_v, holding c_v or INF)
 * once b_v < c_u; the query is over the ranks with a_v > b_u.
 */
struct seg {
	uint64_t *mx;
	uint32_t *arg;
	size_t size;
};

static void seg_set(struct seg *s, size_t pos, uint64_t x, uint32_t arg)
{
	size_t i = pos + s->size;

	if (s->arg[i] != NONE && s->mx[i] >= x)
		return;
	s->mx[i] = x;
	s->arg[i] = arg;
	for (i /= 2; i; i /= 2) {
		size_t l = 2 * i, r = 2 * i + 1;
		size_t w = s->arg[r] == NONE || (s->arg[l] != NONE && s->mx[l] >= s->mx[r]) ? l : r;

		s->mx[i] = s->mx[w];
		s->arg[i] = s->arg[w];
	}
}

/* max over [lo, size) */
static uint32_t seg_query(const struct seg *s, size_t lo, uint64_t *mx)
{
	size_t l = lo + s->size, r = 2 * s->size;
	uint32_t best = NONE;

	*mx = 0;
	while (l < r) {
		if (l & 1) {
			if (s->arg[l] != NONE && (best == NONE || s->mx[l] > *mx)) {
				*mx = s->mx[l];
				best = s->arg[l];
			}
			l++;
		}
		if (r & 1) {
			r--;
			if (s->arg[r] != NONE && (best == NONE || s->mx[r] > *mx)) {
				*mx = s->mx[r];
				best = s->arg[r];
			}
		}
		l /= 2;
		r /= 2;
	}
	return best;
}

struct ord {
	uint64_t t;
	uint32_t i;
};

static int ord_cmp(const void *x, const void *y)
{
	const struct ord *p = x, *q = y;

	return cmp_u64(p->t, q->t) ? cmp_u64(p->t, q->t) : cmp_u64(p->i, q->i);
}

static int check_lifo(const struct val *vals, size_t nv, struct lin_out *out)
{
	struct ord *bya = malloc((nv ? nv : 1) * sizeof(*bya));
	struct ord *byc = malloc((nv ? nv : 1) * sizeof(*byc));
	size_t *rank = malloc((nv ? nv : 1) * sizeof(*rank));
	struct seg s = {0};
	size_t i, nc = 0, nb = 0;
	int bad = -1;

	s.size = 1;
	while (s.size < nv)
		s.size *= 2;
	s.mx = calloc(2 * s.size, sizeof(*s.mx));
	s.arg = malloc(2 * s.size * sizeof(*s.arg));
	if (!bya || !byc || !rank || !s.mx || !s.arg)
		goto out;
	memset(s.arg, 0xff, 2 * s.size * sizeof(*s.arg));
	for (i = 0; i < nv; i++) {
		bya[i] = (struct ord){.t = vals[i].a, .i = (uint32_t)i};
		if (vals[i].rem != NONE)
			byc[nc++] = (struct ord){.t = vals[i].c, .i = (uint32_t)i};
	}
	qsort(bya, nv, sizeof(*bya), ord_cmp);
	qsort(byc, nc, sizeof(*byc), ord_cmp);
	for (i = 0; i < nv; i++)
		rank[bya[i].i] = i;
	/* vals is sorted by b: add them in that order */
	bad = 0;
	for (i = 0; i < nc && !bad; i++) {
		const struct val *u = &vals[byc[i].i];
		size_t lo = 0, hi = nv;
		uint64_t mx;
		uint32_t w;

		while (nb < nv && vals[nb].b < u->c) {
			seg_set(&s, rank[nb], vals[nb].rem == NONE ? INF : vals[nb].c, (uint32_t)nb);
			nb++;
		}
		/* ranks whose a > u.b */
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;

			if (bya[mid].t <= u->b)
				lo = mid + 1;
			else
				hi = mid;
		}
		w = seg_query(&s, lo, &mx);
		if (w != NONE && mx > u->d) {
			const struct val *v = &vals[w];
			uint32_t idx[4] = {u->add, v->add, u->rem, v->rem};

			set_idx(out, LIN_W_LIFO, u->v, idx, 4);
			bad = 1;
		}
	}
out:
	free(bya);
	free(byc);
	free(rank);
	free(s.mx);
	free(s.arg);
	return bad;
}

/* EMPTY: is some empty answer's [e, f] covered by the union of the open presence intervals? */
static int check_empty(const struct val *vals, size_t nv, const struct ds_hist_rec *recs,
		       const uint32_t *empties, size_t ne, struct lin_out *out)
{
	struct iv *ivs = malloc((nv ? nv : 1) * sizeof(*ivs));
	struct iv *comp = malloc((nv ? nv : 1) * sizeof(*comp)); /* merged, with their first interval */
	size_t *first = malloc((nv ? nv : 1) * sizeof(*first));
	size_t ni = 0, nc = 0, i;
	int bad = 0;

	if (!ivs || !comp || !first) {
		bad = -1;
		goto out;
	}
	for (i = 0; i < nv; i++)
		if (vals[i].b < vals[i].c) /* c is INF when never removed */
			ivs[ni++] = (struct iv){.lo = vals[i].b, .hi = vals[i].c, .val = (uint32_t)i};
	qsort(ivs, ni, sizeof(*ivs), iv_cmp);
	for (i = 0; i < ni; i++) {
		/* open intervals that only touch leave the shared point free */
		if (nc && ivs[i].lo < comp[nc - 1].hi) {
			if (ivs[i].hi > comp[nc - 1].hi)
				comp[nc - 1].hi = ivs[i].hi;
			continue;
		}
		comp[nc] = ivs[i];
		first[nc++] = i;
	}
	for (i = 0; i < ne && !bad; i++) {
		const struct ds_hist_rec *r = &recs[empties[i]];
		size_t lo = 0, hi = nc;

		/* the last component starting before e */
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;

			if (comp[mid].lo < r->t_inv)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo && comp[lo - 1].hi > r->t_resp) {
			/* name a chain of values that covers [e, f]: greedily, the interval
			 * reaching furthest among those that started before the covered point */
			uint32_t idx[LIN_IDX_MAX];
			uint32_t n = 0;
			const size_t j = first[lo - 1];
			uint64_t pos = r->t_inv;

			idx[n++] = empties[i];
			while (n + 2 <= LIN_IDX_MAX) {
				size_t k, pick = ni;

				for (k = j; k < ni && ivs[k].lo < pos; k++)
					if (ivs[k].hi > pos && (pick == ni || ivs[k].hi > ivs[pick].hi))
						pick = k;
				if (pick == ni)
					break;
				idx[n++] = vals[ivs[pick].val].add;
				idx[n++] = vals[ivs[pick].val].rem;
				if (ivs[pick].hi > r->t_resp)
					break;
				pos = ivs[pick].hi;
			}
			set_idx(out, LIN_W_EMPTY, 0, idx, n);
			bad = 1;
		}
	}
out:
	free(ivs);
	free(comp);
	free(first);
	return bad;
}

/* No pattern found in a stack history: decide it exactly (stack.c). Returns 0
 * (linearizable), 1 (verdict set in out) or -1 (no memory). */
static int stack_search(const struct val *vals, size_t nv, const uint32_t *empties, size_t ne,
			const struct ds_hist_rec *recs, uint64_t budget, struct lin_out *out)
{
	struct lin_sop *ops = malloc((2 * nv + ne + 1) * sizeof(*ops));
	size_t m = 0, i;
	int v;

	if (!ops)
		return -1;
	for (i = 0; i < nv; i++) {
		ops[m++] = (struct lin_sop){.inv = vals[i].a, .resp = vals[i].b, .vid = (uint32_t)i,
					    .rec = vals[i].add, .type = LIN_S_PUSH};
		if (vals[i].rem != NONE)
			ops[m++] = (struct lin_sop){.inv = vals[i].c, .resp = vals[i].d, .vid = (uint32_t)i,
						    .rec = vals[i].rem, .type = LIN_S_POP};
	}
	for (i = 0; i < ne; i++)
		ops[m++] = (struct lin_sop){.inv = recs[empties[i]].t_inv, .resp = recs[empties[i]].t_resp,
					    .rec = empties[i], .type = LIN_S_EMPTY};
	v = lin_stack_search(ops, m, nv, budget, out);
	free(ops);
	if (v == LIN_OK)
		return 0;
	if (v == LIN_NO_MEMORY)
		return -1;
	out->verdict = v;
	return 1;
}

void lin_check_seq(const struct ds_hist_rec *recs, size_t n, int lifo, uint64_t budget,
		   struct lin_out *out)
{
	struct rv *adds = NULL, *rems = NULL;
	struct val *vals = NULL;
	uint32_t *empties = NULL;
	size_t na = 0, nr = 0, ne = 0, nv = 0, i, j;
	int r;

	memset(out, 0, sizeof(*out));
	out->verdict = LIN_NO_MEMORY;
	if (n >= UINT32_MAX) {
		out->verdict = LIN_BAD_INPUT;
		snprintf(out->err, sizeof(out->err), "%zu records: too many to check at once", n);
		return;
	}
	adds = malloc((n ? n : 1) * sizeof(*adds));
	rems = malloc((n ? n : 1) * sizeof(*rems));
	empties = malloc((n ? n : 1) * sizeof(*empties));
	if (!adds || !rems || !empties)
		goto done;
	for (i = 0; i < n; i++) {
		const struct ds_hist_rec *rc = &recs[i];

		if (rc->t_resp < rc->t_inv) {
			out->verdict = LIN_BAD_INPUT;
			snprintf(out->err, sizeof(out->err),
				 "record %zu responds before it is invoked (t_inv %llu > t_resp %llu)", i,
				 (unsigned long long)rc->t_inv, (unsigned long long)rc->t_resp);
			goto done;
		}
		if (rc->op == DS_OP_INSERT && rc->result == DS_OK)
			adds[na++] = (struct rv){.v = rc->key, .rec = (uint32_t)i};
		else if (rc->op == DS_OP_POP && rc->result == DS_OK)
			rems[nr++] = (struct rv){.v = rc->key, .rec = (uint32_t)i};
		else if (rc->op == DS_OP_POP && rc->result == DS_NOT_FOUND)
			empties[ne++] = (uint32_t)i;
		else if (rc->result == DS_OK || rc->result == DS_NOT_FOUND || rc->result == DS_EXISTS ||
			 (rc->op != DS_OP_INSERT && rc->op != DS_OP_POP && rc->result != DS_INVALID)) {
			out->verdict = LIN_BAD_INPUT;
			snprintf(out->err, sizeof(out->err),
				 "record %zu: operation %u with result %u is not an operation of a %s", i,
				 rc->op, rc->result, lifo ? "stack" : "queue");
			goto done;
		} else {
			out->ignored++;
		}
	}
	out->checked = na + nr + ne;
	qsort(adds, na, sizeof(*adds), rv_cmp);
	qsort(rems, nr, sizeof(*rems), rv_cmp);
	for (i = 1; i < na; i++)
		if (adds[i].v == adds[i - 1].v) {
			out->verdict = LIN_BAD_INPUT;
			snprintf(out->err, sizeof(out->err),
				 "value %llu is added twice (records %u and %u): the %s check needs distinct values",
				 (unsigned long long)adds[i].v, adds[i - 1].rec, adds[i].rec,
				 lifo ? "stack" : "queue");
			goto done;
		}
	vals = malloc((na ? na : 1) * sizeof(*vals));
	if (!vals)
		goto done;
	/* join removals to adds by value */
	for (i = 0, j = 0; i < nr; i++) {
		const struct ds_hist_rec *rm = &recs[rems[i].rec];

		if (i && rems[i].v == rems[i - 1].v) {
			uint32_t idx[3] = {rems[i - 1].rec, rems[i].rec, NONE};

			while (j < na && adds[j].v < rems[i].v)
				j++;
			if (j < na && adds[j].v == rems[i].v)
				idx[2] = adds[j].rec;
			set_idx(out, LIN_W_TWICE, rems[i].v, idx, 3);
			goto done;
		}
		while (j < na && adds[j].v < rems[i].v)
			j++;
		if (j == na || adds[j].v != rems[i].v) {
			uint32_t idx[1] = {rems[i].rec};

			set_idx(out, LIN_W_UNKNOWN, rems[i].v, idx, 1);
			goto done;
		}
		if (rm->t_resp < recs[adds[j].rec].t_inv) {
			uint32_t idx[2] = {adds[j].rec, rems[i].rec};

			set_idx(out, LIN_W_BEFORE_ADD, rems[i].v, idx, 2);
			goto done;
		}
	}
	for (i = 0, j = 0; i < na; i++) {
		const struct ds_hist_rec *ad = &recs[adds[i].rec];
		struct val *v = &vals[nv++];

		*v = (struct val){.v = adds[i].v, .a = ad->t_inv, .b = ad->t_resp, .c = INF, .d = INF,
				  .add = adds[i].rec, .rem = NONE};
		while (j < nr && rems[j].v < adds[i].v)
			j++;
		if (j < nr && rems[j].v == adds[i].v) {
			v->c = recs[rems[j].rec].t_inv;
			v->d = recs[rems[j].rec].t_resp;
			v->rem = rems[j].rec;
		}
	}
	qsort(vals, nv, sizeof(*vals), val_by_b);
	r = lifo ? check_lifo(vals, nv, out) : check_fifo(vals, nv, out);
	if (r < 0)
		goto done;
	if (!r) {
		r = check_empty(vals, nv, recs, empties, ne, out);
		if (r < 0)
			goto done;
	}
	if (!r && lifo) {
		r = stack_search(vals, nv, empties, ne, recs, budget, out);
		if (r < 0)
			goto done;
	}
	if (!r)
		out->verdict = LIN_OK;
done:
	free(adds);
	free(rems);
	free(vals);
	free(empties);
}
