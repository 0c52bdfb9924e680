// SPDX-License-Identifier: GPL-2.0
/*
 * The non-sleepable side of the data structures: a tracepoint program that
 * inserts into a hash instance. Every allocation in this object is
 * ARENA_NOSLEEP_ONLY: it takes free pages and the CPU's reserve pool only,
 * fails with DS_NOMEM when they are gone, and the object contains no call to
 * bpf_arena_alloc_pages at all (the verifier refuses that kfunc in
 * non-sleepable programs). Pools are refilled from userspace or by a
 * DS_CMD_REFILL batch of ds_ops.bpf.o (sleepable).
 *
 * The loader makes this object reuse ds_ops.bpf.o's arena map
 * (bpf_map__reuse_fd), sets the globals below, and attaches ds_tp_insert;
 * each getppid() of process tp_tgid then inserts tp_count keys.
 */
#define ARENA_NOSLEEP_ONLY 1
#include "common.bpf.h"
#include "arena_map.bpf.h"
#include "ds/registry.h"

char LICENSE[] SEC("license") = "GPL";

/* set by userspace before attaching */
__u32 tp_tgid;  /* only this process triggers inserts */
__u32 tp_count; /* inserts per trigger (at most 64) */
__u64 tp_ds;    /* a hash instance */
/* the next key to insert; userspace may move it */
__u64 tp_next_key;
/* what happened */
__u64 tp_hits;
__u64 tp_ok;
__u64 tp_nomem;
__u64 tp_other;

/* One insert, verified once as a global function. */
__attribute__((noinline)) int ds_tp_hash_insert(struct ds_ctx *c, __u64 ds, __u64 key, __u64 val)
{
	if (!c)
		return DS_INVALID;
	return ds_hash_insert(c, ARENA_PTR(struct ds_hash, ds), key, val);
}

SEC("tp/syscalls/sys_enter_getppid")
int ds_tp_insert(void *ctx)
{
	struct ds_head __arena *h;
	struct ds_ctx c;
	__u32 i, n = tp_count;

	/* a program that touches arena memory must reference the arena map;
	 * this object never calls the kfunc that would do it */
	asm volatile("" ::"r"(&arena));
	if ((bpf_get_current_pid_tgid() >> 32) != tp_tgid || !tp_ds)
		return 0;
	h = ARENA_PTR(struct ds_head, tp_ds);
	if (ds_head_check(h, DS_TYPE_hash))
		return 0;
	c.heap = ARENA_PTR(struct arena_heap, h->heap);
	c.ebr = ARENA_PTR(struct ebr_domain, h->ebr);
	c.rec = ebr_cpu_record(c.ebr);
	c.rng = 1;
	c.flags = ARENA_NOSLEEP;
	c.side = DS_SIDE_KERNEL;
	__sync_fetch_and_add(&tp_hits, 1);
	if (n > 64)
		n = 64;
	if (ds_enter(&c))
		return 0;
	for (i = arena_opaque(0); i < n && can_loop; i++) {
		__u64 key = __sync_fetch_and_add(&tp_next_key, 1);
		int r = ds_tp_hash_insert(&c, tp_ds, key, key * 3 + 1);

		if (r == DS_OK)
			__sync_fetch_and_add(&tp_ok, 1);
		else if (r == DS_NOMEM)
			__sync_fetch_and_add(&tp_nomem, 1);
		else
			__sync_fetch_and_add(&tp_other, 1);
	}
	ds_exit(&c);
	return 0;
}
