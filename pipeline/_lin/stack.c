// SPDX-License-Identifier: MIT
/*
 * Stacks: the exact search that seq.c runs when none of the violation
 * patterns is found.
 *
 * The pairwise patterns are not enough for stacks: a violation can need a
 * chain of three or more values (u must lie below w because w is pushed
 * before u's pop and never popped, w below v because of their push times,
 * and v must come out before u: the orders form a cycle, while every pair
 * alone is fine). So, when the patterns find nothing, the history is
 * decided by a Wing-Gong search with Lowe's cache (wgl.h) over the stack's
 * contents, as for one key of a map, with three moves taken without
 * branching because no other choice can do better:
 *
 * - a pop whose value is on top, when it may take effect now: popping it
 *   later only keeps it in the way; whatever a valid order does between now
 *   and its pop is pushes and pops above it, which work the same without it;
 * - an empty pop when the stack is empty (it changes nothing);
 * - a push whose pop may also take effect now: pushed and at once popped,
 *   the value is never in anyone's way.
 *
 * Otherwise the op with the earliest response must take effect before any
 * op called after that response. If it is a pop or an empty pop that cannot
 * take effect now, no push can help, and the branch is dead. If it is a
 * push p, the branches are the pushes that may take effect now, tried in an
 * order that is usually right at once: first those that should end up below
 * p (a push q lies below c when q's push ends before c's pop begins and q's
 * pop ends after c's, or never happens; closed under "below": what lies
 * below those, and so on), then p, then the rest; among each, the one whose
 * pop ends last first. Lazy pushing
 * matters for stress histories, where consumers pop what producers pushed a
 * moment ago: a push taken early would bury the values about to be popped.
 *
 * A configuration's state is the stack's contents, stored as its depth and
 * two independent 64-bit hashes of the contents (so two different stacks
 * are taken as equal with odds of about 2^-128 per pair compared).
 */
#include <stdlib.h>
#include <string.h>

#include "lin.h"
#include "wgl.h"

#define INF UINT64_MAX

struct level {
	uint32_t off, n; /* options in opts[off .. off + n) */
	int32_t pos;     /* the option applied, -1 before the first */
	uint32_t maxlin; /* before it */
};

struct search {
	struct lin_sop *ops;
	size_t m, nv;
	uint64_t *inv, *resp;
	struct wgl_ev *ev;
	uint32_t *callev, *retev, *pushop, *popop, *stamp, *stk;
	uint64_t *lin, *h1, *h2;
	uint32_t *opts;
	size_t nopts, capopts;
	struct level *lv;
	uint32_t head, depth, maxlin, mark;
	struct wgl_cache cache;
};

static int sop_cmp(const void *a, const void *b)
{
	const struct lin_sop *x = a, *y = b;

	if (x->inv != y->inv)
		return x->inv < y->inv ? -1 : 1;
	if (x->resp != y->resp)
		return x->resp < y->resp ? -1 : 1;
	return x->rec < y->rec ? -1 : x->rec > y->rec;
}

static uint64_t mix2(uint64_t h, uint64_t x)
{
	h = (h ^ (x * 0xc2b2ae3d27d4eb4fULL)) * 0x165667b19e3779f9ULL;
	return h ^ (h >> 29) ^ (h << 17);
}

static void put(struct search *s, uint32_t v)
{
	s->stk[s->depth] = v;
	s->h1[s->depth + 1] = wgl_mix(s->h1[s->depth], (uint64_t)v + 1);
	s->h2[s->depth + 1] = mix2(s->h2[s->depth], (uint64_t)v + 1);
	s->depth++;
}

static int apply(struct search *s, uint32_t o)
{
	const struct lin_sop *op = &s->ops[o];

	switch (op->type) {
	case LIN_S_PUSH:
		put(s, op->vid);
		return 1;
	case LIN_S_POP:
		if (!s->depth || s->stk[s->depth - 1] != op->vid)
			return 0;
		s->depth--;
		return 1;
	default:
		return s->depth == 0;
	}
}

static void unapply(struct search *s, uint32_t o)
{
	const struct lin_sop *op = &s->ops[o];

	if (op->type == LIN_S_PUSH)
		s->depth--;
	else if (op->type == LIN_S_POP)
		put(s, op->vid);
}

static int add_opt(struct search *s, uint32_t o)
{
	if (s->nopts == s->capopts) {
		size_t n = s->capopts ? 2 * s->capopts : 4096;
		uint32_t *p = realloc(s->opts, n * sizeof(*p));

		if (!p)
			return -1;
		s->opts = p;
		s->capopts = n;
	}
	s->opts[s->nopts++] = o;
	return 0;
}

/* when value vid's pop begins (INF: never popped) */
static uint64_t pop_start(const struct search *s, uint32_t vid)
{
	return s->popop[vid] == NIL ? INF : s->ops[s->popop[vid]].inv;
}

