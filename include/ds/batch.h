/* SPDX-License-Identifier: MIT */
/*
 * Batches: many operations on one instance per call, the same code in a
 * SEC("syscall") program (bpf/ds_ops.bpf.c, run with
 * bpf_prog_test_run_opts) and in userspace threads (ds_batch_user).
 *
 * struct ds_batch is the program's context: the caller fills the inputs,
 * the call fills the outputs. cmd selects what to do:
 *   DS_CMD_MIX      count operations drawn from mix[] (weights of insert,
 *                   delete, search, pop) on keys key_lo + [0, key_span):
 *                   random keys, or key_lo + i % key_span with DS_KEYS_SEQ.
 *                   Op i inserts the value val_base + i (a queue producer
 *                   puts its id in the high bits and gets a per-producer
 *                   sequence). Successful pops and deletes append (key, val)
 *                   to out[] (struct ds_kv, in the arena) while it has room.
 *                   With DS_BATCH_STOP_ON_FAIL the batch ends at the first
 *                   failure (status says which). With hist set, each op
 *                   appends a struct ds_hist_rec (history.h) to hist[]
 *                   (in the arena) while it has room; n_hist says how many.
 *   DS_CMD_VERIFY   verify; count/keysum/valsum/where go to done[0..3].
 *   DS_CMD_ITERATE  iterate [key_lo, key_lo + key_span) into out[].
 *   DS_CMD_INIT     lay out a zeroed instance at ds (capacity = key_span).
 *   DS_CMD_REFILL   fill the kernel slots' page pools (sleepable only).
 * Operations run in epoch critical sections of DS_BATCH_CS_OPS operations.
 * Results per op kind (and the NOMEM/BUSY/FULL among the failures) are
 * returned; the counts are also added to
 * the instance's per-side statistics (with the batch's time split over the
 * op kinds by count).
 */
#ifndef DS_BATCH_H
#define DS_BATCH_H

#include "registry.h"
#include "history.h"
#include "roles.h"

/* How a batch runs one operation: ds_apply_kv inlined, unless the includer
 * routes it elsewhere (the kernel program calls one global function per
 * structure, so that the verifier checks each structure's code once). */
#ifndef DS_BATCH_APPLY
#define DS_BATCH_APPLY ds_apply_kv
#endif
/* The same for a batch that holds every role its operations need
 * (ds_batch_mix_claim): the structures' work with no role check. */
#ifndef DS_BATCH_APPLY_HELD
#define DS_BATCH_APPLY_HELD ds_apply_held_kv
#endif

/* ops per kernel call: a long bpf_loop is not preempted (docs/platform.md) */
#define DS_BATCH_MAX 65536
#define DS_BATCH_CS_OPS 32

enum ds_cmd {
	DS_CMD_MIX = 0,
	DS_CMD_VERIFY = 1,
	DS_CMD_ITERATE = 2,
	DS_CMD_INIT = 3,
	DS_CMD_REFILL = 4,
};

enum ds_keys {
	DS_KEYS_RANDOM = 0,
	DS_KEYS_SEQ = 1,
};

/* struct ds_batch.flags */
#define DS_BATCH_STOP_ON_FAIL 0x1 /* stop at the first operation that fails (a
				   * producer meeting a full queue): the
				   * successes are then exactly ops 0..done-2 */
#define DS_BATCH_VAL_KEY 0x2     /* an insert's value is its key (the stress
				  * driver's keyed agents), not val_base + i */
#define DS_BATCH_HIST_QUEUE 0x4  /* history records of a queue or stack: an
				  * insert carries its value as the key */

enum ds_mix {
	DS_MIX_INSERT = 0,
	DS_MIX_DELETE = 1,
	DS_MIX_SEARCH = 2,
	DS_MIX_POP = 3,
	DS_MIX__COUNT
};

