/* SPDX-License-Identifier: MIT */
/*
 * Kernel programs and user threads on the same arena at the same time.
 * Loads build/ds_ops.skel.h (one SEC("syscall") program per registered
 * structure) and build/ds_nosleep.skel.h (a tracepoint that inserts with
 * non-sleepable allocation), lays a data-structure space over the upper
 * half of the arena and checks, for every registered structure:
 *   - kernel batches alone, kernel verify and iterate against user verify;
 *   - kernel threads (bpf_prog_test_run_opts) and user threads operating at
 *     once; keyed: disjoint and contended inserts and deletes with exact
 *     counts and key sums; queues: every value exactly once, per-producer
 *     order at every consumer (kernel consumers log their pops);
 * and for the shared machinery:
 *   - the allocator over 10^6 alloc/free cycles split between both sides
 *     stays within a bounded number of pages, with frees of the other side's
 *     objects;
 *   - a user reader holding a node while a kernel batch deletes it never
 *     sees it freed before it leaves its critical section;
 *   - the non-sleepable tracepoint gets DS_NOMEM once its pool is empty and
 *     works again after a DS_CMD_REFILL;
 *   - a user process killed inside its critical section is expired by
 *     kernel batches alone, and pages go back to the kernel and come back
 *     (mode "memory" runs just these two).
 * Needs root (BPF). Usage: test_kernel [name|all] [scale divisor].
 */
/* before libbpf's headers pull in the C library's: CPU_SET and
 * pthread_setaffinity_np (tcommon.h defines it too, for the other tests) */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tcommon.h"
#include "ds_ops.skel.h"
#include "ds_nosleep.skel.h"
#include "ds/trim.h"
#include "ds/roles.h"

#include <sys/wait.h>

static struct ds_ops_bpf *skel;
static struct ds_space *sp;
static ap_u64 scale_div = 1;
static int prog_fd[DS_TYPES_END];

/* the arena map is 32768 pages (AP_ARENA_DEFAULT_PAGES); the space takes
 * the upper half, as the pipeline leaves the lower pages to its queue */
#define SPACE_FIRST 16384
#define SPACE_PAGES 15000

static int kbatch(struct ds_batch *b)
{
	LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = b, .ctx_size_in = sizeof(*b));
	int err = bpf_prog_test_run_opts(prog_fd[b->type], &o);

	REQUIRE(err == 0, "bpf_prog_test_run_opts: %d", err);
	return b->status;
}

static struct ds_batch mix(const struct ds_meta *m, ap_u64 ds, ap_u32 kind, ap_u64 lo, ap_u64 span, ap_u32 count)
{
	struct ds_batch b = {0};

	b.ds = ds;
	b.type = m->id;
	b.cmd = DS_CMD_MIX;
	b.count = count;
	b.keys = DS_KEYS_SEQ;
	b.mix[kind] = 1;
	b.key_lo = lo;
	b.key_span = span;
	b.seed = 12345;
	return b;
}

static ap_u64 create(struct ds_ctx *c, const struct ds_meta *m, ap_u64 cap)
{
	struct ds_config cfg = {.capacity = cap};
	int err;
	ap_u64 d = ds_create(sp, c, m->id, &cfg, NULL, &err);

	REQUIRE(d, "%s create: %d", m->name, err);
	return d;
}

static ap_u64 val_of(ap_u64 key)
{
	return key;
}

static void kverify(const struct ds_meta *m, ap_u64 ds, struct ds_verify *v)
{
	struct ds_batch b = {0};

	b.ds = ds;
	b.type = m->id;
	b.cmd = DS_CMD_VERIFY;
	CHECK(kbatch(&b) == DS_OK, "%s kernel verify -> %d (where %llu)", m->name, b.status,
	      (unsigned long long)b.done[3]);
	v->count = b.done[0];
	v->keysum = b.done[1];
	v->valsum = b.done[2];
	v->where = b.done[3];
}

static void uverify(struct ds_ctx *c, const struct ds_meta *m, ap_u64 ds, struct ds_verify *v)
{
	int r = ds_verify_type(c, m->id, ds, v);

	CHECK(r == DS_OK, "%s user verify -> %d (where %llu)", m->name, r, (unsigned long long)v->where);
}

/* ---- kernel alone ---- */

static void kernel_alone(struct ds_ctx *c, const struct ds_meta *m)
{
	ap_u64 d = create(c, m, 4096), i, n = 1000;
	struct ds_verify kv, uv;
	struct ds_batch b;
	struct ds_kv *out = (struct ds_kv *)arena_heap_alloc(&sp->heap, 2048 * sizeof(struct ds_kv), 0);

	REQUIRE(out, "alloc");
	b = mix(m, d, DS_MIX_INSERT, 1, n, (ap_u32)n);
	b.val_base = 1;
	kbatch(&b);
	CHECK(b.done[0] == n && b.fails[0] == 0, "%s: kernel inserts %llu, failed %llu", m->name,
	      (unsigned long long)b.done[0], (unsigned long long)b.fails[0]);
	kverify(m, d, &kv);
	uverify(c, m, d, &uv);
	CHECK(kv.count == n && uv.count == n && kv.keysum == uv.keysum && kv.keysum == n * (n + 1) / 2,
	      "%s: kernel verify %llu/%llu, user verify %llu/%llu", m->name, (unsigned long long)kv.count,
	      (unsigned long long)kv.keysum, (unsigned long long)uv.count, (unsigned long long)uv.keysum);
	/* kernel iterate */
	b = mix(m, d, 0, 1, n + 1, 0);
	b.cmd = DS_CMD_ITERATE;
	b.out = (ap_u64)out;
	b.out_cap = 2048;
	CHECK(kbatch(&b) == DS_OK && b.n_out == n, "%s: kernel iterate %llu", m->name, (unsigned long long)b.n_out);
	/* the same batch from a user thread; then the per-side statistics */
	{
		struct ds_stats ks, us;

		b = mix(m, d, DS_MIX_INSERT, 1, n, 10);
		b.mix[DS_MIX_INSERT] = 0;
		b.mix[DS_MIX_SEARCH] = 1;
		CHECK(ds_batch_user(c, &b) == DS_OK && b.done[2] == 10, "%s: user batch", m->name);
		ds_stats_read((struct ds_head *)d, DS_SIDE_KERNEL, &ks);
		ds_stats_read((struct ds_head *)d, DS_SIDE_USER, &us);
		CHECK(ks.op[DS_OP_INSERT].count == n && ks.op[DS_OP_INSERT].failures == 0 &&
			      ks.op[DS_OP_INSERT].ns > 0 && ks.op[DS_OP_VERIFY].count == 1 &&
			      us.op[DS_OP_SEARCH].count == 10,
		      "%s: stats kernel insert %llu, user search %llu", m->name,
		      (unsigned long long)ks.op[DS_OP_INSERT].count, (unsigned long long)us.op[DS_OP_SEARCH].count);
	}
	if (m->flags & DS_F_KEYED) {
		/* the kernel finds every key; user deletes half, kernel the rest */
		b = mix(m, d, DS_MIX_SEARCH, 1, n, (ap_u32)n);
		kbatch(&b);
		CHECK(b.fails[2] == 0, "%s: kernel search misses %llu", m->name, (unsigned long long)b.fails[2]);
		for (i = 1; i <= n; i += 2) {
			ap_u64 k, v;

			ds_enter(c);
			CHECK(ds_apply(c, m->id, d, DS_OP_DELETE, i, 0, &k, &v) == DS_OK && v == i, "%s: user delete",
			      m->name);
			ds_exit(c);
		}
		b = mix(m, d, DS_MIX_DELETE, 1, n, (ap_u32)n);
		kbatch(&b);
		CHECK(b.done[1] - b.fails[1] == n / 2, "%s: kernel deletes %llu", m->name,
		      (unsigned long long)(b.done[1] - b.fails[1]));
	} else {
		/* the user pops the kernel's pushes in order (reverse for a stack,
		 * any order for a structure that is neither FIFO nor LIFO) */
		int unordered = !(m->flags & (DS_F_FIFO | DS_F_LIFO)), bad = 0;
		ap_u64 sum = 0;

		for (i = 0; i < n; i++) {
			ap_u64 k = 0, v = 0, want = (m->flags & DS_F_LIFO) ? n - i : i + 1;

			ds_enter(c);
			if (ds_apply(c, m->id, d, DS_OP_POP, 0, 0, &k, &v) != DS_OK || v != k || (!unordered && k != want))
				bad++;
			ds_exit(c);
			sum += k;
		}
		CHECK(bad == 0 && sum == n * (n + 1) / 2, "%s: %d user pops wrong", m->name, bad);
		/* the user pushes, the kernel pops and logs */
		for (i = 0; i < n; i++) {
			ap_u64 k, v;

			ds_enter(c);
			CHECK(ds_apply(c, m->id, d, DS_OP_INSERT, i, i, &k, &v) == DS_OK, "%s: user push", m->name);
			ds_exit(c);
		}
		b = mix(m, d, DS_MIX_POP, 0, 1, (ap_u32)n);
		b.out = (ap_u64)out;
		b.out_cap = 2048;
		kbatch(&b);
		CHECK(b.n_out == n, "%s: kernel popped %llu", m->name, (unsigned long long)b.n_out);
		bad = 0;
		sum = 0;
		for (i = 0; i < b.n_out; i++) {
			ap_u64 want = (m->flags & DS_F_LIFO) ? n - 1 - i : i;

			bad += !unordered && out[i].key != want;
			sum += out[i].key;
		}
		CHECK(bad == 0 && sum == n * (n - 1) / 2, "%s: %d kernel pops wrong", m->name, bad);
	}
	kverify(m, d, &kv);
	CHECK(kv.count == 0, "%s: %llu left", m->name, (unsigned long long)kv.count);
	/* an instance laid out by the kernel (DS_CMD_INIT), then used from userspace */
	{
		ap_u64 h = ds_alloc_head(sp, m->id), k, v;
		struct ds_batch ib = {0};

		REQUIRE(h, "head");
		ib.ds = h;
		ib.type = m->id;
		ib.cmd = DS_CMD_INIT;
		ib.key_span = 64;
		CHECK(kbatch(&ib) == DS_OK, "%s: kernel init -> %d", m->name, ib.status);
		ds_enter(c);
		CHECK(ds_apply(c, m->id, h, DS_OP_INSERT, 5, 6, &k, &v) == DS_OK, "%s: insert into kernel-made", m->name);
		ds_exit(c);
		uverify(c, m, h, &uv);
		CHECK(uv.count == 1 && uv.keysum == 5, "%s: kernel-made instance holds %llu", m->name,
		      (unsigned long long)uv.count);
	}
	arena_free(out);
}