static uint64_t pop_end(const struct search *s, uint32_t vid)
{
	return s->popop[vid] == NIL ? INF : s->ops[s->popop[vid]].resp;
}

/* sort opts[from, to) by pop end, latest first (insertion sort: the lists are short) */
static void sort_by_pop(struct search *s, size_t from, size_t to)
{
	size_t i, j;

	for (i = from + 1; i < to; i++) {
		uint32_t o = s->opts[i];
		uint64_t k = pop_end(s, s->ops[o].vid);

		for (j = i; j > from && pop_end(s, s->ops[s->opts[j - 1]].vid) < k; j--)
			s->opts[j] = s->opts[j - 1];
		s->opts[j] = o;
	}
}

/* The options of the current configuration, appended to opts. */
static int options(struct search *s, struct level *l)
{
	uint32_t e, r, mk = (s->mark += 2);
	size_t start;

	l->off = (uint32_t)s->nopts;
	l->n = 0;
	l->pos = -1;
	for (e = s->head; e != NIL && !s->ev[e].ret; e = s->ev[e].next) {
		uint32_t o = s->ev[e].op;
		const struct lin_sop *op = &s->ops[o];

		s->stamp[o] = mk;
		if ((op->type == LIN_S_POP && s->depth && s->stk[s->depth - 1] == op->vid) ||
		    (op->type == LIN_S_EMPTY && !s->depth)) {
			l->n = 1;
			return add_opt(s, o);
		}
	}
	for (e = s->head; e != NIL && !s->ev[e].ret; e = s->ev[e].next) {
		const struct lin_sop *op = &s->ops[s->ev[e].op];

		if (op->type == LIN_S_POP && s->stamp[s->pushop[op->vid]] == mk) {
			l->n = 1;
			return add_opt(s, s->pushop[op->vid]);
		}
	}
	if (e == NIL)
		return 0;
	r = s->ev[e].op;
	if (s->ops[r].type != LIN_S_PUSH)
		return 0; /* a dead end */
	start = s->nopts;
	/* those that should lie below r, and below those, and so on: q below c when q's
	 * push ends before c's pop begins and q's pop ends later than c's (or never) */
	if (add_opt(s, r))
		return -1;
	for (;;) {
		size_t before = s->nopts, k;

		for (e = s->head; !s->ev[e].ret; e = s->ev[e].next) {
			uint32_t o = s->ev[e].op;
			const struct lin_sop *q = &s->ops[o];

			if (q->type != LIN_S_PUSH || s->stamp[o] == mk + 1)
				continue;
			for (k = start; k < s->nopts; k++) {
				uint32_t cv = s->ops[s->opts[k]].vid;

				if (q->resp < pop_start(s, cv) && pop_end(s, q->vid) > pop_end(s, cv))
					break;
			}
			if (k < s->nopts) {
				s->stamp[o] = mk + 1;
				if (add_opt(s, o))
					return -1;
			}
		}
		if (s->nopts == before)
			break;
	}
	/* r itself goes last among them */
	s->opts[start] = s->opts[s->nopts - 1];
	s->nopts--;
	sort_by_pop(s, start, s->nopts);
	if (add_opt(s, r))
		return -1;
	start = s->nopts;
	for (e = s->head; !s->ev[e].ret; e = s->ev[e].next) {
		uint32_t o = s->ev[e].op;
		const struct lin_sop *q = &s->ops[o];

		if (o == r || q->type != LIN_S_PUSH || s->stamp[o] == mk + 1)
			continue;
		if (add_opt(s, o))
			return -1;
	}
	sort_by_pop(s, start, s->nopts);
	l->n = (uint32_t)(s->nopts - l->off);
	return 0;
}

static void search_free(struct search *s)
{
	free(s->inv);
	free(s->resp);
	free(s->ev);
	free(s->callev);
	free(s->retev);
	free(s->pushop);
	free(s->popop);
	free(s->stamp);
	free(s->stk);
	free(s->lin);
	free(s->h1);
	free(s->h2);
	free(s->opts);
	free(s->lv);
	wgl_cache_free(&s->cache);
}