struct ds_batch {
	/* in */
	ap_u64 ds;   /* instance address */
	ap_u32 type; /* registry id (checked against the instance) */
	ap_u32 cmd;  /* enum ds_cmd */
	ap_u32 count;
	ap_u32 keys; /* enum ds_keys */
	ap_u32 mix[DS_MIX__COUNT];
	ap_u32 flags; /* DS_BATCH_* */
	ap_u32 spare_in;
	ap_u64 key_lo;
	ap_u64 key_span;
	ap_u64 seed;
	ap_u64 val_base;
	ap_u64 out; /* struct ds_kv array in the arena, or 0 */
	ap_u64 out_cap;
	/* out */
	ap_u64 n_out;
	ap_u64 done[DS_MIX__COUNT];  /* DS_CMD_VERIFY: count, keysum, valsum, where */
	ap_u64 fails[DS_MIX__COUNT]; /* any result but DS_OK */
	ap_u32 nomem;                /* of which DS_NOMEM */
	ap_u32 busy;                 /* DS_BUSY */
	ap_u32 full;                 /* DS_FULL */
	ap_u32 spare;
	ap_u64 ns;
	ap_s32 status; /* DS_OK, or why the batch stopped early */
	ap_u32 cpu;
	/* history (DS_CMD_MIX), in: */
	ap_u64 hist;     /* struct ds_hist_rec array in the arena, or 0 */
	ap_u64 hist_cap; /* records it holds */
	ap_u32 agent;    /* struct ds_hist_rec.agent of every record */
	ap_u32 spare_hist;
	/* out: */
	ap_u64 n_hist;
};

static __always_inline ap_u32 ds_mix_op(ap_u32 m)
{
	return m == DS_MIX_INSERT ? DS_OP_INSERT :
	       m == DS_MIX_DELETE ? DS_OP_DELETE :
	       m == DS_MIX_SEARCH ? DS_OP_SEARCH : DS_OP_POP;
}

/*
 * ns * part / total without a branch on the counts. In BPF a division by
 * zero yields zero, and no branch may depend on a count that the verifier
 * might know exactly after a loop (it would mark it precise and walk the
 * loop once per iteration); in userspace the guard is needed and harmless.
 */
static __always_inline ap_u64 ds_share(ap_u64 ns, ap_u64 part, ap_u64 total)
{
#if ARENA_IS_BPF
	return ns * part / total;
#else
	return total ? ns * part / total : 0;
#endif
}

/* A batch's counters. In BPF they live in the arena (a small object taken
 * from the heap for the duration of the call), not on the stack: the BPF
 * stack of the batch program plus the deepest operation (the skip list's
 * search path) must fit in 512 bytes, and arena memory takes variable
 * offsets (done[op]++) without costing the verifier anything. */
struct ds_batch_acc {
	ap_u64 n_out;
	ap_u64 done[DS_MIX__COUNT];
	ap_u64 fails[DS_MIX__COUNT];
	ap_u64 nomem;
	ap_u64 busy;
	ap_u64 full;
	ap_u64 n_hist;
	ap_u64 fence; /* the target of the history's barriers: a word of this batch's own */
};

/* Working state of one batch (the BPF stack, or the user thread's). */
struct ds_batch_run {
	struct ds_ctx c;
	struct ds_batch *b;
	struct ds_batch_acc __arena *acc;
	ap_u32 in_cs;
	ap_s32 status;
};

/*
 * The history record of the next operation: its invocation time before the
 * operation and the rest after it. The record is addressed again after the
 * operation from the arena counter rather than kept in a variable: a pointer
 * live across the operation would take a slot of the BPF stack, which the
 * batch and the skip list's deepest call share (512 bytes in all).
 *
 * A recorded interval must contain the operation's linearization point, and
 * a clock read is not ordered with the memory accesses around it: in the
 * kernel, bpf_ktime_get_ns() reads the TSC after an LFENCE (ordered after
 * earlier loads, not stores), and a store of the operation (a queue's release
 * of its tail) can still sit in this CPU's store buffer when t_resp is read,
 * so an agent that starts after t_resp may not see it yet; and the
 * operation's first loads could be served before t_inv. BPF has no fence
 * instruction: an atomic read-modify-write on a word of the batch's own (the
 * JIT's LOCK-prefixed instruction on x86-64; LSE atomics with a trailing
 * barrier on arm64) is a full barrier, and it costs only the batches that
 * record. The user-side loop (pipeline/_ds/runloop.c) does the same with a
 * seq_cst fence.
 */