/* ---- keyed, kernel and user at once ---- */

#define KBATCH 1024

struct kc {
	const struct ds_meta *m;
	ap_u64 d, own, shared;
	pthread_barrier_t bar;
	ap_u64 ok_ins[4], ok_del[4];
};

/* Keys [lo, lo + cnt) from this side: a kernel batch or user operations.
 * Returns how many succeeded. */
static ap_u64 run_keys(struct kc *s, struct ds_ctx *c, int kernel, ap_u32 kind, ap_u64 lo, ap_u64 cnt)
{
	ap_u64 ok = 0, x, k, v;

	if (kernel) {
		struct ds_batch b = mix(s->m, s->d, kind, lo, cnt, (ap_u32)cnt);

		b.val_base = lo; /* op i: key lo + i, value lo + i */
		kbatch(&b);
		CHECK(b.busy == 0, "%s: kernel batch busy %u", s->m->name, b.busy);
		return b.done[kind] - b.fails[kind];
	}
	for (x = 0; x < cnt; x++) {
		ds_enter(c);
		ok += ds_apply(c, s->m->id, s->d, kind == DS_MIX_INSERT ? DS_OP_INSERT : DS_OP_DELETE, lo + x,
			       val_of(lo + x), &k, &v) == DS_OK;
		ds_exit(c);
	}
	return ok;
}

/* Threads 0, 1 work through kernel batches, 2, 3 through user operations.
 * Phase 0: each inserts its own range, and all race for the shared range
 * (each from its own starting point). Phase 1: all race to delete the
 * shared range; each deletes the upper half of its own range. */
static void *keyed_side(struct t_thread *t)
{
	struct kc *s = (struct kc *)t->arg;
	ap_u64 own_lo = 1000000ULL * (ap_u64)(t->index + 1), start = (ap_u64)t->index * s->shared / 4, i;
	int kernel = t->index < 2, phase;
	struct ds_ctx c;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	for (phase = 0; phase < 2; phase++) {
		ap_u32 kind = phase ? DS_MIX_DELETE : DS_MIX_INSERT;
		ap_u64 ok = 0;

		for (i = 0; i < s->shared; i += KBATCH) {
			ap_u64 a = (start + i) % s->shared, cnt = s->shared - i < KBATCH ? s->shared - i : KBATCH;

			if (a + cnt <= s->shared) {
				ok += run_keys(s, &c, kernel, kind, 1 + a, cnt);
			} else {
				ok += run_keys(s, &c, kernel, kind, 1 + a, s->shared - a);
				ok += run_keys(s, &c, kernel, kind, 1, cnt - (s->shared - a));
			}
			/* own keys interleaved with the shared ones */
			if (!phase && i < s->own)
				CHECK(run_keys(s, &c, kernel, kind, own_lo + i, s->own - i < KBATCH ? s->own - i : KBATCH) ==
					      (s->own - i < KBATCH ? s->own - i : KBATCH),
				      "%s: own inserts", s->m->name);
		}
		if (phase)
			CHECK(run_keys(s, &c, kernel, kind, own_lo + s->own / 2, s->own - s->own / 2) ==
				      s->own - s->own / 2,
			      "%s: own deletes", s->m->name);
		(phase ? s->ok_del : s->ok_ins)[t->index] = ok;
		pthread_barrier_wait(&s->bar);
		pthread_barrier_wait(&s->bar);
	}
	ds_user_detach(&c);
	return NULL;
}

