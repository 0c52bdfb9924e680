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
 * The set of linearized ops is kept canonical and small: every op before
 * the first unlinearized one f (in invocation order) is linearized, so the
 * set is f plus the bits of ops after f, up to the last linearized one.
 * Those can only be ops called before f returned, so the stored bitmap is
 * as long as the overlap around f, not as long as the history.
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

/* one event of the call/return list */
struct kev {
	uint64_t t;
	uint32_t op;
	uint32_t prev, next; /* NIL at the ends */
	uint8_t ret;
};

#define NIL UINT32_MAX

struct kstate {
	uint64_t value;
	int present;
};

struct frame {
	uint32_t op;
	uint32_t maxlin; /* before this op was linearized */
	struct kstate st;
};

/* Lowe's cache: configurations seen, in a byte pool, found through an open-addressed table. */
struct cache {
	uint64_t *pool;
	size_t used, cap; /* in words */
	uint32_t *slots;  /* offset + 1 into pool; 0: empty */
	size_t nslots, count;
};

struct work {
	struct kop *ops;
	struct kev *ev;
	uint32_t *callev, *retev;
	uint64_t *lin; /* bitmap of linearized ops, one spare word */
	struct frame *stack;
	size_t opcap;
	struct cache cache;
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

/* calls before returns at the same time: such ops overlap (neither responded
 * before the other was called), so either may take effect first */
static int kev_cmp(const void *a, const void *b)
{
	const struct kev *x = a, *y = b;

	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	if (x->ret != y->ret)
		return x->ret ? 1 : -1;
	return x->op < y->op ? -1 : x->op > y->op;
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

static uint64_t mix(uint64_t h, uint64_t x)
{
	h ^= x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
	h *= 0xff51afd7ed558ccdULL;
	return h ^ (h >> 32);
}

/* 64 bits of the bitmap from bit position pos on (the bitmap has a spare word) */
static uint64_t bits_at(const uint64_t *b, uint64_t pos)
{
	uint64_t w = pos >> 6, s = pos & 63;

	return s ? (b[w] >> s) | (b[w + 1] << (64 - s)) : b[w];
}

static void cache_reset(struct cache *c)
{
	c->used = 0;
	c->count = 0;
	if (c->slots)
		memset(c->slots, 0, c->nslots * sizeof(*c->slots));
}

static int cache_grow_slots(struct cache *c)
{
	size_t n = c->nslots ? c->nslots * 2 : 4096, i;
	uint32_t *s = calloc(n, sizeof(*s));

	if (!s)
		return -1;
	for (i = 0; i < c->nslots; i++) {
		uint32_t off = c->slots[i];
		size_t j;

		if (!off)
			continue;
		j = c->pool[off - 1] & (n - 1); /* the stored hash */
		while (s[j])
			j = (j + 1) & (n - 1);
		s[j] = off;
	}
	free(c->slots);
	c->slots = s;
	c->nslots = n;
	return 0;
}

/*
 * Insert the configuration (f, the linearized ops after f, state). Returns 1
 * when it is new, 0 when it was seen before, -1 without memory. An entry is
 * [hash, f, nwords | present << 32, value, words...].
 */
static int cache_add(struct cache *c, const uint64_t *lin, uint32_t f, uint32_t maxlin,
		     const struct kstate *st)
{
	uint64_t nbits = maxlin != NIL && maxlin > f ? maxlin - f : 0;
	uint64_t nw = (nbits + 63) / 64, h, i, *e;
	size_t j, need = 4 + nw;

	h = mix(mix(mix(f, (uint64_t)st->present), st->value), nw);
	for (i = 0; i < nw; i++) {
		uint64_t w = bits_at(lin, (uint64_t)f + 1 + 64 * i);

		if (i == nw - 1 && nbits % 64)
			w &= (1ULL << (nbits % 64)) - 1;
		h = mix(h, w);
	}
	if ((c->count + 1) * 2 > c->nslots && cache_grow_slots(c))
		return -1;
	j = h & (c->nslots - 1);
	for (; c->slots[j]; j = (j + 1) & (c->nslots - 1)) {
		e = c->pool + c->slots[j] - 1;
		if (e[0] != h || e[1] != f || e[2] != (nw | (uint64_t)st->present << 32) || e[3] != st->value)
			continue;
		for (i = 0; i < nw; i++) {
			uint64_t w = bits_at(lin, (uint64_t)f + 1 + 64 * i);

			if (i == nw - 1 && nbits % 64)
				w &= (1ULL << (nbits % 64)) - 1;
			if (e[4 + i] != w)
				break;
		}
		if (i == nw)
			return 0;
	}
	if (c->used + need + 1 >= UINT32_MAX)
		return -1;
	if (c->used + need > c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 65536;
		uint64_t *p;

		while (ncap < c->used + need)
			ncap *= 2;
		p = realloc(c->pool, ncap * sizeof(*p));
		if (!p)
			return -1;
		c->pool = p;
		c->cap = ncap;
	}
	e = c->pool + c->used;
	e[0] = h;
	e[1] = f;
	e[2] = nw | (uint64_t)st->present << 32;
	e[3] = st->value;
	for (i = 0; i < nw; i++) {
		uint64_t w = bits_at(lin, (uint64_t)f + 1 + 64 * i);

		if (i == nw - 1 && nbits % 64)
			w &= (1ULL << (nbits % 64)) - 1;
		e[4 + i] = w;
	}
	c->slots[j] = (uint32_t)(c->used + 1);
	c->used += need;
	c->count++;
	return 1;
}

static int work_reserve(struct work *w, size_t m)
{
	if (m <= w->opcap)
		return 0;
	free(w->ops);
	free(w->ev);
	free(w->callev);
	free(w->retev);
	free(w->lin);
	free(w->stack);
	w->ops = malloc(m * sizeof(*w->ops));
	w->ev = malloc(2 * m * sizeof(*w->ev));
	w->callev = malloc(m * sizeof(*w->callev));
	w->retev = malloc(m * sizeof(*w->retev));
	w->lin = calloc(m / 64 + 2, sizeof(*w->lin));
	w->stack = malloc((m + 1) * sizeof(*w->stack));
	w->opcap = m;
	if (!w->ops || !w->ev || !w->callev || !w->retev || !w->lin || !w->stack) {
		w->opcap = 0;
		return -1;
	}
	return 0;
}

static void work_free(struct work *w)
{
	free(w->ops);
	free(w->ev);
	free(w->callev);
	free(w->retev);
	free(w->lin);
	free(w->stack);
	free(w->cache.pool);
	free(w->cache.slots);
}

/* list surgery: unlink keeps the node's own links, so relinking in reverse order restores it */
static void ev_unlink(struct kev *ev, uint32_t *head, uint32_t i)
{
	if (ev[i].prev != NIL)
		ev[ev[i].prev].next = ev[i].next;
	else
		*head = ev[i].next;
	if (ev[i].next != NIL)
		ev[ev[i].next].prev = ev[i].prev;
}

static void ev_relink(struct kev *ev, uint32_t *head, uint32_t i)
{
	if (ev[i].prev != NIL)
		ev[ev[i].prev].next = i;
	else
		*head = i;
	if (ev[i].next != NIL)
		ev[ev[i].next].prev = i;
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
	struct kev *ev = w->ev;
	struct frame *stack = w->stack;
	uint32_t head, cur, maxlin = NIL, depth = 0, best = 0, blocked = NIL;
	uint32_t besttail[4] = {NIL, NIL, NIL, NIL};
	struct kstate st = *init, bestst = *init;
	uint64_t steps = 0;
	size_t i;

	for (i = 0; i < m; i++) {
		ev[2 * i] = (struct kev){.t = ops[i].inv, .op = (uint32_t)i, .ret = 0};
		ev[2 * i + 1] = (struct kev){.t = ops[i].resp, .op = (uint32_t)i, .ret = 1};
	}
	qsort(ev, 2 * m, sizeof(*ev), kev_cmp);
	for (i = 0; i < 2 * m; i++) {
		ev[i].prev = i ? (uint32_t)(i - 1) : NIL;
		ev[i].next = i + 1 < 2 * m ? (uint32_t)(i + 1) : NIL;
		if (ev[i].ret)
			w->retev[ev[i].op] = (uint32_t)i;
		else
			w->callev[ev[i].op] = (uint32_t)i;
	}
	memset(w->lin, 0, (m / 64 + 2) * sizeof(*w->lin));
	cache_reset(&w->cache);
	head = 0;
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
				ev_unlink(ev, &head, w->callev[o]);
				ev_unlink(ev, &head, w->retev[o]);
				f = head == NIL ? (uint32_t)m : ev[head].op;
				r = cache_add(&w->cache, w->lin, f, nmax, &ns);
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
				ev_relink(ev, &head, w->retev[o]);
				ev_relink(ev, &head, w->callev[o]);
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

			ev_relink(ev, &head, w->retev[o]);
			ev_relink(ev, &head, w->callev[o]);
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