static __always_inline struct ds_hist_rec __arena *ds_batch_hist_slot(struct ds_batch_run *r)
{
	return ARENA_PTR(struct ds_hist_rec, r->b->hist + r->acc->n_hist * sizeof(struct ds_hist_rec));
}

static __always_inline void ds_batch_hist_inv(struct ds_batch_run *r)
{
	struct ds_hist_rec __arena *h = ds_batch_hist_slot(r);

	h->t_inv = arena_now_ns();
	(void)arena_atomic_add(&r->acc->fence, 1, ARENA_SEQ_CST);
}

static __always_inline void ds_batch_hist_resp(struct ds_batch_run *r, ap_u64 i, ap_u32 op, int res, ap_u64 key,
					       struct ds_kv *io)
{
	struct ds_batch *b = r->b;
	struct ds_hist_rec __arena *h;
	/* what the insert put in (io holds the operation's outputs now) */
	ap_u64 val = 0, vin = (b->flags & DS_BATCH_VAL_KEY) ? key : b->val_base + i;

	(void)arena_atomic_add(&r->acc->fence, 1, ARENA_SEQ_CST);
	h = ds_batch_hist_slot(r);
	h->t_resp = arena_now_ns();
	/* the user loop's rules (runloop.c): a keyed insert carries the value it
	 * tried, a found or deleted key its value, a pop what it took as the key;
	 * a queue's insert carries its value as the key */
	if (op == DS_OP_POP) {
		key = res == DS_OK ? io->val : 0;
	} else if (op == DS_OP_INSERT) {
		if (b->flags & DS_BATCH_HIST_QUEUE)
			key = vin;
		else
			val = vin;
	} else if (res == DS_OK) {
		val = io->val;
	}
	h->key = key;
	h->value = val;
	h->agent = b->agent;
	h->op = (ap_u8)op;
	h->result = (ap_u8)res;
	h->flags = 0;
	r->acc->n_hist++;
}

/* The role bit (DS_HELD_PRODUCER / DS_HELD_CONSUMER) an operation of type
 * needs, or 0: spsc's inserts the producer's, the pops of spsc, mpsc and
 * evq the consumer's. */
static __always_inline ap_u64 ds_op_role(ap_u32 type, ap_u32 op)
{
	if (op == DS_OP_INSERT && ds_role_enforced(type, DS_ROLE_PRODUCER))
		return DS_HELD_PRODUCER;
	if (op == DS_OP_POP && ds_role_enforced(type, DS_ROLE_CONSUMER))
		return DS_HELD_CONSUMER;
	return 0;
}

/*
 * The roles of instance ds that a batch's operations need (need: the
 * DS_HELD_PRODUCER / DS_HELD_CONSUMER bits), claimed once for the whole
 * batch, before its first operation. 1 when c holds every one of them,
 * attached or kept until the batch's end (ds_role_batch_start, or the
 * DS_HELD_KEEP a batch's context starts with): the operations then run
 * with no role check at all (ds_apply_held). 0 when one is taken by a live
 * holder, or c holds roles of another instance: the operations then claim
 * one by one, and those that find their role taken return DS_BUSY, as bare
 * operations do. The one claim behind every batch loop: ds_exec (through
 * ds_batch_claim), ds_batch_user and the kernel program (through
 * ds_batch_mix_claim).
 */
static __always_inline int ds_batch_claim_roles(struct ds_ctx *c, ap_u32 type, ap_u64 ds, ap_u64 need)
{
	struct ds_roles __arena *rs;
	ap_u32 w;

	if (!ds_role_enforced(type, DS_ROLE_PRODUCER) && !ds_role_enforced(type, DS_ROLE_CONSUMER))
		return 1;
	rs = ds_roles_of(type, ds);
	if (!rs)
		return 0;
	for (w = DS_ROLE_PRODUCER; w <= DS_ROLE_CONSUMER; w++) {
		if (!(need & (1ULL << w)) || ds_role_held(c, rs, w))
			continue;
		if (ds_role_begin_slow(c, rs, w) < 0)
			return 0;
		/* claimed, but not kept: c holds roles of another instance */
		if (!ds_role_held(c, rs, w)) {
			ds_role_release(rs, w);
			return 0;
		}
	}
	return 1;
}