static void keyed_both_sides(struct ds_ctx *c, const struct ds_meta *m)
{
	struct kc *s = (struct kc *)calloc(1, sizeof(*s));
	struct ds_verify kv, uv;
	ap_u64 ins = 0, del = 0, keysum = 0, t, i;
	pthread_t th[4];
	struct t_thread ts[4];

	s->m = m;
	s->d = create(c, m, 16384);
	s->own = (strcmp(m->name, "list") ? 6000 : 600) / scale_div;
	s->shared = s->own;
	pthread_barrier_init(&s->bar, NULL, 5);
	for (t = 0; t < 4; t++) {
		ts[t].index = (int)t;
		ts[t].arg = s;
		ts[t].fn = keyed_side;
		pthread_create(&th[t], NULL, t_trampoline, &ts[t]);
	}
	pthread_barrier_wait(&s->bar);
	for (t = 0; t < 4; t++)
		ins += s->ok_ins[t];
	CHECK(ins == s->shared, "%s: %llu successful inserts of %llu contended keys (kernel %llu+%llu, user %llu+%llu)",
	      m->name, (unsigned long long)ins, (unsigned long long)s->shared, (unsigned long long)s->ok_ins[0],
	      (unsigned long long)s->ok_ins[1], (unsigned long long)s->ok_ins[2], (unsigned long long)s->ok_ins[3]);
	kverify(m, s->d, &kv);
	uverify(c, m, s->d, &uv);
	for (t = 0; t < 4; t++)
		for (i = 0; i < s->own; i++)
			keysum += 1000000ULL * (t + 1) + i;
	for (i = 1; i <= s->shared; i++)
		keysum += i;
	CHECK(kv.count == 4 * s->own + s->shared && uv.count == kv.count && kv.keysum == keysum &&
		      uv.keysum == keysum,
	      "%s: after inserts kernel sees %llu keys (sum %llu), user %llu (sum %llu), expected %llu (sum %llu)",
	      m->name, (unsigned long long)kv.count, (unsigned long long)kv.keysum, (unsigned long long)uv.count,
	      (unsigned long long)uv.keysum, (unsigned long long)(4 * s->own + s->shared),
	      (unsigned long long)keysum);
	pthread_barrier_wait(&s->bar);
	pthread_barrier_wait(&s->bar);
	for (t = 0; t < 4; t++)
		del += s->ok_del[t];
	CHECK(del == s->shared, "%s: %llu successful deletes of %llu contended keys", m->name,
	      (unsigned long long)del, (unsigned long long)s->shared);
	keysum = 0;
	for (t = 0; t < 4; t++)
		for (i = 0; i < s->own / 2; i++)
			keysum += 1000000ULL * (t + 1) + i;
	kverify(m, s->d, &kv);
	CHECK(kv.count == 4 * (s->own / 2) && kv.keysum == keysum, "%s: after deletes %llu keys (sum %llu)",
	      m->name, (unsigned long long)kv.count, (unsigned long long)kv.keysum);
	/* the exact set, read by a kernel iterate: own_lo(t) + [0, own / 2) */
	{
		ap_u64 cap = 4 * s->own + 16, want = 0, bad = 0;
		struct ds_kv *out = (struct ds_kv *)arena_heap_alloc(&sp->heap, cap * sizeof(struct ds_kv), 0);
		ap_u64 *keys = (ap_u64 *)calloc(cap, sizeof(ap_u64));
		struct ds_batch b = mix(m, s->d, 0, 0, ~0ULL, 0);

		REQUIRE(out && keys, "alloc");
		b.cmd = DS_CMD_ITERATE;
		b.out = (ap_u64)out;
		b.out_cap = cap;
		CHECK(kbatch(&b) == DS_OK, "%s: kernel iterate -> %d", m->name, b.status);
		for (i = 0; i < b.n_out; i++)
			keys[i] = out[i].key;
		qsort(keys, b.n_out, sizeof(*keys), t_cmp_u64);
		for (t = 0; t < 4; t++)
			for (i = 0; i < s->own / 2; i++, want++)
				bad += want >= b.n_out || keys[want] != 1000000ULL * (t + 1) + i;
		CHECK(b.n_out == want && bad == 0, "%s: final key set: %llu keys, %llu differ from the expected %llu",
		      m->name, (unsigned long long)b.n_out, (unsigned long long)bad, (unsigned long long)want);
		for (i = 0; i < b.n_out; i++)
			bad += out[i].val != out[i].key;
		CHECK(bad == 0, "%s: values do not match their keys", m->name);
		free(keys);
		arena_free(out);
	}
	pthread_barrier_wait(&s->bar);
	for (t = 0; t < 4; t++)
		pthread_join(th[t], NULL);
	pthread_barrier_destroy(&s->bar);
	free(s);
}

/* ---- queues, kernel and user at once ---- */

#define QPROD 3 /* 0, 1: kernel producers; 2: user producer (SPSC: kernel 0 only) */

struct qc {
	const struct ds_meta *m;
	ap_u64 d, n;          /* values per producer */
	int producers, kernel_consumer, user_consumers;
	ap_u64 popped;
	ap_u64 popped_sum;    /* of the sequence numbers popped */
	unsigned char *seen;
	ap_u64 dups, order_errors, bad;
	struct ds_kv *kout;   /* the kernel consumer's log (arena) */
	int gave_up;          /* a side saw no progress for T_STALL_S */
};

/* Say once what a stalled run is missing, and make every side stop. */
static void q_give_up(struct qc *s, const char *who)
{
	if (__atomic_exchange_n(&s->gave_up, 1, __ATOMIC_SEQ_CST))
		return;
	fprintf(stderr, "%s: %s gave up after %d s without progress: popped %llu of %llu values, "
		"sequence sum %llu of %llu\n", s->m->name, who, T_STALL_S,
		(unsigned long long)__atomic_load_n(&s->popped, __ATOMIC_SEQ_CST),
		(unsigned long long)(s->producers * s->n),
		(unsigned long long)__atomic_load_n(&s->popped_sum, __ATOMIC_SEQ_CST),
		(unsigned long long)(s->producers * (s->n * (s->n - 1) / 2)));
}

static int q_stop(struct qc *s)
{
	return __atomic_load_n(&s->gave_up, __ATOMIC_RELAXED);
}

static void q_record(struct qc *s, ap_u64 *last, ap_u64 k, ap_u64 v)
{
	ap_u64 p = v >> 40, i = v & ((1ULL << 40) - 1);

	/* every push carries its sequence number as the key too */
	if (p >= QPROD || i >= s->n || k != i) {
		/* not counted as popped: the run stalls and says what is missing */
		if (__atomic_fetch_add(&s->bad, 1, __ATOMIC_RELAXED) < 3)
			fprintf(stderr, "%s: popped a malformed value: key %llu value %#llx\n", s->m->name,
				(unsigned long long)k, (unsigned long long)v);
		return;
	}
	if (__atomic_exchange_n(&s->seen[p * s->n + i], 1, __ATOMIC_RELAXED))
		__atomic_fetch_add(&s->dups, 1, __ATOMIC_RELAXED);
	if ((s->m->flags & DS_F_FIFO) && last[p] != ~0ULL && i <= last[p])
		__atomic_fetch_add(&s->order_errors, 1, __ATOMIC_RELAXED);
	last[p] = i;
	__atomic_fetch_add(&s->popped_sum, i, __ATOMIC_RELAXED);
	__atomic_fetch_add(&s->popped, 1, __ATOMIC_RELAXED);
}

