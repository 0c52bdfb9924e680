/* SPDX-License-Identifier: MIT */
/*
 * What the two searches (keyed.c for one key of a map, stack.c for a stack)
 * share: the call/return event list with O(1) unlink and relink, and Lowe's
 * cache of configurations seen.
 *
 * A configuration is the set of ops linearized plus the structure's state.
 * It is kept canonical and small: with ops numbered in invocation order and
 * f the first one not linearized, every op before f is linearized, so the
 * set is f plus the bits of the ops after f up to the last linearized one.
 * Those can only be ops called before f returned, so the stored bitmap is as
 * long as the overlap around f, not as long as the history. The state is
 * given as a few words (a digest for a stack: see stack.c).
 */
#ifndef LIN_WGL_H
#define LIN_WGL_H

#include <stddef.h>
#include <stdint.h>

#define NIL UINT32_MAX
#define WGL_TAG 3 /* words of state in a configuration */

struct wgl_ev {
	uint64_t t;
	uint32_t op;
	uint32_t prev, next; /* NIL at the ends */
	uint8_t ret;
};

struct wgl_cache {
	uint64_t *pool;
	size_t used, cap; /* in words */
	uint32_t *slots;  /* offset + 1 into pool; 0: empty */
	size_t nslots, count;
};

/* Sort 2m events (op i: call at inv[i], return at resp[i]) and link them;
 * callev/retev get each op's event indices. Returns the head (0, or NIL). */
uint32_t wgl_events(struct wgl_ev *ev, size_t m, const uint64_t *inv, const uint64_t *resp,
		    uint32_t *callev, uint32_t *retev);

/* unlink keeps the node's own links, so relinking in reverse order restores the list */
static inline void wgl_unlink(struct wgl_ev *ev, uint32_t *head, uint32_t i)
{
	if (ev[i].prev != NIL)
		ev[ev[i].prev].next = ev[i].next;
	else
		*head = ev[i].next;
	if (ev[i].next != NIL)
		ev[ev[i].next].prev = ev[i].prev;
}

static inline void wgl_relink(struct wgl_ev *ev, uint32_t *head, uint32_t i)
{
	if (ev[i].prev != NIL)
		ev[ev[i].prev].next = i;
	else
		*head = i;
	if (ev[i].next != NIL)
		ev[ev[i].next].prev = i;
}

static inline uint64_t wgl_mix(uint64_t h, uint64_t x)
{
	h ^= x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
	h *= 0xff51afd7ed558ccdULL;
	return h ^ (h >> 32);
}

void wgl_cache_reset(struct wgl_cache *c);
void wgl_cache_free(struct wgl_cache *c);

/*
 * Add the configuration (f, linearized ops after f up to maxlin, tag).
 * lin: bitmap of linearized ops with one spare word at the end. Returns 1
 * when it is new, 0 when it was seen before, -1 without memory.
 */
int wgl_cache_add(struct wgl_cache *c, const uint64_t *lin, uint32_t f, uint32_t maxlin,
		  const uint64_t tag[WGL_TAG]);

#endif /* LIN_WGL_H */