/* ds_batch_claim_roles for n operations given as ds_exec takes them
 * (uniform >= 0: every one is that op; otherwise ops[]). */
static __always_inline int ds_batch_claim(struct ds_ctx *c, ap_u32 type, ap_u64 ds, ap_s32 uniform, const ap_u8 *ops,
					  ap_u64 n)
{
	ap_u64 need = 0, i;

	if (uniform >= 0)
		need = ds_op_role(type, (ap_u32)uniform);
	else
		for (i = 0; i < n && need != (DS_HELD_PRODUCER | DS_HELD_CONSUMER); i++)
			need |= ds_op_role(type, ops[i]);
	return ds_batch_claim_roles(c, type, ds, need);
}

/* ds_apply for a context that holds every role its operations need: the
 * structures' work without the check of ds_role_held. */
static __always_inline int ds_apply_held(struct ds_ctx *c, ap_u32 type, ap_u64 ds, ap_u32 op, ap_u64 key, ap_u64 val,
					 ap_u64 *okey, ap_u64 *oval)
{
	if (type == DS_TYPE_spsc && op == DS_OP_INSERT)
		return ds_spsc_push_held(ARENA_PTR(struct ds_spsc, ds), key, val);
	if (type == DS_TYPE_spsc && op == DS_OP_POP)
		return ds_spsc_pop_held(ARENA_PTR(struct ds_spsc, ds), okey, oval);
	if (type == DS_TYPE_mpsc && op == DS_OP_POP)
		return ds_mpsc_pop_held(c, ARENA_PTR(struct ds_mpsc, ds), okey, oval);
	if (type == DS_TYPE_evq && op == DS_OP_POP)
		return ds_evq_pop_held(ARENA_PTR(struct ds_evq, ds), okey, oval);
	return ds_apply(c, type, ds, op, key, val, okey, oval);
}

/* ds_apply_held with ds_apply_kv's struct ds_kv in and out (a batch's
 * step, user or kernel). */
static __always_inline int ds_apply_held_kv(struct ds_ctx *c, ap_u32 type, ap_u64 ds, ap_u32 op, ap_u64 key,
					    struct ds_kv *io)
{
	ap_u64 okey = 0, oval = 0;
	int res = ds_apply_held(c, type, ds, op, key, io->val, &okey, &oval);

	io->key = okey;
	io->val = oval;
	return res;
}

/* The roles a DS_CMD_MIX batch's draws can need (an insert's and a pop's,
 * by their weights; with no weight at all every draw is a pop, as
 * ds_batch_step draws), claimed once before its first operation: 1 when
 * the batch may run ds_batch_step with held set (ds_batch_claim_roles). */
static __always_inline int ds_batch_mix_claim(struct ds_batch_run *r, ap_u32 type)
{
	struct ds_batch *b = r->b;
	ap_u32 total = b->mix[0] + b->mix[1] + b->mix[2] + b->mix[3];
	ap_u64 need = 0;

	if (b->mix[DS_MIX_INSERT])
		need |= ds_op_role(type, DS_OP_INSERT);
	if (b->mix[DS_MIX_POP] || !total)
		need |= ds_op_role(type, DS_OP_POP);
	return ds_batch_claim_roles(&r->c, type, b->ds, need);
}

/* One operation of a DS_CMD_MIX batch; type is a constant in BPF, and held
 * (a constant in each loop that calls this) says that the batch holds every
 * role its operations need. */
