// SPDX-License-Identifier: MIT
/*
 * Maps and sets: is there a linearization of the history?
 *
 * P-compositionality (Herlihy and Wing's locality, used for checking by Horn
 * and Kroening): a map is a product of one small object per key, and every
 * insert, delete and search touches exactly one key, so the history has a
 * linearization if and only if each key's sub-history has one. The records
 * are sorted by (key, invocation) and every key is decided on its own; a
 * key's state is "absent" or "present with value v".
 *
 * Each key's sub-history is decided by the Wing-Gong search with the
 * improvements Lowe describes ("Testing for linearizability", 2017):
 *
 * - the history is a list of call and return events in time order; the ops
 *   that may take effect next are those whose call comes before the first
 *   return still in the list (an op that responded before another was
 *   called must take effect first). Taking an op out of the list and putting
 *   it back are O(1) unlinks and relinks, undone in reverse order on
 *   backtracking;
 * - depth-first: linearize a candidate that is legal in the current state,
 *   go on; at a dead end undo the last choice and try the next candidate;
 * - memoisation: a configuration is the set of ops linearized plus the
 *   state. The search from a configuration depends only on it, so one that
 *   was reached before (and, since the search is still running, failed) is
 *   not explored again. This bounds the work by the number of distinct
 *   configurations instead of the number of orders.
 *
 * wgl.h keeps the list and the cache (shared with the stack search).
 *
 * Operations and their effect on one key (value compared for maps only):
 *   insert OK        absent -> present(v)
 *   insert EXISTS    present, unchanged
 *   delete OK        present(v) -> absent, v is the value it returned
 *   delete NOT_FOUND absent, unchanged
 *   search OK        present(v), unchanged, v is the value it returned
 *   search NOT_FOUND absent, unchanged
 *   pop OK           (ordered maps) checked as a delete OK of the key it
 *                    returned; that the key was the smallest is not checked
 *                    (it relates all keys, so it does not decompose by key),
 *                    and pops are counted in lin_out.unchecked
 *   pop NOT_FOUND    not checked (same reason), counted in unchecked
 * Every other result (NOMEM, BUSY, FULL, INVALID, CORRUPT) means the
 * operation had no effect: it is left out, counted in lin_out.ignored.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lin.h"
#include "wgl.h"

struct kop {
	uint64_t inv, resp, value;
	uint32_t rec;  /* index into the records */
	uint8_t kind;  /* enum kop_kind */
};

enum kop_kind {
	K_INS_OK,
	K_INS_EXISTS,
	K_DEL_OK,
	K_DEL_NONE,
	K_SEARCH_OK,
	K_SEARCH_NONE,
};

struct kstate {
	uint64_t value;
	int present;
};

struct frame {
	uint32_t op;
	uint32_t maxlin; /* before this op was linearized */
	struct kstate st;
};

struct work {
	struct kop *ops;
	uint64_t *inv, *resp; /* the ops' times, for wgl_events */
	struct wgl_ev *ev;
	uint32_t *callev, *retev;
	uint64_t *lin; /* bitmap of linearized ops, one spare word */
	struct frame *stack;
	size_t opcap;
	struct wgl_cache cache;
};

static int kop_cmp(const void *a, const void *b)
{
	const struct kop *x = a, *y = b;

	if (x->inv != y->inv)
		return x->inv < y->inv ? -1 : 1;
	if (x->resp != y->resp)
		return x->resp < y->resp ? -1 : 1;
	return x->rec < y->rec ? -1 : x->rec > y->rec;
}

/* The records' (key, invocation) order, for grouping by key. */
struct keyidx {
	uint64_t key, inv;
	uint32_t rec;
};

static int keyidx_cmp(const void *a, const void *b)
{
	const struct keyidx *x = a, *y = b;

	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	if (x->inv != y->inv)
		return x->inv < y->inv ? -1 : 1;
	return x->rec < y->rec ? -1 : x->rec > y->rec;
}

static int apply(const struct kop *o, const struct kstate *s, struct kstate *ns, unsigned flags)
{
	int same = (flags & LIN_IGNORE_VALUES) || s->value == o->value;

	*ns = *s;
	switch (o->kind) {
	case K_INS_OK:
		if (s->present)
			return 0;
		ns->present = 1;
		ns->value = (flags & LIN_IGNORE_VALUES) ? 0 : o->value;
		return 1;
	case K_INS_EXISTS:
		return s->present;
	case K_DEL_OK:
		if (!s->present || !same)
			return 0;
		ns->present = 0;
		ns->value = 0;
		return 1;
	case K_SEARCH_OK:
		return s->present && same;
	default: /* K_DEL_NONE, K_SEARCH_NONE */
		return !s->present;
	}
}

