/* SPDX-License-Identifier: MIT */
/*
 * Roles: the producer and the consumer of the structures that allow one of
 * each at a time (spsc: both; mpsc and evq: the consumer).
 *
 * A role is a word naming its holder: 0 when free; a user thread as
 * tgid << 32 | tid, with its pid namespace in the word beside it; a kernel
 * batch as DS_ROLE_KERNEL | tgid << 32 | pid of the task running it.
 *
 * Claimed once, not per operation. A context records in struct
 * ds_ctx.held the role pair it holds (its address) and which roles of it
 * (the low bits). An operation whose context holds its role touches no
 * role word at all: no compare-and-swap, not even a load. A context holds
 * roles
 *   - for one batch: the batch loops (ds_exec, ds_batch_user, the kernel
 *     program) start with held = DS_HELD_KEEP and give every kept role back
 *     at their end (ds_role_drop). Each claims the roles its operations
 *     need before the first one (ds_batch_claim_roles in batch.h) and,
 *     holding them all, runs the operations without any role check (not
 *     even ds_role_held); when a role is taken by a live holder, a loop
 *     leaves it to each operation that needs it to claim it (and keep it,
 *     once it is free);
 *   - for as long as it likes: ds_role_attach / ds_role_detach (roles.h);
 *   - for one operation: a context that keeps nothing (held = 0) claims
 *     and gives back around each operation.
 * A claim that finds the role taken returns DS_BUSY, whichever way it
 * comes: a second producer or consumer is refused.
 *
 * A dead holder. A user thread that dies holding a role (killed while
 * attached, or inside an operation) would leave it taken for good, and
 * every pop DS_BUSY. A user-side claim that finds a user holder checks it
 * the way epoch.h checks a stale epoch record (arena_owner_gone: tgkill
 * says ESRCH, from the same pid namespace); a dead holder's role is taken
 * over with a compare-and-swap from its word, and counted in takeovers. A
 * kernel holder is never taken over: a program always runs to its end,
 * which gives its roles back (ds_batch_end, on every way out of the
 * batch's loop). What a holder killed in the middle of an
 * operation leaves behind, each structure says (ds_spsc.h, ds_mpsc.h).
 */
#ifndef DS_ROLE_H
#define DS_ROLE_H

/* ds_api.h defines struct ds_ctx and then includes this file; included on
 * its own, this pulls ds_api.h in first (its guard stops the cycle) */
#include "ds_api.h"

#define DS_ROLE_PRODUCER 0
#define DS_ROLE_CONSUMER 1
#define DS_ROLE_KERNEL (1ULL << 63)

/* struct ds_ctx.held: the role pair's address | these bits */
#define DS_HELD_PRODUCER (1ULL << DS_ROLE_PRODUCER)
#define DS_HELD_CONSUMER (1ULL << DS_ROLE_CONSUMER)
#define DS_HELD_KEEP 4ULL /* a batch: keep each role claimed until ds_role_drop */
#define DS_HELD_BITS 7ULL

struct ds_role {
	ap_u64 owner;     /* 0: free; see above */
	ap_u64 ns;        /* a user owner's pid namespace, kept when it goes; 0: unknown (arena_owner_ns_before) */
	ap_u64 takeovers; /* times this role was taken from a dead holder */
	ap_u64 spare;
};

/* Producer and consumer, on a line of their own: only claims touch it. */
struct ds_roles {
	struct ds_role role[2];
} __arena_cacheline_aligned;

static __always_inline void ds_roles_init(struct ds_roles __arena *rs)
{
	ap_u32 i;

	for (i = 0; i < 2; i++) {
		arena_store_once(&rs->role[i].owner, 0);
#if ARENA_IS_BPF
		arena_store_once(&rs->role[i].ns, 0);
#else
		/* the creator's: see arena_owner_ns_before */
		arena_store_once(&rs->role[i].ns, arena_self_ns());
#endif
		arena_store_once(&rs->role[i].takeovers, 0);
		arena_store_once(&rs->role[i].spare, 0);
	}
}

/* The caller as a role owner. */
static __always_inline ap_u64 ds_role_self(struct ds_ctx *c)
{
#if ARENA_IS_BPF
	(void)c;
	return DS_ROLE_KERNEL | bpf_get_current_pid_tgid();
#else
	return c->owner ? c->owner : arena_self_owner();
#endif
}

#if !ARENA_IS_BPF
/* 1 when the user thread in the word (still seen as owner) is gone. */
static inline int ds_role_owner_dead(struct ds_role *r, ap_u64 owner)
{
	ap_u64 ns;

	if (owner & DS_ROLE_KERNEL)
		return 0;
	ns = arena_atomic_load(&r->ns, ARENA_ACQUIRE);
	/* the namespace read belongs to this owner only if it is still there */
	if (arena_atomic_load(&r->owner, ARENA_ACQUIRE) != owner)
		return 0;
	return arena_owner_gone(owner, ns);
}
#endif

