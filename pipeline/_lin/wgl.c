// SPDX-License-Identifier: MIT
/* The event list and Lowe's configuration cache (wgl.h). */
#include <stdlib.h>
#include <string.h>

#include "wgl.h"

/* calls before returns at the same time: such ops overlap (neither responded
 * before the other was called), so either may take effect first */
static int ev_cmp(const void *a, const void *b)
{
	const struct wgl_ev *x = a, *y = b;

	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	if (x->ret != y->ret)
		return x->ret ? 1 : -1;
	return x->op < y->op ? -1 : x->op > y->op;
}

uint32_t wgl_events(struct wgl_ev *ev, size_t m, const uint64_t *inv, const uint64_t *resp,
		    uint32_t *callev, uint32_t *retev)
{
	size_t i;

	for (i = 0; i < m; i++) {
		ev[2 * i] = (struct wgl_ev){.t = inv[i], .op = (uint32_t)i, .ret = 0};
		ev[2 * i + 1] = (struct wgl_ev){.t = resp[i], .op = (uint32_t)i, .ret = 1};
	}
	qsort(ev, 2 * m, sizeof(*ev), ev_cmp);
	for (i = 0; i < 2 * m; i++) {
		ev[i].prev = i ? (uint32_t)(i - 1) : NIL;
		ev[i].next = i + 1 < 2 * m ? (uint32_t)(i + 1) : NIL;
		if (ev[i].ret)
			retev[ev[i].op] = (uint32_t)i;
		else
			callev[ev[i].op] = (uint32_t)i;
	}
	return m ? 0 : NIL;
}

/* 64 bits of the bitmap from bit position pos on (the bitmap has a spare word) */
static uint64_t bits_at(const uint64_t *b, uint64_t pos)
{
	uint64_t w = pos >> 6, s = pos & 63;

	return s ? (b[w] >> s) | (b[w + 1] << (64 - s)) : b[w];
}

void wgl_cache_reset(struct wgl_cache *c)
{
	c->used = 0;
	c->count = 0;
	if (c->slots)
		memset(c->slots, 0, c->nslots * sizeof(*c->slots));
}

void wgl_cache_free(struct wgl_cache *c)
{
	free(c->pool);
	free(c->slots);
	memset(c, 0, sizeof(*c));
}

static int grow_slots(struct wgl_cache *c)
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

/* word i of the configuration's bitmap (nbits bits after f) */
static uint64_t cfg_word(const uint64_t *lin, uint32_t f, uint64_t nbits, uint64_t i)
{
	uint64_t w = bits_at(lin, (uint64_t)f + 1 + 64 * i);

	if (i == (nbits - 1) / 64 && nbits % 64)
		w &= (1ULL << (nbits % 64)) - 1;
	return w;
}

/* An entry: [hash, f, nwords, tag[WGL_TAG], words...]. */
#define HDR (3 + WGL_TAG)

int wgl_cache_add(struct wgl_cache *c, const uint64_t *lin, uint32_t f, uint32_t maxlin,
		  const uint64_t tag[WGL_TAG])
{
	uint64_t nbits = maxlin != NIL && maxlin > f ? maxlin - f : 0;
	uint64_t nw = (nbits + 63) / 64, h, i, *e;
	size_t j, need = HDR + nw;

	h = wgl_mix(f, nw);
	for (i = 0; i < WGL_TAG; i++)
		h = wgl_mix(h, tag[i]);
	for (i = 0; i < nw; i++)
		h = wgl_mix(h, cfg_word(lin, f, nbits, i));
	if ((c->count + 1) * 2 > c->nslots && grow_slots(c))
		return -1;
	j = h & (c->nslots - 1);
	for (; c->slots[j]; j = (j + 1) & (c->nslots - 1)) {
		e = c->pool + c->slots[j] - 1;
		if (e[0] != h || e[1] != f || e[2] != nw || memcmp(e + 3, tag, WGL_TAG * sizeof(*tag)))
			continue;
		for (i = 0; i < nw && e[HDR + i] == cfg_word(lin, f, nbits, i); i++)
			;
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
	e[2] = nw;
	memcpy(e + 3, tag, WGL_TAG * sizeof(*tag));
	for (i = 0; i < nw; i++)
		e[HDR + i] = cfg_word(lin, f, nbits, i);
	c->slots[j] = (uint32_t)(c->used + 1);
	c->used += need;
	c->count++;
	return 1;
}