int lin_stack_search(struct lin_sop *ops, size_t m, size_t nv, uint64_t budget, struct lin_out *out)
{
	struct search s = {0};
	uint32_t best = 0, blocked = NIL, tail[4] = {NIL, NIL, NIL, NIL}, d = 0, k;
	uint64_t steps = 0;
	int verdict = LIN_NO_MEMORY;
	size_t i;

	qsort(ops, m, sizeof(*ops), sop_cmp);
	s.ops = ops;
	s.m = m;
	s.nv = nv;
	s.inv = malloc((m + 1) * sizeof(*s.inv));
	s.resp = malloc((m + 1) * sizeof(*s.resp));
	s.ev = malloc((2 * m + 1) * sizeof(*s.ev));
	s.callev = malloc((m + 1) * sizeof(*s.callev));
	s.retev = malloc((m + 1) * sizeof(*s.retev));
	s.stamp = calloc(m + 1, sizeof(*s.stamp));
	s.pushop = malloc((nv + 1) * sizeof(*s.pushop));
	s.popop = malloc((nv + 1) * sizeof(*s.popop));
	s.stk = malloc((nv + 1) * sizeof(*s.stk));
	s.h1 = calloc(nv + 2, sizeof(*s.h1));
	s.h2 = calloc(nv + 2, sizeof(*s.h2));
	s.lin = calloc(m / 64 + 2, sizeof(*s.lin));
	s.lv = malloc((m + 1) * sizeof(*s.lv));
	if (!s.inv || !s.resp || !s.ev || !s.callev || !s.retev || !s.stamp || !s.pushop || !s.popop ||
	    !s.stk || !s.h1 || !s.h2 || !s.lin || !s.lv)
		goto done;
	memset(s.popop, 0xff, (nv + 1) * sizeof(*s.popop));
	for (i = 0; i < m; i++) {
		s.inv[i] = ops[i].inv;
		s.resp[i] = ops[i].resp;
		if (ops[i].type == LIN_S_PUSH)
			s.pushop[ops[i].vid] = (uint32_t)i;
		else if (ops[i].type == LIN_S_POP)
			s.popop[ops[i].vid] = (uint32_t)i;
	}
	s.head = wgl_events(s.ev, m, s.inv, s.resp, s.callev, s.retev);
	s.maxlin = NIL;
	if (s.head == NIL) {
		verdict = LIN_OK;
		goto done;
	}
	if (options(&s, &s.lv[0]))
		goto done;
	for (;;) {
		struct level *l = &s.lv[d];
		int advanced = 0;

		while (++l->pos < (int32_t)l->n) {
			uint32_t o = s.opts[l->off + (uint32_t)l->pos], f;
			uint64_t tag[WGL_TAG];
			int r;

			if (++steps > budget && budget) {
				verdict = LIN_UNDECIDED;
				goto done;
			}
			if (!apply(&s, o))
				continue;
			s.lin[o / 64] |= 1ULL << (o % 64);
			wgl_unlink(s.ev, &s.head, s.callev[o]);
			wgl_unlink(s.ev, &s.head, s.retev[o]);
			f = s.head == NIL ? (uint32_t)m : s.ev[s.head].op;
			tag[0] = s.depth;
			tag[1] = s.h1[s.depth];
			tag[2] = s.h2[s.depth];
			r = wgl_cache_add(&s.cache, s.lin, f, s.maxlin == NIL || o > s.maxlin ? o : s.maxlin, tag);
			if (r < 0)
				goto done;
			if (r) {
				l->maxlin = s.maxlin;
				s.maxlin = s.maxlin == NIL || o > s.maxlin ? o : s.maxlin;
				if (s.head == NIL) {
					verdict = LIN_OK;
					goto done;
				}
				d++;
				if (options(&s, &s.lv[d]))
					goto done;
				advanced = 1;
				break;
			}
			wgl_relink(s.ev, &s.head, s.retev[o]);
			wgl_relink(s.ev, &s.head, s.callev[o]);
			s.lin[o / 64] &= ~(1ULL << (o % 64));
			unapply(&s, o);
		}
		if (advanced)
			continue;
		/* a dead end: remember the deepest one for the explanation */
		if (d >= best) {
			uint32_t e = s.head;

			while (e != NIL && !s.ev[e].ret)
				e = s.ev[e].next;
			best = d;
			blocked = e != NIL ? s.ev[e].op : NIL;
			for (k = 0; k < 4; k++)
				tail[k] = d > k ? s.opts[s.lv[d - 1 - k].off + (uint32_t)s.lv[d - 1 - k].pos] : NIL;
		}
		s.nopts = l->off;
		if (!d) {
			uint32_t n = 0;

			verdict = LIN_VIOLATION;
			out->what = LIN_W_STACK;
			out->key_ops = m;
			out->prefix = best;
			if (blocked != NIL)
				out->idx[n++] = ops[blocked].rec;
			for (k = 0; k < 4; k++)
				if (tail[k] != NIL)
					out->idx[n++] = ops[tail[k]].rec;
			out->nidx = n;
			goto done;
		}
		d--;
		l = &s.lv[d];
		{
			uint32_t o = s.opts[l->off + (uint32_t)l->pos];

			wgl_relink(s.ev, &s.head, s.retev[o]);
			wgl_relink(s.ev, &s.head, s.callev[o]);
			s.lin[o / 64] &= ~(1ULL << (o % 64));
			unapply(&s, o);
			s.maxlin = l->maxlin;
		}
	}
done:
	out->steps += steps;
	search_free(&s);
	return verdict;
}
