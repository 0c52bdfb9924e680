/* SPDX-License-Identifier: MIT */
/*
 * The few things arena code needs from its environment, under one name on
 * both sides: loops the verifier accepts, the current CPU, a clock, random
 * numbers, and a polite spin.
 *
 * Loops. Every loop whose trip count depends on arena contents (a list walk,
 * a compare-and-swap retry) is written
 *
 *	while (cond && can_loop) { ... }
 *
 * In BPF can_loop is the may_goto instruction (clang >= 19, kernel >= 6.9):
 * the verifier checks the body once per distinct state instead of unrolling
 * it, and the kernel bounds the iterations at run time (the loop then simply
 * ends: callers treat that as DS_BUSY). In userspace it is the constant 1 and
 * costs nothing. Loops with a small constant bound need nothing.
 *
 * arena_loop(n, cb, data) is bpf_loop in BPF and a plain for loop in
 * userspace: cb(i, data) runs for i = 0..n-1 until it returns nonzero.
 * Caution on this kernel (6.18): a callback whose body contains may_goto
 * loops can send the verifier's precision backtracking into a NULL
 * dereference (an oops, the loading process killed). bpf/ds_ops.bpf.c
 * therefore runs its batch loop with can_loop in the program itself and
 * puts the heavy code behind global functions (ARENA_SUBPROG).
 *
 * Verifier habits that decide whether a loop converges: a counter the
 * verifier knows exactly and that a branch depends on ((i & 31) == 31,
 * if (n) after the loop) is marked precise, and the loop is then walked
 * once per value. Start such counters with arena_opaque(0), and keep
 * counts out of branches.
 */
#ifndef ARENA_SHIM_H
#define ARENA_SHIM_H

#include "arena.h"

#if defined(__bpf__)

# ifndef __BPF_FEATURE_MAY_GOTO
#  error "may_goto (clang-19 or newer) is required for can_loop"
# endif
/* true while the kernel grants more iterations; false ends the loop */
# define arena_can_loop                                                    \
	({                                                                 \
		__label__ l_break, l_continue;                             \
		int ___ok = 1;                                             \
		asm volatile goto("may_goto %l[l_break]" :::: l_break);    \
		goto l_continue;                                           \
	l_break:                                                           \
		___ok = 0;                                                 \
	l_continue:;                                                       \
		___ok;                                                     \
	})
# define arena_loop(n, cb, data) bpf_loop((n), (cb), (data), 0)
/*
 * x, made unknown to the verifier: a loop counter that starts opaque is
 * widened at once instead of being tracked value by value (a counter the
 * verifier knows exactly, used in a branch such as (i & 31) == 31, keeps it
 * from ever seeing the loop converge). The load of a .bss word that stays
 * zero is what it cannot see through.
 */
static volatile ap_u64 arena_zero_word;
# define arena_opaque(x) ((x) + arena_zero_word)
# define arena_cpu() ((ap_u32)bpf_get_smp_processor_id())
# define arena_now_ns() ((ap_u64)bpf_ktime_get_ns())
# define arena_random32() ((ap_u32)bpf_get_prandom_u32())
/* nothing to relax: a BPF program never waits for long */
# define arena_cpu_relax() ((void)0)

#else /* userspace */

# include <time.h>

# define arena_can_loop 1
# define arena_opaque(x) (x)

typedef long (*arena_loop_fn)(ap_u64 index, void *data);

static inline long arena_loop(ap_u64 n, arena_loop_fn cb, void *data)
{
	ap_u64 i;

	for (i = 0; i < n; i++)
		if (cb(i, data))
			return (long)(i + 1);
	return (long)n;
}

/* glibc >= 2.35 answers from rseq: a load, no system call. Declared here so
 * that callers need not define _GNU_SOURCE before their first include. */
extern int sched_getcpu(void);

static inline ap_u32 arena_cpu(void)
{
	int cpu = sched_getcpu();

	return cpu < 0 ? 0 : (ap_u32)cpu;
}

static inline ap_u64 arena_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock bpf_ktime_get_ns reads */
	return (ap_u64)ts.tv_sec * 1000000000ULL + (ap_u64)ts.tv_nsec;
}

/* xorshift64*, one state per thread */
static inline ap_u32 arena_random32(void)
{
	static __thread ap_u64 state;
	ap_u64 x = state;

	if (!x)
		x = (ap_u64)(unsigned long)&state ^ arena_now_ns() ^ 0x9e3779b97f4a7c15ULL;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	state = x;
	return (ap_u32)((x * 0x2545f4914f6cdd1dULL) >> 32);
}

# if defined(__x86_64__) || defined(__i386__)
#  define arena_cpu_relax() __builtin_ia32_pause()
# elif defined(__aarch64__)
#  define arena_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
# else
#  define arena_cpu_relax() ((void)0)
# endif

#endif

#ifndef can_loop
# define can_loop arena_can_loop
#endif

/*
 * ARENA_SUBPROG marks a function the BPF verifier checks once, on its own (a
 * global function), instead of at every place it is inlined: the allocator
 * and the epoch advance, which every structure operation reaches. Its
 * arguments and result must be scalars (arena addresses as ap_u64), and it
 * must not be void. In userspace it is an ordinary static inline function.
 */
#if defined(__bpf__)
# define ARENA_SUBPROG __attribute__((noinline))
#else
# define ARENA_SUBPROG static inline
#endif

/* A deterministic generator for reproducible op streams (same on both sides). */
static __always_inline ap_u64 arena_xorshift64(ap_u64 *state)
{
	ap_u64 x = *state ? *state : 0x9e3779b97f4a7c15ULL;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

/* 64-bit finalizer (murmur3 fmix64): spreads keys over hash buckets. */
static __always_inline ap_u64 arena_hash64(ap_u64 k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	k ^= k >> 33;
	return k;
}

#endif /* ARENA_SHIM_H */
