/* SPDX-License-Identifier: MIT */
/*
 * arena_atomic_*: one set of names for atomics on arena memory, for BPF and
 * for userspace C.
 *
 * Userspace: the C11 __atomic builtins with the order asked for.
 *
 * BPF (clang-19, BPF CPU v3): there is no load-acquire/store-release
 * instruction at this LLVM version. What each order compiles to:
 *   - read-modify-write with fetch (add/sub/xchg/cmpxchg; and/or are a
 *     cmpxchg loop, see below): a BPF_ATOMIC
 *     instruction with BPF_FETCH, which the JITs emit as a full barrier
 *     (x86-64: a LOCK-prefixed instruction; arm64: LSE atomics with acquire
 *     and release semantics plus a trailing DMB ISH, or an LL/SC loop with
 *     barriers) - so every order is honoured, at seq_cst cost.
 *   - plain load / store: a volatile access and a compiler barrier. On x86-64
 *     (TSO) a plain load is an acquire load and a plain store a release
 *     store, so relaxed/acquire/release are exact. seq_cst loads are plain too
 *     (TSO only reorders store->load, and every seq_cst store here is an
 *     xchg); a seq_cst store is an xchg. On arm64 plain accesses are only
 *     relaxed: acquire loads and release stores are built from a full-barrier
 *     RMW (fetch-or 0 / xchg) when the object is built for another target
 *     architecture (__TARGET_ARCH_x86 not defined).
 *   - arena_memory_barrier(): a fetch-add of 0 on a private word, i.e. a full
 *     barrier (there is no fence instruction in BPF).
 */
#ifndef ARENA_ATOMICS_H
#define ARENA_ATOMICS_H

#include "arena.h"
#include "shim.h"

#define ARENA_RELAXED __ATOMIC_RELAXED
#define ARENA_ACQUIRE __ATOMIC_ACQUIRE
#define ARENA_RELEASE __ATOMIC_RELEASE
#define ARENA_ACQ_REL __ATOMIC_ACQ_REL
#define ARENA_SEQ_CST __ATOMIC_SEQ_CST

#define arena_compiler_barrier() __asm__ __volatile__("" ::: "memory")

#if defined(__bpf__)

/*
 * Every arena access below addresses through arena_at_(p): the whole
 * address, computed in the arena's address space and then hidden from the
 * optimiser, so clang casts the finished address. Left alone, clang casts
 * an array's base once and adds the index in the index's register
 * (index += base), which some verifiers refuse (Debian's 6.18.15: "pointer
 * arithmetic on arena prohibited"): they allow only pointer += scalar.
 */
# define arena_at_(p)                                  \
	({                                             \
		__typeof__(p) ___at = (p);             \
		__asm__("" : "+r"(___at));             \
		___at;                                 \
	})

# if defined(__TARGET_ARCH_x86)
#  define ARENA_PLAIN_IS_ACQ_REL 1
# else
#  define ARENA_PLAIN_IS_ACQ_REL 0
# endif

/* Full-barrier read-modify-writes: the order argument is accepted for the
 * shared spelling and is always satisfied. */
# define arena_atomic_add(p, v, mo) __sync_fetch_and_add(arena_at_(p), (v))
# define arena_atomic_sub(p, v, mo) __sync_fetch_and_sub(arena_at_(p), (v))
/*
 * and/or with fetch are compare-and-swap loops: the x86-64 JIT implements
 * BPF_AND/BPF_OR/BPF_XOR | BPF_FETCH as a cmpxchg loop of its own, which it
 * cannot emit for arena addresses, so the verifier refuses them there
 * ("BPF_ATOMIC stores into R1 arena is not allowed") as soon as the result
 * is used. The loop is a full barrier too (every iteration's cmpxchg is).
 */
# define arena_atomic_fetch_rmw_(p, v, op)                                              \
	({                                                                              \
		__auto_type ___p = arena_at_(p);                                        \
		__auto_type ___old = arena_load_once(___p);                             \
		while (can_loop) {                                                      \
			__auto_type ___seen =                                           \
				__sync_val_compare_and_swap(___p, ___old, ___old op (v)); \
			if (___seen == ___old)                                          \
				break;                                                  \
			___old = ___seen;                                               \
		}                                                                       \
		___old;                                                                 \
	})