/* Claim role which: DS_OK, or DS_BUSY while a live holder has it. The
 * acquire pairs with the previous holder's release: the new holder sees
 * every index the old one wrote. */
static __always_inline int ds_role_claim(struct ds_ctx *c, struct ds_roles __arena *rs, ap_u32 which)
{
	struct ds_role __arena *r = &rs->role[which & 1];
	ap_u64 me = ds_role_self(c), seen;

#if !ARENA_IS_BPF
	arena_owner_ns_before(&r->owner, &r->ns);
#endif
	/* release: a namespace cleared before it is seen before the swap */
	seen = arena_atomic_cmpxchg(&r->owner, 0, me, ARENA_ACQ_REL);

	if (seen) {
#if ARENA_IS_BPF
		return DS_BUSY;
#else
		if (!ds_role_owner_dead(r, seen) || arena_atomic_cmpxchg(&r->owner, seen, me, ARENA_ACQUIRE) != seen)
			return DS_BUSY;
		arena_atomic_add(&r->takeovers, 1, ARENA_RELAXED);
#endif
	}
#if !ARENA_IS_BPF
	arena_owner_ns_after(&r->ns);
#endif
	return DS_OK;
}

static __always_inline void ds_role_release(struct ds_roles __arena *rs, ap_u32 which)
{
	struct ds_role __arena *r = &rs->role[which & 1];

	arena_atomic_store(&r->owner, 0, ARENA_RELEASE);
}

/* The part of ds_role_begin past the fast path. */
static __always_inline int ds_role_begin_slow(struct ds_ctx *c, struct ds_roles __arena *rs, ap_u32 which)
{
	ap_u64 held = c->held, base = held & ~DS_HELD_BITS;

	if (ds_role_claim(c, rs, which))
		return -1;
	if ((held & DS_HELD_KEEP) && (!base || base == ARENA_ADDR(rs))) {
		c->held = ARENA_ADDR(rs) | (held & DS_HELD_BITS) | (1ULL << (which & 1));
		return 1;
	}
	return 0;
}

/*
 * 1 when the context holds role which of rs, attached or kept by its batch:
 * the operation needs no claim. One load of c->held and one compare: the
 * held word XOR (rs | the role's bit) has no bit left but the other role's
 * and DS_HELD_KEEP exactly when the base is rs and the bit is set (a role
 * pair is cache-line aligned: its address has no low bits).
 */
/* the branch a holder takes, laid out as the straight line */
#define ds_role_likely(x) __builtin_expect(!!(x), 1)

static __always_inline int ds_role_held(struct ds_ctx *c, struct ds_roles __arena *rs, ap_u32 which)
{
	ap_u64 bit = 1ULL << (which & 1), other = bit ^ (DS_HELD_PRODUCER | DS_HELD_CONSUMER);

	/* + for |: the address has no low bits, and an addition folds into
	 * the address computation */
	return ((c->held ^ (ARENA_ADDR(rs) + bit)) & ~(DS_HELD_KEEP | other)) == 0;
}

/*
 * Before an operation that needs role which: 1 when the context holds it
 * (nothing to give back after the operation), 0 when it was claimed for
 * this operation only (ds_role_end gives it back), -1 when it is taken
 * (the operation returns DS_BUSY).
 */
static __always_inline int ds_role_begin(struct ds_ctx *c, struct ds_roles __arena *rs, ap_u32 which)
{
	if (ds_role_likely(ds_role_held(c, rs, which)))
		return 1;
	return ds_role_begin_slow(c, rs, which);
}

static __always_inline void ds_role_end(struct ds_roles __arena *rs, ap_u32 which, int how)
{
	if (!how)
		ds_role_release(rs, which);
}

/* Start of a batch: keep what its operations claim, unless the context
 * holds roles of its own (attached), which it keeps. */
static __always_inline void ds_role_batch_start(struct ds_ctx *c)
{
	if (!c->held)
		c->held = DS_HELD_KEEP;
}

/* End of a batch: give back what it kept. */
static __always_inline void ds_role_drop(struct ds_ctx *c)
{
	ap_u64 held = c->held, base = held & ~DS_HELD_BITS;

	if (!(held & DS_HELD_KEEP))
		return;
	if (base && (held & DS_HELD_PRODUCER))
		ds_role_release(ARENA_PTR(struct ds_roles, base), DS_ROLE_PRODUCER);
	if (base && (held & DS_HELD_CONSUMER))
		ds_role_release(ARENA_PTR(struct ds_roles, base), DS_ROLE_CONSUMER);
	c->held = 0;
}

/* Either role taken (verify: the structure is not quiescent). */
static __always_inline int ds_roles_busy(struct ds_roles __arena *rs)
{
	return arena_atomic_load(&rs->role[0].owner, ARENA_ACQUIRE) ||
	       arena_atomic_load(&rs->role[1].owner, ARENA_ACQUIRE);
}

#endif /* DS_ROLE_H */
