/* SPDX-License-Identifier: MIT */
/*
 * The data-structure benchmark, in C (pipeline/bench/_native/dsbench.c):
 *   - the arena hash map against a BPF_MAP_TYPE_HASH, same keys (u64), same
 *     value size (u64): from userspace (ds_exec batches against
 *     bpf_map_*_elem and bpf_map_*_batch system calls) and inside one
 *     SEC("syscall") program each (ds_run_hash against bpf/ds_bench.bpf.c);
 *   - every registered queue and stack from a kernel producer (SEC("syscall")
 *     batches on one CPU) to a user consumer (a C thread on another CPU),
 *     with every value accounted for exactly once.
 * Each call is one round; pipeline/bench/ds.py repeats rounds and reports
 * medians and ratios. Nothing here asserts a time.
 */
#ifndef AP_DSBENCH_H
#define AP_DSBENCH_H

#include <Python.h>

#include <stddef.h>
#include <stdint.h>

/* operations of the hash comparison, in this order */
enum ap_dsb_op {
	AP_DSB_INSERT = 0,
	AP_DSB_SEARCH = 1,
	AP_DSB_DELETE = 2,
	AP_DSB_OPS
};

/* the ways the hash comparison runs each operation */
enum ap_dsb_way {
	AP_DSB_USER1 = 0,   /* arena hash, ds_exec, one user thread */
	AP_DSB_USER2 = 1,   /* arena hash, ds_exec, two user threads (half the keys each) */
	AP_DSB_SYSCALL = 2, /* BPF hash map, bpf_map_*_elem: one system call per op */
	AP_DSB_BATCH = 3,   /* BPF hash map, bpf_map_*_batch (lookup: a dump, it takes no keys) */
	AP_DSB_KARENA = 4,  /* arena hash in ds_run_hash (kernel) */
	AP_DSB_KMAP = 5,    /* BPF hash map in bench_map (kernel), same loop shape */
	AP_DSB_WAYS
};

struct ap_dsb_hash_result {
	uint64_t keys;
	uint64_t per_call;                          /* kernel ops per program call */
	double ns[AP_DSB_WAYS][AP_DSB_OPS];         /* time per operation */
	uint64_t fails[AP_DSB_WAYS][AP_DSB_OPS];    /* operations that did not succeed (must be 0) */
};

struct ap_dsb_queue_result {
	uint64_t items;        /* values pushed for throughput */
	uint64_t samples;      /* single values pushed for latency, after them */
	uint64_t popped;       /* values the consumer popped */
	uint64_t duplicates;   /* popped twice (must be 0) */
	uint64_t strays;       /* a key never pushed (must be 0) */
	uint64_t malformed;    /* a value that does not belong to its key (must be 0) */
	uint64_t unseen;       /* pushed, never popped (must be 0) */
	uint64_t order_errors; /* FIFO structures: a key popped after a later one (must be 0) */
	uint64_t left;         /* elements verify finds at the end (must be 0) */
	int verify;            /* verify's result (DS_OK) */
	uint64_t kernel_calls;
	uint64_t full_stops;   /* kernel batches that met a full structure */
	uint64_t busy_stops;   /* ... DS_BUSY */
	uint64_t nomem_stops;  /* ... DS_NOMEM */
	uint64_t wrong_cpu;    /* kernel batches that ran elsewhere than prod_cpu */
	uint64_t empty_polls;  /* consumer pops that found nothing */
	double seconds;        /* first push to last throughput pop */
	double kernel_ns_per_push; /* in-kernel time per successful push */
	double user_ns_per_pop;    /* consumer time in pops that got something, per pop */
	double lat_p50_ns, lat_p99_ns, lat_max_ns; /* one value: call start to pop */
};

/* Both return 0, or a negative errno with a one-line message in err. */
int ap_dsb_hash(uint64_t keys, uint64_t per_call, struct ap_dsb_hash_result *r, char *err, size_t errlen);
int ap_dsb_queues(const uint32_t *types, int ntypes, uint64_t items, uint64_t samples, uint64_t per_call,
		  uint64_t capacity, int prod_cpu, int cons_cpu, struct ap_dsb_queue_result *out, char *err,
		  size_t errlen);

/* Adds dsbench_hash, dsbench_queues and dsbench_queue_names to the module.
 * Call after CoreError is in it. Returns 0 or -1 with an exception set. */
int ap_dsbench_add_to_module(PyObject *m);

#endif