static void *q_side(struct t_thread *t)
{
	struct qc *s = (struct qc *)t->arg;
	ap_u64 total = (ap_u64)s->producers * s->n, last[QPROD], i;
	struct ds_ctx c;
	struct t_stall stall = {0};
	int role = t->index; /* 0..2 producers, 3 kernel consumer, 4.. user consumers */

	for (i = 0; i < QPROD; i++)
		last[i] = ~0ULL;
	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	if (role < QPROD) {
		ap_u64 sent = 0;

		if (role >= s->producers)
			goto out;
		while (sent < s->n && !q_stop(s)) {
			/* retries wait for room: the consumers must be taking values out */
			if (t_stalled(&stall, __atomic_load_n(&s->popped, __ATOMIC_RELAXED) + sent)) {
				q_give_up(s, role < 2 ? "kernel producer" : "user producer");
				break;
			}
			if (role < 2) {
				ap_u64 cnt = s->n - sent < KBATCH ? s->n - sent : KBATCH;
				struct ds_batch b = mix(s->m, s->d, DS_MIX_INSERT, sent, s->n, (ap_u32)cnt);

				/* value of op i: val_base + i = producer << 40 | sequence;
				 * a full queue ends the batch, and the rest is sent again */
				b.val_base = ((ap_u64)role << 40) | sent;
				b.flags = DS_BATCH_STOP_ON_FAIL;
				kbatch(&b);
				sent += b.done[0] - b.fails[0];
				CHECK(b.fails[0] == b.full + b.busy, "%s: kernel push failures %llu", s->m->name,
				      (unsigned long long)b.fails[0]);
				if (b.fails[0])
					sched_yield();
			} else {
				ap_u64 k, v;
				int r;

				ds_enter(&c);
				r = ds_apply(&c, s->m->id, s->d, DS_OP_INSERT, sent, ((ap_u64)role << 40) | sent, &k, &v);
				ds_exit(&c);
				if (r == DS_OK)
					sent++;
				else
					sched_yield();
			}
		}
	} else if (role == QPROD) {
		if (!s->kernel_consumer)
			goto out;
		while (__atomic_load_n(&s->popped, __ATOMIC_RELAXED) < total && !q_stop(s)) {
			struct ds_batch b = mix(s->m, s->d, DS_MIX_POP, 0, 1, 256);

			b.out = (ap_u64)s->kout;
			b.out_cap = 256;
			kbatch(&b);
			for (i = 0; i < b.n_out; i++)
				q_record(s, last, s->kout[i].key, s->kout[i].val);
			if (!b.n_out) {
				if (t_stalled(&stall, __atomic_load_n(&s->popped, __ATOMIC_RELAXED)))
					q_give_up(s, "kernel consumer");
				sched_yield();
			}
		}
	} else {
		if (role - QPROD - 1 >= s->user_consumers)
			goto out;
		while (__atomic_load_n(&s->popped, __ATOMIC_RELAXED) < total && !q_stop(s)) {
			ap_u64 k = 0, v = 0;
			int r;

			ds_enter(&c);
			r = ds_apply(&c, s->m->id, s->d, DS_OP_POP, 0, 0, &k, &v);
			ds_exit(&c);
			if (r == DS_OK) {
				q_record(s, last, k, v);
				continue;
			}
			if (t_stalled(&stall, __atomic_load_n(&s->popped, __ATOMIC_RELAXED)))
				q_give_up(s, "user consumer");
			sched_yield();
		}
	}
out:
	ds_user_detach(&c);
	return NULL;
}

static void queue_both_sides(struct ds_ctx *c, const struct ds_meta *m)
{
	struct qc s = {0};
	struct ds_verify kv;
	ap_u64 i, missing = 0;

	s.m = m;
	s.d = create(c, m, 1024);
	s.n = 30000 / scale_div;
	s.producers = m->model == DS_MODEL_SPSC ? 1 : QPROD;
	/* one consumer for MPSC/SPSC: the user side (the pipeline's direction) */
	s.kernel_consumer = m->model == DS_MODEL_MPMC;
	s.user_consumers = m->model == DS_MODEL_MPMC ? 2 : 1;
	s.seen = (unsigned char *)calloc(QPROD * s.n, 1);
	s.kout = (struct ds_kv *)arena_heap_alloc(&sp->heap, 256 * sizeof(struct ds_kv), 0);
	REQUIRE(s.kout, "alloc");
	t_run_threads(QPROD + 1 + 2, q_side, &s);
	for (i = 0; i < (ap_u64)s.producers * s.n; i++) {
		if (!s.seen[i] && !missing++)
			fprintf(stderr, "%s: first value never popped: producer %llu, sequence %llu\n", m->name,
				(unsigned long long)(i / s.n), (unsigned long long)(i % s.n));
	}
	CHECK(missing == 0 && s.dups == 0 && s.bad == 0 && !s.gave_up,
	      "%s: expected %llu values (sequence sum %llu), popped %llu (sum %llu): %llu lost, %llu duplicated, "
	      "%llu malformed%s", m->name, (unsigned long long)(s.producers * s.n),
	      (unsigned long long)(s.producers * (s.n * (s.n - 1) / 2)), (unsigned long long)s.popped,
	      (unsigned long long)s.popped_sum, (unsigned long long)missing, (unsigned long long)s.dups,
	      (unsigned long long)s.bad, s.gave_up ? ", a side gave up" : "");
	CHECK(s.order_errors == 0, "%s: %llu per-producer order violations", m->name,
	      (unsigned long long)s.order_errors);
	kverify(m, s.d, &kv);
	CHECK(kv.count == 0, "%s: %llu left", m->name, (unsigned long long)kv.count);
	arena_free(s.kout);
	free(s.seen);
}

/* ---- allocator: 10^6 alloc/free cycles across both sides ---- */

struct ac {
	ap_u64 d;
	ap_u64 allocs0, target; /* run until the heap counted target more allocations */
};

static ap_u64 heap_allocs(void)
{
	struct arena_heap_stats st;

	arena_heap_get_stats(&sp->heap, &st);
	return st.allocs;
}

static void *alloc_side(struct t_thread *t)
{
	struct ac *s = (struct ac *)t->arg;
	const struct ds_meta *m = ds_meta_of(DS_TYPE_hash);
	ap_u64 done = 0, seed = 5 + (ap_u64)t->index;
	struct ds_ctx c;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	while (heap_allocs() - s->allocs0 < s->target) {
		if (t->index == 0) {
			/* kernel: random inserts and deletes over 2048 keys */
			struct ds_batch b = mix(m, s->d, DS_MIX_INSERT, 0, 2048, 4096);

			b.keys = DS_KEYS_RANDOM;
			b.mix[DS_MIX_INSERT] = 1;
			b.mix[DS_MIX_DELETE] = 1;
			b.seed = t_rand(&seed) | 1;
			kbatch(&b);
			done += b.done[0] + b.done[1];
		} else {
			ap_u64 k = t_rand(&seed) % 2048, ok, ov, i;

			ds_enter(&c);
			for (i = 0; i < 32; i++, k = (k + 1) % 2048) {
				if (i & 1)
					ds_apply(&c, DS_TYPE_hash, s->d, DS_OP_DELETE, k, 0, &ok, &ov);
				else
					ds_apply(&c, DS_TYPE_hash, s->d, DS_OP_INSERT, k, val_of(k), &ok, &ov);
			}
			ds_exit(&c);
			done += 32;
		}
	}
	ds_user_detach(&c);
	return NULL;
}

static void alloc_both_sides(struct ds_ctx *c)
{
	const struct ds_meta *m = ds_meta_of(DS_TYPE_hash);
	struct ac s;
	struct arena_heap_stats st0, st;
	struct ebr_stats es;
	struct ds_verify v;

	s.d = create(c, m, 4096);
	CHECK(ebr_synchronize(&sp->ebr, c->rec, 100000) == 0, "synchronize");
	arena_heap_get_stats(&sp->heap, &st0);
	s.allocs0 = st0.allocs;
	s.target = 1000000 / scale_div; /* alloc/free cycles, split between kernel and user */
	/* one kernel thread, one user thread: no more threads than CPUs. With
	 * more, a user thread descheduled inside its critical section holds
	 * the epoch for a scheduler slice, and what is retired meanwhile waits
	 * (bounded, but by the slice; see include/arena/epoch.h) */
	t_run_threads(2, alloc_side, &s);
	arena_heap_get_stats(&sp->heap, &st);
	ebr_get_stats(&sp->ebr, &es);
	printf("alloc both sides, at the end of the run: %llu retired objects waiting for their grace period, "
	       "%llu pages in use\n",
	       (unsigned long long)es.pending, (unsigned long long)st.pages_in_use);
	CHECK(ebr_synchronize(&sp->ebr, c->rec, 100000) == 0, "synchronize");
	arena_heap_get_stats(&sp->heap, &st);
	ebr_get_stats(&sp->ebr, &es);
	uverify(c, m, s.d, &v);
	CHECK(es.pending == 0, "pending %llu", (unsigned long long)es.pending);
	CHECK(st.bytes_in_use - st0.bytes_in_use == v.count * sizeof(struct hm_node),
	      "bytes in use grew by %llu for %llu live nodes", (unsigned long long)(st.bytes_in_use - st0.bytes_in_use),
	      (unsigned long long)v.count);
	/* Bounded: without reuse the run would populate target * node size
	 * bytes. The slack is for retired objects waiting out a grace period,
	 * which grows when another process on the machine deschedules one of
	 * the two threads inside its critical section (seen: 319 pages under
	 * load, under 64 on a quiet machine); an eighth of the no-reuse
	 * footprint still fails if freed memory were not reused. */
	/* compared as counts, not as a difference: kernel batches may give
	 * pages back meanwhile, and fewer pages than before is within bounds */
	CHECK(st.pages_populated < st0.pages_populated + s.target * sizeof(struct hm_node) / ARENA_PAGE_SIZE / 8,
	      "pages populated %llu, %llu before", (unsigned long long)st.pages_populated,
	      (unsigned long long)st0.pages_populated);
	CHECK(st.bad_frees == st0.bad_frees, "bad frees");
	CHECK(st.allocs - st0.allocs >= s.target && st.frees - st0.frees + v.count >= s.target,
	      "%llu allocations, %llu frees", (unsigned long long)(st.allocs - st0.allocs),
	      (unsigned long long)(st.frees - st0.frees));
	printf("alloc both sides: %llu allocs, %llu frees, pages populated +%llu, %llu nodes live\n",
	       (unsigned long long)(st.allocs - st0.allocs), (unsigned long long)(st.frees - st0.frees),
	       (unsigned long long)(st.pages_populated - st0.pages_populated), (unsigned long long)v.count);
}

