/* SPDX-License-Identifier: MIT */
/* The context of bench_map (bpf/ds_bench.bpf.c), the BPF hash-map baseline
 * the benchmark (pipeline/bench/_native/dsbench.c) runs next to the arena hash. */
#ifndef AP_BENCH_MAP_H
#define AP_BENCH_MAP_H

#include "arena/arena.h"

enum ap_bench_map_op { AP_BENCH_UPDATE = 0, AP_BENCH_LOOKUP = 1, AP_BENCH_DELETE = 2 };

struct bench_args {
	ap_u64 key_lo;
	ap_u32 count;
	ap_u32 op; /* enum ap_bench_map_op */
	ap_u64 ok;
	ap_u64 ns;
};

#endif
