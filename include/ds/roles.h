/* SPDX-License-Identifier: MIT */
/*
 * Userspace: holding a producer or consumer role (role.h) for longer than a
 * batch, and reading a role's holder and takeovers.
 *
 *   ds_role_attach(c, type, ds, which)  claim it for c until detach; every
 *                                       operation of c then runs without a
 *                                       claim of its own
 *   ds_role_detach(c)                   give back every role c holds
 *   ds_role_read(type, ds, which, &st)  the holder and its takeovers
 *
 * A context holds the roles of one instance at a time.
 */
#ifndef DS_ROLES_H
#define DS_ROLES_H

#include "registry.h"

/* The role pair of an instance, or NULL when its type has no roles (the
 * kernel's batches claim through it too: batch.h). */
static __always_inline struct ds_roles __arena *ds_roles_of(ap_u32 type, ap_u64 ds)
{
	if (!ds)
		return NULL;
	switch (type) {
	case DS_TYPE_spsc:
		return &ARENA_PTR(struct ds_spsc, ds)->roles;
	case DS_TYPE_mpsc:
		return &ARENA_PTR(struct ds_mpsc, ds)->roles;
	case DS_TYPE_evq:
		return &ARENA_PTR(struct ds_evq, ds)->roles;
	}
	return NULL;
}

/* Does the type enforce role which? spsc both; mpsc and evq the consumer. */
static __always_inline int ds_role_enforced(ap_u32 type, ap_u32 which)
{
	return type == DS_TYPE_spsc || (which == DS_ROLE_CONSUMER && (type == DS_TYPE_mpsc || type == DS_TYPE_evq));
}

#if !ARENA_IS_BPF
/*
 * Hold role which (DS_ROLE_PRODUCER or DS_ROLE_CONSUMER) of instance ds
 * for c until ds_role_detach. A role whose holder died is taken over.
 * DS_OK; DS_BUSY while a live holder has it; DS_INVALID when the type does
 * not enforce that role or c holds roles of another instance, or is inside
 * a batch.
 */
static inline int ds_role_attach(struct ds_ctx *c, ap_u32 type, ap_u64 ds, ap_u32 which)
{
	struct ds_roles *rs = ds_roles_of(type, ds);
	ap_u64 base = c->held & ~DS_HELD_BITS;

	if (!rs || which > DS_ROLE_CONSUMER || !ds_role_enforced(type, which) || (c->held & DS_HELD_KEEP) ||
	    (base && base != (ap_u64)rs))
		return DS_INVALID;
	if (c->held & (1ULL << which))
		return DS_OK;
	if (ds_role_claim(c, rs, which))
		return DS_BUSY;
	c->held = (ap_u64)rs | (c->held & DS_HELD_BITS) | (1ULL << which);
	return DS_OK;
}

/* Give back every role c holds (nothing when it holds none). */
static inline void ds_role_detach(struct ds_ctx *c)
{
	ap_u64 base = c->held & ~DS_HELD_BITS;

	if (base && (c->held & DS_HELD_PRODUCER))
		ds_role_release((struct ds_roles *)base, DS_ROLE_PRODUCER);
	if (base && (c->held & DS_HELD_CONSUMER))
		ds_role_release((struct ds_roles *)base, DS_ROLE_CONSUMER);
	c->held = 0;
}

struct ds_role_state {
	ap_u64 owner;     /* 0: free; tgid << 32 | tid; DS_ROLE_KERNEL | ... for a kernel batch */
	ap_u64 takeovers; /* times taken from a dead holder */
	int dead;         /* the holder is a user thread that is gone */
};

/* The state of role which of ds: DS_OK, or DS_INVALID (no such role). */
static inline int ds_role_read(ap_u32 type, ap_u64 ds, ap_u32 which, struct ds_role_state *st)
{
	struct ds_roles *rs = ds_roles_of(type, ds);
	struct ds_role *r;

	if (!rs || which > DS_ROLE_CONSUMER || !ds_role_enforced(type, which))
		return DS_INVALID;
	r = &rs->role[which];
	st->owner = arena_atomic_load(&r->owner, ARENA_ACQUIRE);
	st->takeovers = arena_atomic_load(&r->takeovers, ARENA_RELAXED);
	st->dead = st->owner && ds_role_owner_dead(r, st->owner);
	return DS_OK;
}
#endif

#endif /* DS_ROLES_H */
