/* SPDX-License-Identifier: MIT */
/*
 * Arena basics shared by BPF programs and userspace C.
 *
 * The arena map is created with a fixed map_extra, so the kernel and every
 * process map it at ARENA_BASE: a pointer stored in the arena is a user
 * address and is usable as is on both sides (docs/design.md, rule 2).
 *
 * In BPF, __arena marks address space 1. clang (>= 19, with
 * __BPF_FEATURE_ADDR_SPACE_CAST) inserts the kernel/user casts itself and the
 * JIT addresses arena memory through the low 32 bits of the pointer, so the
 * page at offset 0 (low 32 bits all zero) reads as NULL there: it is never
 * handed out.
 */
#ifndef ARENA_ARENA_H
#define ARENA_ARENA_H

/* 1 << 44: far from the heap, the stack and mmap's default area, on every
 * process; the same value the kernel selftests use on x86-64.
 * Overridable only for userspace-only builds that cannot map there: the
 * sanitizers keep their shadow memory around 1 << 44, so the ASan/TSan unit
 * tests build with -DARENA_BASE=0x7e9000000000ULL over an anonymous mapping.
 * Anything that talks to a real arena map must use the default. */
#ifndef ARENA_BASE
#define ARENA_BASE 0x100000000000ULL
#endif
#define ARENA_PAGE_SIZE 4096ULL
#define ARENA_PAGE_SHIFT 12
/* Page 0 is the NULL guard, page 1 holds the root (struct ap_root). */
#define ARENA_ROOT_OFFSET ARENA_PAGE_SIZE

#if defined(__bpf__)
# ifndef __BPF_FEATURE_ADDR_SPACE_CAST
#  error "clang with address_space(1) casts (clang-19 or newer) is required"
# endif
# define __arena __attribute__((address_space(1)))
/* clang emits the casts; kept as names so code reads the same on both sides */
# define arena_cast_kern(p) (p)
# define arena_cast_user(p) (p)
# define ARENA_IS_BPF 1
#else
# include <stdint.h>
# include <stddef.h>
# define __arena
# define arena_cast_kern(p) (p)
# define arena_cast_user(p) (p)
# define ARENA_IS_BPF 0
# ifndef __always_inline
#  define __always_inline inline __attribute__((always_inline))
# endif
#endif

/* Integer types that mean the same on both sides. */
#if defined(__bpf__)
typedef __u8 ap_u8;
typedef __u16 ap_u16;
typedef __u32 ap_u32;
typedef __s32 ap_s32;
typedef __u64 ap_u64;
typedef __s64 ap_s64;
#else
typedef uint8_t ap_u8;
typedef uint16_t ap_u16;
typedef uint32_t ap_u32;
typedef int32_t ap_s32;
typedef uint64_t ap_u64;
typedef int64_t ap_s64;
#endif

#define ARENA_CACHELINE 64
#define __arena_cacheline_aligned __attribute__((aligned(ARENA_CACHELINE)))

/* A pointer at a fixed offset in the arena, the same value on both sides. */
#define ARENA_AT(type, off) ((type __arena *)(ARENA_BASE + (off)))

/*
 * Arena addresses as integers. Links that lock-free code marks or tags (low
 * bits, counters) are stored as ap_u64 words and converted at the point of
 * use: ARENA_PTR turns a word back into a typed __arena pointer, ARENA_ADDR a
 * pointer into its word. In BPF both are plain integer<->address_space(1)
 * conversions; clang inserts the kernel cast when the pointer is dereferenced.
 */
#define ARENA_PTR(type, addr) ((type __arena *)(ap_u64)(addr))
#define ARENA_ADDR(p) ((ap_u64)(p))
/* The page an address lies in, and page numbers counted from ARENA_BASE. */
#define ARENA_PAGE_OF(addr) ((ap_u64)(addr) & ~(ARENA_PAGE_SIZE - 1))
#define ARENA_PAGE_NO(addr) (((ap_u64)(addr) - ARENA_BASE) >> ARENA_PAGE_SHIFT)
#define ARENA_PAGE_ADDR(no) (ARENA_BASE + ((ap_u64)(no) << ARENA_PAGE_SHIFT))

#endif /* ARENA_ARENA_H */