/* ---- a user reader holds a node the kernel deletes ---- */

static void hold_against_kernel(struct ds_ctx *c)
{
	const struct ds_meta *m = ds_meta_of(DS_TYPE_hash);
	ap_u64 d = create(c, m, 64), k, v;
	struct ds_ctx r;
	struct ds_batch b;
	struct hm_node *held = NULL;
	ap_u64 cur;

	REQUIRE(ds_user_attach(sp, &r) == DS_OK, "attach");
	ds_enter(c);
	ds_apply(c, DS_TYPE_hash, d, DS_OP_INSERT, 42, 4242, &k, &v);
	ds_exit(c);
	ds_enter(&r);
	cur = arena_atomic_load(ds_hash_bucket((struct ds_hash *)d, 42), ARENA_ACQUIRE);
	while (DS_UNMARK(cur) && !held) {
		struct hm_node *n = (struct hm_node *)DS_UNMARK(cur);

		if (n->key == 42)
			held = n;
		cur = n->next;
	}
	REQUIRE(held, "node 42");
	/* the kernel deletes 42 and churns through thousands of retires */
	b = mix(m, d, DS_MIX_DELETE, 42, 1, 1);
	kbatch(&b);
	CHECK(b.done[1] == 1 && b.fails[1] == 0, "kernel delete of 42");
	for (int i = 0; i < 20; i++) {
		b = mix(m, d, DS_MIX_INSERT, 1000, 2000, 2000);
		kbatch(&b);
		b = mix(m, d, DS_MIX_DELETE, 1000, 2000, 2000);
		kbatch(&b);
	}
	CHECK(held->key == 42 && held->val == 4242 && arena_obj_size(held) != 0,
	      "node freed under a reader inside its critical section");
	ds_exit(&r);
	CHECK(ebr_synchronize(&sp->ebr, c->rec, 100000) == 0, "synchronize");
	CHECK(arena_obj_size(held) == 0 && t_poisoned(&held->val), "node not freed after the reader left");
	ds_user_detach(&r);
}

/* ---- roles: a kernel batch claims once, before its first operation ---- */

static ap_u64 role_owner(ap_u32 type, ap_u64 d, ap_u32 which)
{
	struct ds_role_state st;

	REQUIRE(ds_role_read(type, d, which, &st) == DS_OK, "role read");
	return st.owner;
}

/*
 * The consumer role of d held by a user context (attached): a kernel batch
 * and a user batch (ds_batch_user) of inserts and pops get BUSY for every
 * pop and run every insert, and change no role; once the holder lets go, a
 * kernel batch pops everything in FIFO order, and both roles are free after
 * it (a later claim succeeds).
 */
static void kroles_refused(struct ds_ctx *c, const struct ds_meta *m)
{
	ap_u64 d = create(c, m, 64), k, v, i, ins, want, nins = 0, ukeys[24];
	struct ds_kv *out = (struct ds_kv *)arena_heap_alloc(&sp->heap, 64 * sizeof(struct ds_kv), 0);
	struct ds_ctx h;
	struct ds_batch b;
	int side;

	REQUIRE(out, "alloc");
	REQUIRE(ds_user_attach(sp, &h) == DS_OK, "attach");
	for (i = 1; i <= 8; i++) {
		ds_enter(c);
		CHECK(ds_apply(c, m->id, d, DS_OP_INSERT, i, i, &k, &v) == DS_OK, "%s: push %llu", m->name,
		      (unsigned long long)i);
		ds_exit(c);
	}
	CHECK(ds_role_attach(&h, m->id, d, DS_ROLE_CONSUMER) == DS_OK, "%s: attach the consumer", m->name);
	/* pops only: every one refused */
	b = mix(m, d, DS_MIX_POP, 0, 1, 20);
	b.out = (ap_u64)out;
	b.out_cap = 64;
	CHECK(kbatch(&b) == DS_OK && b.done[3] == 20 && b.fails[3] == 20 && b.busy == 20 && b.n_out == 0,
	      "%s: kernel pops beside a consumer: %llu done, %llu failed, %u busy, %llu out", m->name,
	      (unsigned long long)b.done[3], (unsigned long long)b.fails[3], b.busy, (unsigned long long)b.n_out);
	/* inserts and pops, from the kernel and from a user thread: the pops
	 * refused one by one, the inserts run (spsc: its producer role claimed
	 * for the batch and given back) */
	for (side = 0; side < 2; side++) {
		b = mix(m, d, DS_MIX_INSERT, 100 + 16 * (ap_u64)side, 16, 16);
		b.mix[DS_MIX_POP] = 1;
		b.keys = DS_KEYS_SEQ;
		b.val_base = 100 + 16 * (ap_u64)side;
		b.seed = 777 + (ap_u64)side;
		b.out = (ap_u64)out;
		b.out_cap = 64;
		if (side)
			CHECK(ds_batch_user(c, &b) == DS_OK, "%s: user batch -> %d", m->name, b.status);
		else
			kbatch(&b);
		CHECK(b.status == DS_OK && b.done[0] + b.done[3] == 16 && b.done[0] > 0 && b.done[3] > 0 &&
			      b.fails[0] == 0 && b.fails[3] == b.done[3] && b.busy == b.done[3] && b.n_out == 0,
		      "%s: %s batch beside a consumer: %llu inserts (%llu failed), %llu pops (%llu failed, %u busy)",
		      m->name, side ? "user" : "kernel", (unsigned long long)b.done[0], (unsigned long long)b.fails[0],
		      (unsigned long long)b.done[3], (unsigned long long)b.fails[3], b.busy);
		nins += b.done[0];
		CHECK(role_owner(m->id, d, DS_ROLE_CONSUMER) == h.owner && c->held == 0,
		      "%s: consumer role %#llx after the %s batch, not the holder's", m->name,
		      (unsigned long long)role_owner(m->id, d, DS_ROLE_CONSUMER), side ? "user" : "kernel");
		if (m->id == DS_TYPE_spsc)
			CHECK(role_owner(m->id, d, DS_ROLE_PRODUCER) == 0, "%s: producer role kept by the %s batch",
			      m->name, side ? "user" : "kernel");
	}
	ds_role_detach(&h);
	/* the holder gone: 1..8, then the batches' inserts in order */
	b = mix(m, d, DS_MIX_POP, 0, 1, (ap_u32)(8 + nins + 4));
	b.out = (ap_u64)out;
	b.out_cap = 64;
	kbatch(&b);
	CHECK(b.status == DS_OK && b.n_out == 8 + nins && b.busy == 0 && b.fails[3] == 4,
	      "%s: kernel pops after the holder: %llu out of %llu, %u busy, %llu failed", m->name,
	      (unsigned long long)b.n_out, (unsigned long long)(8 + nins), b.busy, (unsigned long long)b.fails[3]);
	ins = 0;
	for (i = 0; i < b.n_out && i < 8 + nins; i++) {
		want = i < 8 ? i + 1 : 0;
		if (i < 8)
			CHECK(out[i].key == want && out[i].val == want, "%s: pop %llu -> %llu", m->name,
			      (unsigned long long)i, (unsigned long long)out[i].key);
		else if (ins < 24)
			ukeys[ins++] = out[i].key;
		if (i >= 8)
			CHECK(out[i].val == out[i].key && out[i].key >= 100 && out[i].key < 132 &&
				      (i == 8 || out[i].key > out[i - 1].key),
			      "%s: pop %llu -> (%llu, %llu) after %llu", m->name, (unsigned long long)i,
			      (unsigned long long)out[i].key, (unsigned long long)out[i].val,
			      (unsigned long long)out[i - 1].key);
	}
	(void)ukeys;
	CHECK(role_owner(m->id, d, DS_ROLE_CONSUMER) == 0, "%s: consumer role %#llx after the kernel batch", m->name,
	      (unsigned long long)role_owner(m->id, d, DS_ROLE_CONSUMER));
	CHECK(ds_role_attach(&h, m->id, d, DS_ROLE_CONSUMER) == DS_OK, "%s: claim after the kernel batch", m->name);
	ds_role_detach(&h);
	if (m->id == DS_TYPE_spsc) {
		CHECK(role_owner(m->id, d, DS_ROLE_PRODUCER) == 0, "%s: producer role held", m->name);
		CHECK(ds_role_attach(&h, m->id, d, DS_ROLE_PRODUCER) == DS_OK, "%s: producer claim", m->name);
		ds_role_detach(&h);
	}
	ds_user_detach(&h);
	arena_free(out);
}