# define arena_atomic_and(p, v, mo) arena_atomic_fetch_rmw_((p), (v), &)
# define arena_atomic_or(p, v, mo) arena_atomic_fetch_rmw_((p), (v), |)
# define arena_atomic_exchange(p, v, mo) __sync_lock_test_and_set(arena_at_(p), (v))
/* Returns the value found; the swap happened when it equals old. */
# define arena_atomic_cmpxchg(p, old, new, mo) __sync_val_compare_and_swap(arena_at_(p), (old), (new))

/* __typeof__(*(p)) keeps the address space; the loaded rvalue drops it. */
# define arena_load_once(p) (*(volatile __typeof__(*(p)) *)arena_at_(p))
# define arena_store_once(p, v) (*(volatile __typeof__(*(p)) *)arena_at_(p) = (v))

# if ARENA_PLAIN_IS_ACQ_REL
#  define arena_atomic_load(p, mo) \
	({ __auto_type ___v = arena_load_once(p); arena_compiler_barrier(); ___v; })
#  define arena_atomic_store(p, v, mo)                                            \
	do {                                                                    \
		if ((mo) == ARENA_SEQ_CST) {                                    \
			(void)__sync_lock_test_and_set(arena_at_(p), (v));      \
		} else {                                                        \
			arena_compiler_barrier();                               \
			arena_store_once(p, v);                                 \
		}                                                               \
	} while (0)
# else
#  define arena_atomic_load(p, mo)                                                \
	((mo) == ARENA_RELAXED ? arena_load_once(p) : __sync_fetch_and_or(arena_at_(p), 0))
#  define arena_atomic_store(p, v, mo)                                            \
	do {                                                                    \
		if ((mo) == ARENA_RELAXED)                                      \
			arena_store_once(p, v);                                 \
		else                                                            \
			(void)__sync_lock_test_and_set(arena_at_(p), (v));      \
	} while (0)
# endif

/* A full barrier: an atomic RMW with fetch on a word nobody else reads. */
static volatile __u64 arena_fence_word;
# define arena_memory_barrier() ((void)__sync_fetch_and_add(&arena_fence_word, 0))

#else /* userspace */

# define arena_atomic_add(p, v, mo) __atomic_fetch_add((p), (v), (mo))
# define arena_atomic_sub(p, v, mo) __atomic_fetch_sub((p), (v), (mo))
# define arena_atomic_and(p, v, mo) __atomic_fetch_and((p), (v), (mo))
# define arena_atomic_or(p, v, mo) __atomic_fetch_or((p), (v), (mo))
# define arena_atomic_exchange(p, v, mo) __atomic_exchange_n((p), (v), (mo))
/* Returns the value found; the swap happened when it equals old. A failed
 * compare-exchange is a load, so it gets the load half of the order. */
# define arena_cmpxchg_fail_order(mo) \
	((mo) == ARENA_RELEASE ? ARENA_RELAXED : (mo) == ARENA_ACQ_REL ? ARENA_ACQUIRE : (mo))
# define arena_atomic_cmpxchg(p, old, new, mo)                                       \
	({                                                                           \
		__typeof__(*(p)) ___exp = (old);                                     \
		__atomic_compare_exchange_n((p), &___exp, (new), 0, (mo),            \
					    arena_cmpxchg_fail_order(mo));           \
		___exp;                                                              \
	})
# define arena_load_once(p) (*(volatile __typeof__(*(p)) *)(p))
# define arena_store_once(p, v) (*(volatile __typeof__(*(p)) *)(p) = (v))
# define arena_atomic_load(p, mo) __atomic_load_n((p), (mo))
# define arena_atomic_store(p, v, mo) __atomic_store_n((p), (v), (mo))
# define arena_memory_barrier() __atomic_thread_fence(__ATOMIC_SEQ_CST)

#endif

#define arena_atomic_inc(p, mo) arena_atomic_add((p), 1, (mo))
#define arena_atomic_dec(p, mo) arena_atomic_sub((p), 1, (mo))

#endif /* ARENA_ATOMICS_H */
