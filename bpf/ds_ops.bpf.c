// SPDX-License-Identifier: GPL-2.0
/*
 * Kernel-side operations on the arena data structures. For every line of
 * include/ds/registry.h, a SEC("syscall") program ds_run_NAME runs one
 * struct ds_batch (include/ds/batch.h) on an instance of NAME: a mix of
 * operations, a verify, an iterate, an init or a pool refill. Userspace runs
 * them with bpf_prog_test_run_opts from as many threads as it likes, at the
 * same time as its own threads operate on the same instances.
 *
 * Shape, for the verifier's sake (kernel 6.18, clang 19):
 *   - each structure's operations sit behind one global function,
 *     ds_kop_NAME, verified once on its own; the batch loop only calls it;
 *   - the allocator and the epoch advance are global functions too
 *     (ARENA_SUBPROG in the headers);
 *   - the batch loop is a can_loop loop in the program, not a bpf_loop
 *     callback: precision backtracking through may_goto loops in a callback
 *     frame oopses this kernel's verifier.
 */
/* the batches expire dead user threads' epoch records (ebr_kernel_expire,
 * bpf_task_from_pid: include/arena/epoch.h) */
#define EBR_KERNEL_EXPIRY 1
#include "common.bpf.h"
#include "arena_map.bpf.h"
#include "ds/registry.h"
#include "ds/trim.h"

char LICENSE[] SEC("license") = "GPL";

/* the seed's statistics, over every batch of every structure */
__u64 kernel_ops;
__u64 kernel_fails;
__u64 kernel_batches;

/* one operation on a NAME instance: io->val in (insert), io->key/io->val out */
#define DS_KERNEL_OP(id, name)                                                              \
	__attribute__((noinline)) int ds_kop_##name(struct ds_ctx *c, __u64 ds, __u32 op,  \
						   __u64 key, struct ds_kv *io)            \
	{                                                                                   \
		if (!c || !io)                                                              \
			return DS_INVALID;                                                  \
		return ds_apply_kv(c, id, ds, op, key, io);                                 \
	}
DS_REGISTRY(DS_KERNEL_OP)

/* the same for a batch that holds the roles its operations need (claimed
 * once at its start, batch.h), defined below batch.h: the structures with
 * roles only, the others have no role check to skip */
int ds_kop_held_spsc(struct ds_ctx *c, __u64 ds, __u32 op, __u64 key, struct ds_kv *io);
int ds_kop_held_mpsc(struct ds_ctx *c, __u64 ds, __u32 op, __u64 key, struct ds_kv *io);
int ds_kop_held_evq(struct ds_ctx *c, __u64 ds, __u32 op, __u64 key, struct ds_kv *io);

static __always_inline int ds_kernel_apply(struct ds_ctx *c, __u32 type, __u64 ds, __u32 op, __u64 key,
					   struct ds_kv *io)
{
	switch (type) {
#define DS_KERNEL_CASE(id, name) \
	case id:                 \
		return ds_kop_##name(c, ds, op, key, io);
		DS_REGISTRY(DS_KERNEL_CASE)
#undef DS_KERNEL_CASE
	}
	return DS_INVALID;
}

static __always_inline int ds_kernel_apply_held(struct ds_ctx *c, __u32 type, __u64 ds, __u32 op, __u64 key,
						struct ds_kv *io)
{
	switch (type) {
	case DS_TYPE_spsc:
		return ds_kop_held_spsc(c, ds, op, key, io);
	case DS_TYPE_mpsc:
		return ds_kop_held_mpsc(c, ds, op, key, io);
	case DS_TYPE_evq:
		return ds_kop_held_evq(c, ds, op, key, io);
	}
	return ds_kernel_apply(c, type, ds, op, key, io);
}

#define DS_BATCH_APPLY ds_kernel_apply
#define DS_BATCH_APPLY_HELD ds_kernel_apply_held
#include "ds/batch.h"