static __always_inline long ds_batch_step(struct ds_batch_run *r, ap_u64 i, ap_u32 type, const int held)
{
	struct ds_batch *b = r->b;
	struct ds_batch_acc __arena *acc = r->acc;
	ap_u64 x, key, span = b->key_span ? b->key_span : 1;
	struct ds_kv io; /* in: the value to insert; out: what pop/delete/search return */
	ap_u32 w, total, m;
	int res;

	if (!r->in_cs) {
		if (ds_enter(&r->c)) {
			r->status = DS_BUSY;
			return 1;
		}
		r->in_cs = 1;
	}
	x = arena_xorshift64(&r->c.rng);
	total = b->mix[0] + b->mix[1] + b->mix[2] + b->mix[3];
	w = total ? (ap_u32)((x >> 8) % total) : 0;
	if (w < b->mix[0])
		m = DS_MIX_INSERT;
	else if (w < b->mix[0] + b->mix[1])
		m = DS_MIX_DELETE;
	else if (w < b->mix[0] + b->mix[1] + b->mix[2])
		m = DS_MIX_SEARCH;
	else
		m = DS_MIX_POP;
	if (b->keys == DS_KEYS_SEQ)
		key = b->key_lo + i % span;
	else
		key = b->key_lo + (x >> 24) % span;

	io.key = 0;
	io.val = (b->flags & DS_BATCH_VAL_KEY) ? key : b->val_base + i;
	if (b->hist && acc->n_hist < b->hist_cap)
		ds_batch_hist_inv(r);
	if (held)
		res = DS_BATCH_APPLY_HELD(&r->c, type, b->ds, ds_mix_op(m), key, &io);
	else
		res = DS_BATCH_APPLY(&r->c, type, b->ds, ds_mix_op(m), key, &io);
	if (b->hist && acc->n_hist < b->hist_cap)
		ds_batch_hist_resp(r, i, ds_mix_op(m), res, key, &io);

	m &= DS_MIX__COUNT - 1;
	acc->done[m]++;
	if (res != DS_OK)
		acc->fails[m]++;
	if (res == DS_NOMEM)
		acc->nomem++;
	else if (res == DS_BUSY)
		acc->busy++;
	else if (res == DS_FULL)
		acc->full++;
	if (res == DS_OK && (m == DS_MIX_POP || m == DS_MIX_DELETE) && b->out && acc->n_out < b->out_cap) {
		struct ds_kv __arena *o = ARENA_PTR(struct ds_kv, b->out + acc->n_out * sizeof(struct ds_kv));

		o->key = io.key;
		o->val = io.val;
		acc->n_out++;
	}
	if ((i & (DS_BATCH_CS_OPS - 1)) == DS_BATCH_CS_OPS - 1) {
		ds_exit(&r->c);
		r->in_cs = 0;
	}
	if (res != DS_OK && (b->flags & DS_BATCH_STOP_ON_FAIL)) {
		r->status = res;
		return 1;
	}
	return 0;
}

/* Zero a batch's counters (volatile stores: no memset on arena memory). */
static __always_inline void ds_batch_acc_zero(struct ds_batch_acc __arena *a)
{
	ap_u32 k;

	arena_store_once(&a->n_out, 0);
	for (k = 0; k < DS_MIX__COUNT; k++) {
		arena_store_once(&a->done[k], 0);
		arena_store_once(&a->fails[k], 0);
	}
	arena_store_once(&a->nomem, 0);
	arena_store_once(&a->busy, 0);
	arena_store_once(&a->full, 0);
	arena_store_once(&a->n_hist, 0);
	arena_store_once(&a->fence, 0);
}

/* Fill the context from the instance's head. Returns DS_OK or DS_CORRUPT.
 * r->acc must be set by the caller (and zeroed). */
static __always_inline int ds_batch_begin(struct ds_batch_run *r, struct ds_batch *b, ap_u32 type, ap_u32 side,
					  ap_u32 flags)
{
	struct ds_head __arena *h = ARENA_PTR(struct ds_head, b->ds);

	r->b = b;
	r->in_cs = 0;
	r->status = DS_OK;
	r->c.flags = flags;
	r->c.side = side;
	r->c.rng = b->seed ? b->seed : 0x2545f4914f6cdd1dULL;
	/* the batch keeps each role it claims until its end (role.h) */
	r->c.held = DS_HELD_KEEP;
#if !ARENA_IS_BPF
	r->c.owner = 0;
	r->c.push_hint.at = r->c.pop_hint.at = 0;
#endif
	/* DS_CMD_INIT: the head is not laid out yet, but its caller wrote
	 * heap and domain into it */
	if (b->cmd != DS_CMD_INIT && (!b->ds || ds_head_check(h, type)))
		return DS_CORRUPT;
	if (!b->ds)
		return DS_CORRUPT;
	r->c.heap = ARENA_PTR(struct arena_heap, h->heap);
	r->c.ebr = ARENA_PTR(struct ebr_domain, h->ebr);
	if (!r->c.heap || r->c.heap->magic != ARENA_HEAP_MAGIC || !r->c.ebr || r->c.ebr->magic != EBR_MAGIC)
		return DS_CORRUPT;
	return DS_OK;
}