static int work_reserve(struct work *w, size_t m)
{
	if (m <= w->opcap)
		return 0;
	free(w->ops);
	free(w->inv);
	free(w->resp);
	free(w->ev);
	free(w->callev);
	free(w->retev);
	free(w->lin);
	free(w->stack);
	w->ops = malloc(m * sizeof(*w->ops));
	w->inv = malloc(m * sizeof(*w->inv));
	w->resp = malloc(m * sizeof(*w->resp));
	w->ev = malloc(2 * m * sizeof(*w->ev));
	w->callev = malloc(m * sizeof(*w->callev));
	w->retev = malloc(m * sizeof(*w->retev));
	w->lin = calloc(m / 64 + 2, sizeof(*w->lin));
	w->stack = malloc((m + 1) * sizeof(*w->stack));
	w->opcap = m;
	if (!w->ops || !w->inv || !w->resp || !w->ev || !w->callev || !w->retev || !w->lin || !w->stack) {
		w->opcap = 0;
		return -1;
	}
	return 0;
}

static void work_free(struct work *w)
{
	free(w->ops);
	free(w->inv);
	free(w->resp);
	free(w->ev);
	free(w->callev);
	free(w->retev);
	free(w->lin);
	free(w->stack);
	wgl_cache_free(&w->cache);
}

/*
 * Decide one key's m ops (w->ops[0..m), sorted by invocation), starting
 * from state init. Returns LIN_OK, LIN_VIOLATION (out filled), LIN_UNDECIDED
 * or LIN_NO_MEMORY.
 */
static int check_key(struct work *w, size_t m, const struct kstate *init, unsigned flags, uint64_t budget,
		     struct lin_out *out)
{
	struct kop *ops = w->ops;
	struct wgl_ev *ev = w->ev;
	struct frame *stack = w->stack;
	uint32_t head, cur, maxlin = NIL, depth = 0, best = 0, blocked = NIL;
	uint32_t besttail[4] = {NIL, NIL, NIL, NIL};
	struct kstate st = *init, bestst = *init;
	uint64_t steps = 0, tag[WGL_TAG] = {0, 0, 0};
	size_t i;

	for (i = 0; i < m; i++) {
		w->inv[i] = ops[i].inv;
		w->resp[i] = ops[i].resp;
	}
	head = wgl_events(ev, m, w->inv, w->resp, w->callev, w->retev);
	memset(w->lin, 0, (m / 64 + 2) * sizeof(*w->lin));
	wgl_cache_reset(&w->cache);
	cur = head;
	for (;;) {
		int found = 0;

		if (head == NIL)
			break; /* every op linearized */
		while (cur != NIL && !ev[cur].ret) {
			uint32_t o = ev[cur].op, f;
			struct kstate ns;

			if (++steps > budget && budget) {
				out->steps += steps;
				return LIN_UNDECIDED;
			}
			if (apply(&ops[o], &st, &ns, flags)) {
				uint32_t nmax = maxlin == NIL || o > maxlin ? o : maxlin;
				int r;

				w->lin[o / 64] |= 1ULL << (o % 64);
				wgl_unlink(ev, &head, w->callev[o]);
				wgl_unlink(ev, &head, w->retev[o]);
				f = head == NIL ? (uint32_t)m : ev[head].op;
				tag[0] = (uint64_t)ns.present;
				tag[1] = ns.value;
				r = wgl_cache_add(&w->cache, w->lin, f, nmax, tag);
				if (r < 0)
					return LIN_NO_MEMORY;
				if (r) {
					stack[depth++] = (struct frame){.op = o, .maxlin = maxlin, .st = st};
					st = ns;
					maxlin = nmax;
					cur = head;
					found = 1;
					break;
				}
				wgl_relink(ev, &head, w->retev[o]);
				wgl_relink(ev, &head, w->callev[o]);
				w->lin[o / 64] &= ~(1ULL << (o % 64));
			}
			cur = ev[cur].next;
		}
		if (found)
			continue;
		/* a dead end: remember the deepest one for the explanation */
		if (depth >= best) {
			uint32_t e = head, k;

			while (e != NIL && !ev[e].ret)
				e = ev[e].next;
			best = depth;
			bestst = st;
			blocked = e != NIL ? ev[e].op : NIL;
			for (k = 0; k < 4; k++)
				besttail[k] = depth > k ? stack[depth - 1 - k].op : NIL;
		}
		if (!depth) {
			uint32_t k, n = 0;

			out->steps += steps;
			out->key_ops = m;
			out->prefix = best;
			out->state_present = bestst.present;
			out->state_value = bestst.value;
			if (blocked != NIL)
				out->idx[n++] = ops[blocked].rec;
			for (k = 0; k < 4; k++)
				if (besttail[k] != NIL)
					out->idx[n++] = ops[besttail[k]].rec;
			out->nidx = n;
			return LIN_VIOLATION;
		}
		depth--;
		{
			uint32_t o = stack[depth].op;

			wgl_relink(ev, &head, w->retev[o]);
			wgl_relink(ev, &head, w->callev[o]);
			w->lin[o / 64] &= ~(1ULL << (o % 64));
			st = stack[depth].st;
			maxlin = stack[depth].maxlin;
			cur = ev[w->callev[o]].next;
		}
	}
	out->steps += steps;
	return LIN_OK;
}