#define KR_N 256    /* elements per round */
#define KR_ROUNDS 400

struct kr {
	const struct ds_meta *m;
	ap_u64 d;
	struct ds_kv *out;
	ap_u64 kowner;        /* the kernel batch's role word (its thread) */
	int round, stop;      /* the round the kernel thread runs; the last */
	int ready;            /* the round the user consumer is polling in */
	ap_u64 sandwiched;    /* user pops between two reads of the kernel's hold */
	ap_u64 refused, taken; /* of those BUSY; any user pop that took an element */
	ap_u64 bad_rounds;
	pthread_barrier_t bar;
};

/* Thread 0: one kernel batch of DS_BATCH_MAX pops per round, the first
 * KR_N of them taking the round's elements. Thread 1: the second consumer:
 * while the kernel thread's round lasts, bare pops, each between two reads
 * of the role word, once the first read shows the kernel batch's hold. */
static void *kr_side(struct t_thread *t)
{
	struct kr *s = (struct kr *)t->arg;
	struct ds_ctx c;
	int round;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	if (t->index == 0)
		s->kowner = DS_ROLE_KERNEL | arena_self_owner();
	/* one CPU each where there are two, so that the consumer polls while
	 * the batch runs rather than waiting for its CPU */
	if (libbpf_num_possible_cpus() > 1) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(t->index, &set);
		(void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	for (round = 0; round < KR_ROUNDS; round++) {
		pthread_barrier_wait(&s->bar); /* the round's elements are in */
		if (__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE))
			break;
		if (t->index == 0) {
			struct ds_batch b = mix(s->m, s->d, DS_MIX_POP, 0, 1, DS_BATCH_MAX);
			ap_u64 i, bad = 0;

			b.out = (ap_u64)s->out;
			b.out_cap = KR_N;
			/* the batch starts once the consumer polls */
			while (__atomic_load_n(&s->ready, __ATOMIC_ACQUIRE) != round + 1)
				sched_yield();
			kbatch(&b);
			__atomic_store_n(&s->round, round + 1, __ATOMIC_RELEASE);
			for (i = 0; i < b.n_out; i++)
				bad += s->out[i].key != (ap_u64)round * KR_N + i + 1;
			if (b.status != DS_OK || b.n_out != KR_N || b.busy != 0 || bad)
				s->bad_rounds++;
			CHECK(b.n_out == KR_N && b.busy == 0 && bad == 0,
			      "%s: round %d: the kernel batch popped %llu of %d (%u busy, %llu out of order)",
			      s->m->name, round, (unsigned long long)b.n_out, KR_N, b.busy,
			      (unsigned long long)bad);
		} else {
			__atomic_store_n(&s->ready, round + 1, __ATOMIC_RELEASE);
			while (__atomic_load_n(&s->round, __ATOMIC_ACQUIRE) == round) {
				ap_u64 o1 = role_owner(s->m->id, s->d, DS_ROLE_CONSUMER), o2, k, v;
				int r;

				/* only once the kernel batch has claimed: after it
				 * the round's elements are gone, and a pop that
				 * took one means two consumers at once */
				if (o1 != s->kowner)
					continue;
				ds_enter(&c);
				r = ds_apply(&c, s->m->id, s->d, DS_OP_POP, 0, 0, &k, &v);
				ds_exit(&c);
				o2 = role_owner(s->m->id, s->d, DS_ROLE_CONSUMER);
				s->taken += r == DS_OK;
				if (o2 == s->kowner) {
					s->sandwiched++;
					s->refused += r == DS_BUSY;
				}
			}
		}
		pthread_barrier_wait(&s->bar); /* the round is over */
	}
	ds_user_detach(&c);
	return NULL;
}

/*
 * A kernel batch of pops holds the consumer role for the whole batch: a
 * user consumer's pop that falls inside it (the role word read as the
 * kernel thread's before and after the pop) is BUSY, every one; the kernel
 * batch pops each round's elements exactly, in FIFO order, and the user
 * consumer takes none. Rounds go on until enough pops fell inside a batch.
 */
static void kroles_held_whole_batch(struct ds_ctx *c, const struct ds_meta *m)
{
	struct kr *s = (struct kr *)calloc(1, sizeof(*s));
	pthread_t th[2];
	struct t_thread ts[2];
	ap_u64 i, k, v;
	int round, t;

	REQUIRE(s, "calloc");
	s->m = m;
	s->d = create(c, m, 2 * KR_N);
	s->out = (struct ds_kv *)arena_heap_alloc(&sp->heap, KR_N * sizeof(struct ds_kv), 0);
	REQUIRE(s->out, "alloc");
	pthread_barrier_init(&s->bar, NULL, 3);
	for (t = 0; t < 2; t++) {
		ts[t].index = t;
		ts[t].arg = s;
		ts[t].fn = kr_side;
		pthread_create(&th[t], NULL, t_trampoline, &ts[t]);
	}
	for (round = 0; round < KR_ROUNDS; round++) {
		for (i = 1; i <= KR_N; i++) {
			ds_enter(c);
			CHECK(ds_apply(c, m->id, s->d, DS_OP_INSERT, (ap_u64)round * KR_N + i, 0, &k, &v) == DS_OK,
			      "%s: push", m->name);
			ds_exit(c);
		}
		if (s->sandwiched >= 1000 || s->taken || s->bad_rounds)
			__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
		pthread_barrier_wait(&s->bar);
		if (__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE))
			break;
		pthread_barrier_wait(&s->bar);
	}
	for (t = 0; t < 2; t++)
		pthread_join(th[t], NULL);
	printf("%s: %d rounds, %llu user pops inside a kernel batch, %llu refused\n", m->name, round,
	       (unsigned long long)s->sandwiched, (unsigned long long)s->refused);
	CHECK(s->sandwiched > 0, "%s: no user pop fell inside a kernel batch in %d rounds", m->name, round);
	CHECK(s->refused == s->sandwiched && s->taken == 0 && s->bad_rounds == 0,
	      "%s: %llu of %llu user pops inside a kernel batch refused, %llu took an element, %llu bad rounds",
	      m->name, (unsigned long long)s->refused, (unsigned long long)s->sandwiched,
	      (unsigned long long)s->taken, (unsigned long long)s->bad_rounds);
	CHECK(role_owner(m->id, s->d, DS_ROLE_CONSUMER) == 0, "%s: consumer role held after the rounds", m->name);
	pthread_barrier_destroy(&s->bar);
	arena_free(s->out);
	free(s);
}

