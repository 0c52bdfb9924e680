// SPDX-License-Identifier: GPL-2.0
/*
 * The baseline the arena hash map is measured against in the kernel: the
 * same batch of inserts, lookups or deletes on a BPF_MAP_TYPE_HASH, in one
 * SEC("syscall") program (pipeline/bench/_native/dsbench.c runs it next to ds_run_hash).
 * The map is sized by the loader (bpf_map__set_max_entries) before load.
 */
#include "common.bpf.h"
#include "arena/shim.h"
#include "bench_map.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} bench_hash SEC(".maps");


SEC("syscall")
int bench_map(struct bench_args *a)
{
	__u64 t0 = bpf_ktime_get_ns(), ok = 0, lo = a->key_lo;
	__u32 i, n = a->count, op = a->op;

	for (i = 0; i < n && can_loop; i++) {
		__u64 key = lo + i, val = key * 3 + 1;

		if (op == 0)
			ok += bpf_map_update_elem(&bench_hash, &key, &val, BPF_ANY) == 0;
		else if (op == 1)
			ok += bpf_map_lookup_elem(&bench_hash, &key) != NULL;
		else
			ok += bpf_map_delete_elem(&bench_hash, &key) == 0;
	}
	a->ok = ok;
	a->ns = bpf_ktime_get_ns() - t0;
	return 0;
}