static int classify(const struct ds_hist_rec *r, uint8_t *kind, int *pop)
{
	*pop = 0;
	switch (r->op) {
	case DS_OP_INSERT:
		if (r->result == DS_OK)
			*kind = K_INS_OK;
		else if (r->result == DS_EXISTS)
			*kind = K_INS_EXISTS;
		else
			break;
		return 1;
	case DS_OP_DELETE:
	case DS_OP_POP:
		*pop = r->op == DS_OP_POP;
		if (r->result == DS_OK)
			*kind = K_DEL_OK;
		else if (r->result == DS_NOT_FOUND)
			*kind = K_DEL_NONE;
		else
			break;
		return 1;
	case DS_OP_SEARCH:
		if (r->result == DS_OK)
			*kind = K_SEARCH_OK;
		else if (r->result == DS_NOT_FOUND)
			*kind = K_SEARCH_NONE;
		else
			break;
		return 1;
	default:
		break;
	}
	return 0;
}

/* results that say the operation took no effect */
static int no_effect(uint8_t result)
{
	return result == DS_NOMEM || result == DS_BUSY || result == DS_FULL || result == DS_INVALID ||
	       result == DS_CORRUPT;
}

void lin_check_keyed(const struct ds_hist_rec *recs, size_t n, unsigned flags,
		     const uint64_t (*initial)[2], size_t ninitial, uint64_t budget, struct lin_out *out)
{
	struct keyidx *order = NULL;
	struct work w = {0};
	size_t nk = 0, i, j, ii = 0;

	memset(out, 0, sizeof(*out));
	if (n >= UINT32_MAX / 2) {
		out->verdict = LIN_BAD_INPUT;
		snprintf(out->err, sizeof(out->err), "%zu records: at most %u can be checked at once", n,
			 UINT32_MAX / 2 - 1);
		return;
	}
	order = malloc((n ? n : 1) * sizeof(*order));
	if (!order) {
		out->verdict = LIN_NO_MEMORY;
		return;
	}
	for (i = 0; i < n; i++) {
		const struct ds_hist_rec *r = &recs[i];
		uint8_t kind;
		int pop;

		if (r->t_resp < r->t_inv) {
			out->verdict = LIN_BAD_INPUT;
			snprintf(out->err, sizeof(out->err),
				 "record %zu responds before it is invoked (t_inv %llu > t_resp %llu)", i,
				 (unsigned long long)r->t_inv, (unsigned long long)r->t_resp);
			goto done;
		}
		if (r->op == DS_OP_INIT || r->op >= DS_OP_VERIFY || no_effect(r->result)) {
			out->ignored++;
			continue;
		}
		if (!classify(r, &kind, &pop)) {
			out->verdict = LIN_BAD_INPUT;
			snprintf(out->err, sizeof(out->err),
				 "record %zu: operation %u cannot answer result %u on a map or set", i, r->op,
				 r->result);
			goto done;
		}
		if (pop) {
			out->unchecked++;
			if (kind == K_DEL_NONE)
				continue; /* an empty pop relates every key: not decomposable */
		}
		order[nk++] = (struct keyidx){.key = r->key, .inv = r->t_inv, .rec = (uint32_t)i};
	}
	qsort(order, nk, sizeof(*order), keyidx_cmp);
	out->verdict = LIN_OK;
	for (i = 0; i < nk; i = j) {
		struct kstate init = {0};
		size_t m, k;
		int pop, r;

		for (j = i + 1; j < nk && order[j].key == order[i].key; j++)
			;
		m = j - i;
		if (work_reserve(&w, m)) {
			out->verdict = LIN_NO_MEMORY;
			goto done;
		}
		for (k = 0; k < m; k++) {
			const struct ds_hist_rec *rr = &recs[order[i + k].rec];

			w.ops[k] = (struct kop){.inv = rr->t_inv, .resp = rr->t_resp, .value = rr->value,
						.rec = order[i + k].rec};
			classify(rr, &w.ops[k].kind, &pop);
		}
		qsort(w.ops, m, sizeof(*w.ops), kop_cmp);
		/* initial is sorted by key, and so are the groups: walk both */
		while (ii < ninitial && initial[ii][0] < order[i].key)
			ii++;
		if (ii < ninitial && initial[ii][0] == order[i].key) {
			init.present = 1;
			init.value = (flags & LIN_IGNORE_VALUES) ? 0 : initial[ii][1];
		}
		out->partitions++;
		r = check_key(&w, m, &init, flags, budget, out);
		if (r != LIN_OK) {
			out->verdict = r;
			out->key = order[i].key;
			if (r == LIN_VIOLATION)
				out->what = LIN_W_KEY;
			goto done;
		}
		out->checked += m;
	}
done:
	free(order);
	work_free(&w);
}