/* ---- non-sleepable allocation: pool, NOMEM, refill ---- */

static void nosleep_pool(void)
{
	struct ds_nosleep_bpf *ns = ds_nosleep_bpf__open();
	struct ds_space *small;
	struct ds_ctx c;
	struct ds_config cfg = {.capacity = 64};
	struct ds_batch b = {0};
	ap_u64 d, before;
	int err, i;

	REQUIRE(ns, "open ds_nosleep");
	REQUIRE(bpf_map__reuse_fd(ns->maps.arena, bpf_map__fd(skel->maps.arena)) == 0, "reuse arena");
	REQUIRE(ds_nosleep_bpf__load(ns) == 0, "load ds_nosleep");
	/* a space of its own, with one pool page per CPU and no free pages */
	small = ds_space_init(SPACE_FIRST + SPACE_PAGES + 16, 300, (ap_u32)libbpf_num_possible_cpus(), 1, 0);
	REQUIRE(small, "small space");
	REQUIRE(ds_user_attach(small, &c) == DS_OK, "attach");
	d = ds_create(small, &c, DS_TYPE_hash, &cfg, NULL, &err);
	REQUIRE(d, "create: %d", err);
	/* use up the fresh pages, so that only pools can serve the tracepoint */
	{
		void *hog[4096];
		int n = 0;

		while (n < 4096 && (hog[n] = arena_heap_alloc(&small->heap, 3000, 0)))
			n++;
		CHECK(n > 0 && n < 4096, "hogged %d", n);
		(void)hog;
	}
	ns->bss->tp_tgid = (__u32)getpid();
	ns->bss->tp_ds = d;
	ns->bss->tp_count = 32;
	ns->bss->tp_next_key = 1;
	REQUIRE(ds_nosleep_bpf__attach(ns) == 0, "attach tracepoint");
	for (i = 0; i < 50; i++)
		getppid();
	CHECK(ns->bss->tp_hits == 50, "tracepoint hits %llu", (unsigned long long)ns->bss->tp_hits);
	CHECK(ns->bss->tp_ok > 0, "no insert succeeded from the pool");
	CHECK(ns->bss->tp_nomem > 0, "the pool never ran dry (ok %llu)", (unsigned long long)ns->bss->tp_ok);
	CHECK(ns->bss->tp_other == 0, "other failures %llu", (unsigned long long)ns->bss->tp_other);
	printf("nosleep: %llu inserts from the reserve pools, then %llu NOMEM\n", (unsigned long long)ns->bss->tp_ok,
	       (unsigned long long)ns->bss->tp_nomem);
	/* give the hog's pages back... no: refill needs pages, free a few */
	before = ns->bss->tp_ok;
	{
		/* free pages come back from deletes: delete everything inserted */
		ap_u64 k, ok, ov;

		for (k = 1; k < ns->bss->tp_next_key; k++) {
			ds_enter(&c);
			ds_apply(&c, DS_TYPE_hash, d, DS_OP_DELETE, k, 0, &ok, &ov);
			ds_exit(&c);
		}
		ebr_synchronize(&small->ebr, c.rec, 100000);
	}
	b.ds = d;
	b.type = DS_TYPE_hash;
	b.cmd = DS_CMD_REFILL;
	kbatch(&b);
	CHECK(b.status == DS_OK || b.status == DS_NOMEM, "refill -> %d", b.status);
	ns->bss->tp_nomem = 0;
	for (i = 0; i < 5; i++)
		getppid();
	CHECK(ns->bss->tp_ok > before, "no insert after refill");
	ds_nosleep_bpf__destroy(ns);
	ds_user_detach(&c);
}

/* ---- memory goes back, dead participants expire: kernel batches alone ---- */

static struct ds_trim_args ktrim(ap_u32 force)
{
	struct ds_trim_args a = {0};
	LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &a, .ctx_size_in = sizeof(a));

	a.heap = (ap_u64)&sp->heap;
	a.budget = DS_TRIM_MAX_BUDGET;
	a.force = force;
	REQUIRE(bpf_prog_test_run_opts(bpf_program__fd(skel->progs.ds_trim), &o) == 0, "ds_trim: %s",
		strerror(errno));
	CHECK(a.status == 0, "ds_trim status %d", a.status);
	return a;
}

/* n keys inserted, then deleted, by kernel batches of 2000 */
static void kchurn(const struct ds_meta *m, ap_u64 d, ap_u64 lo, ap_u64 n)
{
	ap_u64 k;
	struct ds_batch b;

	for (k = 0; k < n; k += 2000) {
		b = mix(m, d, DS_MIX_INSERT, lo + k, 2000, 2000);
		kbatch(&b);
		CHECK(b.done[0] == 2000 && b.fails[0] == 0, "kernel insert at %llu", (unsigned long long)(lo + k));
	}
	for (k = 0; k < n; k += 2000) {
		b = mix(m, d, DS_MIX_DELETE, lo + k, 2000, 2000);
		kbatch(&b);
		CHECK(b.done[1] == 2000 && b.fails[1] == 0, "kernel delete at %llu", (unsigned long long)(lo + k));
	}
}

/*
 * A user process dies with SIGKILL inside its critical section. While it
 * lives (asleep, not running), kernel batches retire but free nothing they
 * retired; once it is dead (a zombie nobody reaped yet), the next kernel
 * batches expire its record and free everything, with no user-side advance.
 */
static void kernel_expires_dead(struct ds_ctx *c)
{
	const struct ds_meta *m = ds_meta_of(DS_TYPE_hash);
	ap_u64 d = create(c, m, 1024);
	struct ebr_stats e0, e1, e2;
	int ready[2], i;
	char b = 0, path[64], st[512];
	pid_t pid;

	REQUIRE(pipe(ready) == 0, "pipe");
	pid = fork();
	REQUIRE(pid >= 0, "fork");
	if (pid == 0) {
		struct ds_ctx cc;
		size_t len = (size_t)bpf_map__max_entries(skel->maps.arena) * ARENA_PAGE_SIZE;

		/* a fork does not inherit the arena's mapping: map it, as a
		 * worker that attaches to the pinned map does */
		if (mmap((void *)ARENA_BASE, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			 bpf_map__fd(skel->maps.arena), 0) != (void *)ARENA_BASE)
			_exit(5);
		if (ds_user_attach(sp, &cc) != DS_OK || ds_enter(&cc) != DS_OK)
			_exit(2);
		if (write(ready[1], "r", 1) != 1)
			_exit(3);
		for (;;)
			pause();
	}
	close(ready[1]);
	if (read(ready[0], &b, 1) != 1) {
		int ws = 0;

		waitpid(pid, &ws, 0);
		REQUIRE(0, "child never entered its critical section (wait status %#x)", ws);
	}
	ebr_get_stats(&sp->ebr, &e0);
	kchurn(m, d, 1, 10000);
	ebr_get_stats(&sp->ebr, &e1);
	CHECK(e1.expired == e0.expired, "a live participant was expired");
	CHECK(e1.pending >= e0.pending + 10000, "freed under a live participant: pending %llu -> %llu",
	      (unsigned long long)e0.pending, (unsigned long long)e1.pending);
	kill(pid, SIGKILL);
	/* dead but not reaped: a zombie still has its pid */
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (i = 0; i < 10000; i++) {
		FILE *f = fopen(path, "r");
		char *p = NULL;

		if (f) {
			p = fgets(st, sizeof(st), f);
			fclose(f);
		}
		if (p && (p = strrchr(st, ')')) && p[1] == ' ' && p[2] == 'Z')
			break;
		usleep(1000);
	}
	CHECK(i < 10000, "child %d never became a zombie", (int)pid);
	usleep(2000); /* expiry checks run at most once per millisecond */
	kchurn(m, d, 1, 4000);
	ebr_get_stats(&sp->ebr, &e2);
	CHECK(e2.expired == e1.expired + 1, "expired %llu -> %llu", (unsigned long long)e1.expired,
	      (unsigned long long)e2.expired);
	CHECK(e2.freed >= e1.freed + e1.pending - e0.pending, "freed %llu -> %llu, %llu were held",
	      (unsigned long long)e1.freed, (unsigned long long)e2.freed, (unsigned long long)(e1.pending - e0.pending));
	CHECK(e2.pending < 2000, "still pending after the expiry: %llu", (unsigned long long)e2.pending);
	waitpid(pid, NULL, 0);
	close(ready[0]);
	printf("dead participant: %llu retired while it lived, none freed; expired by a kernel batch, "
	       "pending %llu -> %llu\n",
	       (unsigned long long)(e1.pending - e0.pending), (unsigned long long)e1.pending,
	       (unsigned long long)e2.pending);
}