/* Write the outputs and add them to the instance's statistics. */
static __always_inline void ds_batch_end(struct ds_batch_run *r, struct ds_batch *b, ap_u64 ns)
{
	struct ds_head __arena *h = ARENA_PTR(struct ds_head, b->ds);
	struct ds_batch_acc __arena *a = r->acc;
	ap_u64 total = a->done[0] + a->done[1] + a->done[2] + a->done[3];

	if (r->in_cs) {
		ds_exit(&r->c);
		r->in_cs = 0;
	}
	ds_role_drop(&r->c);
	/* constant indices: the context of a BPF program takes no variable offsets */
	b->n_out = a->n_out;
	b->n_hist = a->n_hist;
	if (b->cmd != DS_CMD_VERIFY) {
		b->done[0] = a->done[0];
		b->done[1] = a->done[1];
		b->done[2] = a->done[2];
		b->done[3] = a->done[3];
	}
	b->fails[0] = a->fails[0];
	b->fails[1] = a->fails[1];
	b->fails[2] = a->fails[2];
	b->fails[3] = a->fails[3];
	b->nomem = (ap_u32)a->nomem;
	b->busy = (ap_u32)a->busy;
	b->full = (ap_u32)a->full;
	b->ns = ns;
	b->status = r->status;
	if (b->cmd == DS_CMD_MIX) {
		ds_stats_add(h, r->c.side, DS_OP_INSERT, a->done[0], a->fails[0], ds_share(ns, a->done[0], total));
		ds_stats_add(h, r->c.side, DS_OP_DELETE, a->done[1], a->fails[1], ds_share(ns, a->done[1], total));
		ds_stats_add(h, r->c.side, DS_OP_SEARCH, a->done[2], a->fails[2], ds_share(ns, a->done[2], total));
		ds_stats_add(h, r->c.side, DS_OP_POP, a->done[3], a->fails[3], ds_share(ns, a->done[3], total));
	} else if (b->cmd == DS_CMD_VERIFY) {
		ds_stats_add(h, r->c.side, DS_OP_VERIFY, 1, r->status != DS_OK, ns);
	} else if (b->cmd == DS_CMD_ITERATE) {
		ds_stats_add(h, r->c.side, DS_OP_ITERATE, 1, r->status != DS_OK, ns);
	} else if (b->cmd == DS_CMD_INIT && r->status == DS_OK) {
		ds_stats_add(h, r->c.side, DS_OP_INIT, 1, 0, ns);
	}
}

/*
 * The commands other than DS_CMD_MIX (run inside a critical section where
 * needed). In BPF a function of its own (static, so verified at its call
 * with the caller's types): inlined, its locals would widen the frame of the
 * kernel batch, which older verifiers, rounding each frame up, count against
 * the 512 bytes of the skip list's deepest call path. Unused in the objects
 * that include this header without running batches.
 */
#if ARENA_IS_BPF
# define DS_BATCH_COMMAND_FN static __attribute__((noinline, unused))
#else
# define DS_BATCH_COMMAND_FN static __always_inline
#endif
DS_BATCH_COMMAND_FN void ds_batch_command(struct ds_batch_run *r, struct ds_batch *b, ap_u32 type)
{
	if (b->cmd == DS_CMD_VERIFY) {
		struct ds_verify v = {};

		r->status = ds_verify_type(&r->c, type, b->ds, &v);
		/* straight into the context, never through r->done: in BPF a
		 * branch on a count the verifier knows exactly (ds_batch_end's
		 * totals) would make it walk the verify loop once per node */
		b->done[0] = v.count;
		b->done[1] = v.keysum;
		b->done[2] = v.valsum;
		b->done[3] = v.where;
	} else if (b->cmd == DS_CMD_ITERATE) {
		ap_u64 n = 0;

		if (ds_enter(&r->c)) {
			r->status = DS_BUSY;
			return;
		}
		r->status = ds_iterate_type(&r->c, type, b->ds, b->key_lo, b->key_lo + b->key_span,
					    ARENA_PTR(struct ds_kv, b->out), b->out_cap, &n);
		ds_exit(&r->c);
		r->acc->n_out = n;
	} else if (b->cmd == DS_CMD_INIT) {
		struct ds_config cfg = {};

		cfg.capacity = b->key_span;
		r->status = ds_init_type(&r->c, type, b->ds, &cfg);
	} else if (b->cmd == DS_CMD_REFILL) {
		r->status = arena_heap_refill(r->c.heap, r->c.flags) ? DS_NOMEM : DS_OK;
	} else {
		r->status = DS_INVALID;
	}
}

