/* SPDX-License-Identifier: MIT */
/*
 * The arena map, declared the same way in every BPF object. The loader sizes
 * it before load and makes every object after the first reuse the first
 * object's map (bpf_map__reuse_fd), so all programs share one arena mapped at
 * ARENA_BASE (map_extra) in the kernel and in every process.
 */
#ifndef AP_ARENA_MAP_BPF_H
#define AP_ARENA_MAP_BPF_H

#include "arena/arena.h"

/* Pages the arena may grow to; the loader sets the real size before load. */
#define AP_ARENA_DEFAULT_PAGES 32768

struct {
	__uint(type, BPF_MAP_TYPE_ARENA);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, AP_ARENA_DEFAULT_PAGES);
	__ulong(map_extra, ARENA_BASE);
} arena SEC(".maps");

/* The verifier accepts arena pointer casts only in programs tied to the
 * arena map; a program that finds its data at fixed arena addresses (and
 * never calls an arena kfunc) ties itself by loading the map's address. */
#define arena_use_map()                                                        \
	do {                                                                   \
		void *___m = &arena;                                           \
		__asm__ __volatile__("" : "+r"(___m));                         \
	} while (0)

#endif