/*
 * Kernel batches give pages back on their own above the high watermark;
 * ds_trim gives back down to the low one; kernel inserts take the pages
 * back (bpf_arena_alloc_pages) and the structure stays whole.
 */
static void kernel_trim(struct ds_ctx *c)
{
	const struct ds_meta *m = ds_meta_of(DS_TYPE_hash);
	ap_u64 d = create(c, m, 1024);
	struct arena_heap_stats s0, s1, s2, s3;
	struct ds_trim_args a;
	struct ds_verify v;

	REQUIRE(arena_heap_set_trim(&sp->heap, 32, 512) == 0, "watermarks");
	arena_heap_get_stats(&sp->heap, &s0);
	kchurn(m, d, 1000000, 60000);
	REQUIRE(ebr_synchronize(&sp->ebr, c->rec, 100000) == 0, "synchronize");
	arena_heap_get_stats(&sp->heap, &s1);
	CHECK(s1.pages_returned > s0.pages_returned, "no page given back by the batches (free %llu)",
	      (unsigned long long)s1.free_pages);
	a = ktrim(1);
	arena_heap_get_stats(&sp->heap, &s2);
	CHECK(a.given == s2.pages_returned - s1.pages_returned, "ds_trim says %llu, stats %llu",
	      (unsigned long long)a.given, (unsigned long long)(s2.pages_returned - s1.pages_returned));
	CHECK(s2.free_pages == 32 && a.quarantined == 0, "free %llu quarantined %llu", (unsigned long long)s2.free_pages,
	      (unsigned long long)a.quarantined);
	CHECK(s2.pages_populated == s2.pages_hwm - (s2.pages_returned - s2.pages_retaken), "populated %llu",
	      (unsigned long long)s2.pages_populated);
	/* again: the pages come back from the kernel */
	kchurn(m, d, 1000000, 60000);
	{
		struct ds_batch b = mix(m, d, DS_MIX_INSERT, 1000000, 60000, 60000);

		kbatch(&b);
		CHECK(b.done[0] == 60000 && b.fails[0] == 0, "kernel reinsert: %llu failed", (unsigned long long)b.fails[0]);
	}
	arena_heap_get_stats(&sp->heap, &s3);
	CHECK(s3.pages_retaken > s2.pages_retaken && s3.pages_lost == s0.pages_lost, "retaken %llu lost %llu",
	      (unsigned long long)s3.pages_retaken, (unsigned long long)s3.pages_lost);
	kverify(m, d, &v);
	CHECK(v.count == 60000, "kernel verify count %llu", (unsigned long long)v.count);
	uverify(c, m, d, &v);
	CHECK(v.count == 60000, "user verify count %llu", (unsigned long long)v.count);
	REQUIRE(arena_heap_set_trim(&sp->heap, ARENA_TRIM_KEEP, ARENA_TRIM_HIGH) == 0, "watermarks");
	printf("trim: batches gave back %llu pages on their own, ds_trim %llu more; %llu taken back by kernel "
	       "inserts\n",
	       (unsigned long long)(s1.pages_returned - s0.pages_returned), (unsigned long long)a.given,
	       (unsigned long long)(s3.pages_retaken - s2.pages_retaken));
}

int main(int argc, char **argv)
{
	struct ds_ctx c;
	ap_u32 i;
	const char *only = argc > 1 ? argv[1] : "all";

	if (argc > 2)
		scale_div = strtoull(argv[2], NULL, 0) ? strtoull(argv[2], NULL, 0) : 1;
	skel = ds_ops_bpf__open_and_load();
	REQUIRE(skel, "load ds_ops: %s", strerror(errno));
	REQUIRE(bpf_map__max_entries(skel->maps.arena) >= SPACE_FIRST + SPACE_PAGES + 400, "arena too small");
#define PROG_FD(id, name) prog_fd[id] = bpf_program__fd(skel->progs.ds_run_##name);
	DS_REGISTRY(PROG_FD)
#undef PROG_FD
	sp = ds_space_init(SPACE_FIRST, SPACE_PAGES, (ap_u32)libbpf_num_possible_cpus(), 4, ARENA_HEAP_POISON);
	REQUIRE(sp, "space");
	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	if (!strcmp(only, "all") || !strcmp(only, "memory")) {
		/* first: the fork, while the process has one thread */
		kernel_expires_dead(&c);
		kernel_trim(&c);
	}
	for (i = 0; i < DS_TYPES_END; i++) {
		const struct ds_meta *m = ds_meta_of(i);

		int failures0 = t_failures;

		if (!m || (strcmp(only, "all") && strcmp(only, m->name)))
			continue;
		kernel_alone(&c, m);
		if (m->flags & DS_F_KEYED)
			keyed_both_sides(&c, m);
		else
			queue_both_sides(&c, m);
		printf("%-9s %s (kernel and user)\n", m->name, t_failures == failures0 ? "ok" : "FAILED");
	}
	if (!strcmp(only, "all") || !strcmp(only, "roles")) {
		static const ap_u32 rtypes[] = {DS_TYPE_spsc, DS_TYPE_mpsc, DS_TYPE_evq};

		for (i = 0; i < sizeof(rtypes) / sizeof(rtypes[0]); i++) {
			int failures0 = t_failures;

			kroles_refused(&c, ds_meta_of(rtypes[i]));
			kroles_held_whole_batch(&c, ds_meta_of(rtypes[i]));
			printf("%-9s %s (roles)\n", ds_meta_of(rtypes[i])->name,
			       t_failures == failures0 ? "ok" : "FAILED");
		}
	}
	if (!strcmp(only, "all")) {
		alloc_both_sides(&c);
		hold_against_kernel(&c);
		nosleep_pool();
	}
	{
		struct arena_heap_stats st;

		arena_heap_get_stats(&sp->heap, &st);
		CHECK(st.overruns == 0, "%llu objects freed with the word past them overwritten",
		      (unsigned long long)st.overruns);
	}
	printf("kernel totals: %llu ops, %llu failures, %llu batches\n", (unsigned long long)skel->bss->kernel_ops,
	       (unsigned long long)skel->bss->kernel_fails, (unsigned long long)skel->bss->kernel_batches);
	ds_user_detach(&c);
	ds_ops_bpf__destroy(skel);
	return t_done("test_kernel");
}