#define DS_KERNEL_OP_HELD(name)                                                                  \
	__attribute__((noinline)) int ds_kop_held_##name(struct ds_ctx *c, __u64 ds, __u32 op,  \
							 __u64 key, struct ds_kv *io)            \
	{                                                                                        \
		if (!c || !io)                                                                   \
			return DS_INVALID;                                                       \
		return ds_apply_held_kv(c, DS_TYPE_##name, ds, op, key, io);                     \
	}
DS_KERNEL_OP_HELD(spsc)
DS_KERNEL_OP_HELD(mpsc)
DS_KERNEL_OP_HELD(evq)

static __always_inline int ds_kernel_batch(struct ds_batch *b, __u32 type, __u32 flags)
{
	struct ds_batch_run r;
	struct ds_head __arena *h = ARENA_PTR(struct ds_head, b->ds);
	struct arena_heap __arena *heap;
	__u64 t0, count = b->count, i;

	b->status = DS_CORRUPT;
	if (!b->ds)
		return 0;
	heap = ARENA_PTR(struct arena_heap, h->heap);
	if (!heap || heap->magic != ARENA_HEAP_MAGIC)
		return 0;
	r.acc = (struct ds_batch_acc __arena *)arena_heap_alloc(heap, sizeof(struct ds_batch_acc), flags);
	if (!r.acc) {
		b->status = DS_NOMEM;
		return 0;
	}
	ds_batch_acc_zero(r.acc);
	if (ds_batch_begin(&r, b, type, DS_SIDE_KERNEL, flags)) {
		arena_free(r.acc);
		return 0;
	}
	r.c.rec = ebr_cpu_record(r.c.ebr);
	/* a user thread that died inside a critical section holds every
	 * advance of this batch back: expire it first */
	ebr_kernel_expire(ARENA_ADDR(r.c.ebr));
	t0 = bpf_ktime_get_ns();
	if (b->cmd == DS_CMD_MIX) {
		if (count > DS_BATCH_MAX)
			count = DS_BATCH_MAX;
		/* the roles claimed once, before the first operation, and
		 * given back by ds_batch_end however the loop ends. A type
		 * without roles (ds_roles_of folds to NULL) keeps the one
		 * loop it has: it has no role check to skip, and the held
		 * loop's frame would cost the skip list's deepest call path
		 * 16 bytes of the 512 the verifier allows. */
		if (ds_roles_of(type, b->ds) && ds_batch_mix_claim(&r, type)) {
			for (i = arena_opaque(0); i < count && can_loop; i++)
				if (ds_batch_step(&r, i, type, 1))
					break;
		} else {
			for (i = arena_opaque(0); i < count && can_loop; i++)
				if (ds_batch_step(&r, i, type, 0))
					break;
		}
	} else {
		ds_batch_command(&r, b, type);
	}
	b->cpu = bpf_get_smp_processor_id();
	ds_batch_end(&r, b, bpf_ktime_get_ns() - t0);
	if (b->cmd == DS_CMD_MIX) {
		__sync_fetch_and_add(&kernel_ops, r.acc->done[0] + r.acc->done[1] + r.acc->done[2] + r.acc->done[3]);
		__sync_fetch_and_add(&kernel_fails,
				     r.acc->fails[0] + r.acc->fails[1] + r.acc->fails[2] + r.acc->fails[3]);
		__sync_fetch_and_add(&kernel_batches, 1);
	}
	arena_free(r.acc);
	/* above the high watermark: give some pages back while sleepable */
	if (arena_atomic_load(&heap->free_pages, ARENA_RELAXED) > heap->trim_high)
		arena_heap_trim(heap, DS_TRIM_AUTO_BUDGET, 0);
	return 0;
}

/* Give free pages of a heap back to the kernel (include/ds/trim.h). */
SEC("syscall")
int ds_trim(struct ds_trim_args *a)
{
	struct arena_heap __arena *heap = ARENA_PTR(struct arena_heap, a->heap);
	__u64 budget = a->budget;

	a->status = -1;
	if (!a->heap || heap->magic != ARENA_HEAP_MAGIC)
		return 0;
	if (budget > DS_TRIM_MAX_BUDGET)
		budget = DS_TRIM_MAX_BUDGET;
	a->given = arena_heap_trim(heap, budget, a->force);
	a->quarantined = arena_atomic_load(&heap->quar_n, ARENA_RELAXED);
	a->free_pages = arena_atomic_load(&heap->free_pages, ARENA_RELAXED);
	a->status = 0;
	return 0;
}

#define DS_KERNEL_PROG(id, name)                                               \
	SEC("syscall")                                                         \
	int ds_run_##name(struct ds_batch *b)                                  \
	{                                                                      \
		return ds_kernel_batch(b, id, 0);                              \
	}
DS_REGISTRY(DS_KERNEL_PROG)