#if !ARENA_IS_BPF
static long ds_batch_user_step(ap_u64 i, void *data)
{
	struct ds_batch_run *r = (struct ds_batch_run *)data;

	return ds_batch_step(r, i, r->b->type, 0);
}

static long ds_batch_user_step_held(ap_u64 i, void *data)
{
	struct ds_batch_run *r = (struct ds_batch_run *)data;

	return ds_batch_step(r, i, r->b->type, 1);
}

/*
 * Run a batch from a user thread whose context c holds its epoch record
 * (ds_user_attach). The same semantics as the kernel program; no limit on
 * count.
 */
static inline int ds_batch_user(struct ds_ctx *c, struct ds_batch *b)
{
	struct ds_batch_run r;
	struct ds_batch_acc acc;
	ap_u64 t0;

	r.acc = &acc;
	ds_batch_acc_zero(&acc);
	if (ds_batch_begin(&r, b, b->type, DS_SIDE_USER, 0)) {
		b->status = DS_CORRUPT;
		return DS_CORRUPT;
	}
	r.c.rec = c->rec;
	r.c.owner = c->owner;
	/* a context attached to roles runs the batch in them */
	if (c->held)
		r.c.held = c->held;
	t0 = arena_now_ns();
	if (b->cmd == DS_CMD_MIX && ds_batch_mix_claim(&r, b->type))
		arena_loop(b->count, ds_batch_user_step_held, &r);
	else if (b->cmd == DS_CMD_MIX)
		arena_loop(b->count, ds_batch_user_step, &r);
	else
		ds_batch_command(&r, b, b->type);
	b->cpu = arena_cpu();
	ds_batch_end(&r, b, arena_now_ns() - t0);
	return r.status;
}

/*
 * The user-side batch loop: the one loop behind DsArena.exec (pipeline/_ds)
 * and the benchmark's user side (pipeline/bench/_native), so the benchmark
 * measures the code Python runs. n operations given as arrays: ops[i] an
 * enum ds_op (INSERT, DELETE, SEARCH or POP), or op >= 0 for the same one
 * every time; keys/vals may be NULL (zeros). okeys/ovals receive what pop,
 * delete and search return, results each operation's result (any of them
 * may be NULL). Critical sections of DS_BATCH_CS_OPS operations. With
 * DS_BATCH_STOP_ON_FAIL the run ends after the first failure (a producer
 * meeting a full queue keeps its values in order). The counts per op kind
 * (a search that misses counts as a failure) and the time, split over the
 * kinds by count, are added to the instance's user-side statistics.
 */
struct ds_exec_args {
	/* in */
	ap_u64 ds;
	ap_u32 type;
	ap_s32 op; /* >= 0: every operation is this one; < 0: ops[] */
	ap_u32 flags; /* DS_BATCH_STOP_ON_FAIL */
	ap_u64 n;
	const ap_u8 *ops;
	const ap_u64 *keys, *vals;
	ap_u64 *okeys, *ovals;
	ap_u8 *results;
	/* out */
	ap_u64 done; /* operations run: n, less after a stop or a busy epoch */
	ap_u64 count[DS_OP__COUNT], fails[DS_OP__COUNT];
	ap_u64 ns;
	int busy; /* a critical section could not be entered */
};

/* What the loop of a batch counts. */
struct ds_exec_tally {
	ap_u64 count[DS_OP__COUNT], fails[DS_OP__COUNT];
	int busy;
};

/* The loop of ds_exec_typed; held (a constant) says that the batch holds
 * every role its operations need. The arguments are read into locals
 * first: the output arrays may alias *a (the extension is built with
 * -fno-strict-aliasing), which would otherwise force a reload of every
 * field, and of the type, after each store. Returns the operations run. */
