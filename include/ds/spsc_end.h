/* SPDX-License-Identifier: MIT */
/*
 * Userspace: the two ends of an spsc ring, for a thread that produces or
 * consumes for long.
 *
 *   ds_spsc_open_producer(c, ds, &p)  claim the producer role for c (once)
 *   ds_spsc_put(&p, key, val)         push: the ring's work only
 *   ds_spsc_close_producer(&p)        give the role back
 *   ds_spsc_open_consumer, ds_spsc_take, ds_spsc_close_consumer: the same
 *
 * An end is the proof that its role is held: it is filled in only by a
 * successful claim (ds_role_attach), so an operation through it needs no
 * role check at all, not even the load and compare of ds_role_held. A
 * second producer (or consumer) is refused when it opens its end (DS_BUSY),
 * and its bare operations and batches on the ring are refused as ever: the
 * role word stays taken while the end is open. Producer and consumer ends
 * are distinct types, so a push through a consumer's end does not compile.
 *
 * One end per role per context, used by the thread that opened it, until
 * it is closed (or the context detached, which gives the roles back). A
 * holder that dies leaves the role to be taken over by the next claim
 * (role.h); its end dies with it.
 */
#ifndef DS_SPSC_END_H
#define DS_SPSC_END_H

#include "roles.h"

#if !ARENA_IS_BPF
struct ds_spsc_producer {
	struct ds_spsc *d; /* NULL unless open */
	struct ds_ctx *c;
};

struct ds_spsc_consumer {
	struct ds_spsc *d; /* NULL unless open */
	struct ds_ctx *c;
};

/* Give back role which of d held by c (and nothing else c holds). */
static inline void ds_spsc_end_release(struct ds_ctx *c, struct ds_spsc *d, ap_u32 which)
{
	ap_u64 bit = 1ULL << which;

	if (!d || (c->held & ~DS_HELD_BITS) != (ap_u64)&d->roles || !(c->held & bit))
		return;
	ds_role_release(&d->roles, which);
	c->held &= ~bit;
	if (!(c->held & (DS_HELD_PRODUCER | DS_HELD_CONSUMER)))
		c->held = 0;
}

/* DS_OK with the end open; DS_BUSY while a live producer holds the role;
 * DS_INVALID when ds is not an spsc or c holds roles of another instance. */
static inline int ds_spsc_open_producer(struct ds_ctx *c, ap_u64 ds, struct ds_spsc_producer *p)
{
	int r;

	p->d = NULL;
	p->c = c;
	if (!ds || ds_head_check(&((struct ds_spsc *)ds)->head, DS_TYPE_spsc))
		return DS_INVALID;
	r = ds_role_attach(c, DS_TYPE_spsc, ds, DS_ROLE_PRODUCER);
	if (r == DS_OK)
		p->d = (struct ds_spsc *)ds;
	return r;
}

static inline int ds_spsc_open_consumer(struct ds_ctx *c, ap_u64 ds, struct ds_spsc_consumer *q)
{
	int r;

	q->d = NULL;
	q->c = c;
	if (!ds || ds_head_check(&((struct ds_spsc *)ds)->head, DS_TYPE_spsc))
		return DS_INVALID;
	r = ds_role_attach(c, DS_TYPE_spsc, ds, DS_ROLE_CONSUMER);
	if (r == DS_OK)
		q->d = (struct ds_spsc *)ds;
	return r;
}

/* DS_OK, or DS_FULL. */
static __always_inline int ds_spsc_put(struct ds_spsc_producer *p, ap_u64 key, ap_u64 val)
{
	return ds_spsc_push_held(p->d, key, val);
}

/* DS_OK, or DS_NOT_FOUND when the ring is empty. */
static __always_inline int ds_spsc_take(struct ds_spsc_consumer *q, ap_u64 *key, ap_u64 *val)
{
	return ds_spsc_pop_held(q->d, key, val);
}

static inline void ds_spsc_close_producer(struct ds_spsc_producer *p)
{
	ds_spsc_end_release(p->c, p->d, DS_ROLE_PRODUCER);
	p->d = NULL;
}

static inline void ds_spsc_close_consumer(struct ds_spsc_consumer *q)
{
	ds_spsc_end_release(q->c, q->d, DS_ROLE_CONSUMER);
	q->d = NULL;
}
#endif

#endif /* DS_SPSC_END_H */