static __always_inline ap_u64 ds_exec_loop(struct ds_ctx *c, const struct ds_exec_args *a, const ap_u32 type,
					   const int held, struct ds_exec_tally *t)
{
	const ap_u64 ds = a->ds, n = a->n;
	const ap_s32 uniform = a->op;
	const int stop = (a->flags & DS_BATCH_STOP_ON_FAIL) != 0;
	const ap_u8 *ops = a->ops;
	const ap_u64 *keys = a->keys, *vals = a->vals;
	ap_u64 *okeys = a->okeys, *ovals = a->ovals;
	ap_u8 *results = a->results;
	ap_u64 count[DS_OP__COUNT] = { 0 }, fails[DS_OP__COUNT] = { 0 };
	ap_u64 i;
	ap_u32 k;
	int in_cs = 0, busy = 0;
	/* a constant per case of ds_exec: the types that retire nothing run
	 * without sections */
	const int need_cs = ds_type_needs_section(type);

	for (i = 0; i < n; i++) {
		ap_u32 op = uniform >= 0 ? (ap_u32)uniform : ops[i];
		ap_u64 ok = 0, ov = 0;
		int res;

		if (need_cs && !in_cs) {
			if (ds_enter(c)) {
				busy = 1;
				break;
			}
			in_cs = 1;
		}
		if (held)
			res = ds_apply_held(c, type, ds, op, keys ? keys[i] : 0, vals ? vals[i] : 0, &ok, &ov);
		else
			res = ds_apply(c, type, ds, op, keys ? keys[i] : 0, vals ? vals[i] : 0, &ok, &ov);
		if (results)
			results[i] = (ap_u8)res;
		if (okeys)
			okeys[i] = ok;
		if (ovals)
			ovals[i] = ov;
		op &= DS_OP__COUNT - 1;
		count[op]++;
		if (res != DS_OK)
			fails[op]++;
		if (in_cs && (i & (DS_BATCH_CS_OPS - 1)) == DS_BATCH_CS_OPS - 1) {
			ds_exit(c);
			in_cs = 0;
		}
		if (res != DS_OK && stop) {
			i++;
			break;
		}
	}
	if (in_cs)
		ds_exit(c);
	for (k = 0; k < DS_OP__COUNT; k++) {
		t->count[k] = count[k];
		t->fails[k] = fails[k];
	}
	t->busy = busy;
	return i;
}

/* One type's batch: a constant in each case of ds_exec, so ds_apply folds
 * to that structure's operations. */
static __always_inline ap_u64 ds_exec_typed(struct ds_ctx *c, struct ds_exec_args *a, const ap_u32 type)
{
	const ap_u64 ds = a->ds;
	struct ds_exec_tally t;
	ap_u64 i, t0 = arena_now_ns(), ns, total;
	ap_u32 k;

	ds_role_batch_start(c);
	if (ds_batch_claim(c, type, ds, a->op, a->ops, a->n))
		i = ds_exec_loop(c, a, type, 1, &t);
	else
		i = ds_exec_loop(c, a, type, 0, &t);
	ds_role_drop(c);
	ns = arena_now_ns() - t0;
	total = i ? i : 1;
	for (k = 0; k < DS_OP__COUNT; k++) {
		a->count[k] = t.count[k];
		a->fails[k] = t.fails[k];
		if (t.count[k])
			ds_stats_add((struct ds_head *)ds, DS_SIDE_USER, k, t.count[k], t.fails[k],
				     ns * t.count[k] / total);
	}
	a->done = i;
	a->ns = ns;
	a->busy = t.busy;
	return i;
}

/* Returns the number of operations run (a->done). */
static inline ap_u64 ds_exec(struct ds_ctx *c, struct ds_exec_args *a)
{
	switch (a->type) {
#define DS_EXEC_CASE(id, name) \
	case id:               \
		return ds_exec_typed(c, a, id);
		DS_REGISTRY(DS_EXEC_CASE)
#undef DS_EXEC_CASE
	default:
		/* ds_apply's answer for an unknown type, in every result */
		return ds_exec_typed(c, a, a->type);
	}
}
#endif

#endif /* DS_BATCH_H */
