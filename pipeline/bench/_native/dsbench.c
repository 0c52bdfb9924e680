// SPDX-License-Identifier: MIT
/*
 * The data-structure benchmark (dsbench.h): loads bpf/ds_ops.bpf.c (one
 * SEC("syscall") batch program per registered structure, and the arena) and,
 * for the hash comparison, bpf/ds_bench.bpf.c (the BPF hash map baseline);
 * lays a data-structure space over the arena; runs; unloads. Everything
 * runs with the GIL released. The arena is mapped at ARENA_BASE, so no other
 * arena (a capture Session, a DsArena) may be open in the process meanwhile:
 * the loader (dsops.c) refuses to load over one.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "coreutil.h"
#include "dsbench.h"
#include "bench_map.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "dsops.h"
#include "ds_bench.skel.h"

/* The arena this benchmark loads: 256 MiB of address space, backed on touch. */
#define DSB_ARENA_PAGES 65536
#define DSB_SPACE_FIRST 16
#define DSB_SPACE_PAGES (DSB_ARENA_PAGES - 2 * DSB_SPACE_FIRST)
/* user-side operations per ds_exec call, BPF map keys per batch system call */
#define DSB_CHUNK 4096
/* a value is its key plus this: the consumer checks they travel together */
#define DSB_VAL_TAG (1ULL << 40)
/* a consumer that sees nothing for this long gives up (values are lost) */
#define DSB_STALL_NS (5ULL * 1000000000ULL)

static double now_ns(void)
{
	return (double)arena_now_ns();
}


/* ---- the loaded objects and the space ---- */

struct dsb {
	struct ds_ops_bpf *ops;
	struct ds_bench_bpf *bench; /* the BPF hash map baseline, when asked for */
	struct ds_space *sp;
	struct ds_ctx c; /* the calling thread's */
	int attached;
};

static void dsb_close(struct dsb *b)
{
	if (b->attached)
		ds_user_detach(&b->c);
	if (b->bench)
		ds_bench_bpf__destroy(b->bench);
	if (b->ops)
		ds_ops_bpf__destroy(b->ops);
	memset(b, 0, sizeof(*b));
}

/* map_entries: size of the baseline BPF hash map, 0 to leave it out */
static int dsb_open(struct dsb *b, uint64_t map_entries, char *err, size_t errlen)
{
	int ret, ncpu;

	memset(b, 0, sizeof(*b));
	ret = ap_ds_ops_load(&b->ops, DSB_ARENA_PAGES, err, errlen);
	if (ret)
		return ret;
	if (map_entries) {
		b->bench = ds_bench_bpf__open();
		if (!b->bench) {
			ret = -errno;
			dsb_close(b);
			return ap_fail(err, errlen, ret, "cannot open the BPF hash map baseline: %s", strerror(-ret));
		}
		bpf_map__set_max_entries(b->bench->maps.bench_hash, (uint32_t)map_entries);
		if (ds_bench_bpf__load(b->bench)) {
			ret = -errno;
			dsb_close(b);
			return ap_fail(err, errlen, ret, "loading the BPF hash map baseline failed: %s", strerror(-ret));
		}
	}
	ncpu = libbpf_num_possible_cpus();
	b->sp = ds_space_init(DSB_SPACE_FIRST, DSB_SPACE_PAGES, (ap_u32)(ncpu > 0 ? ncpu : 1), 4, 0);
	if (!b->sp || ds_user_attach(b->sp, &b->c) != DS_OK) {
		dsb_close(b);
		return ap_fail(err, errlen, ENOMEM, "cannot lay out a data-structure space in the arena");
	}
	b->attached = 1;
	return 0;
}

static ap_u64 dsb_create(struct dsb *b, ap_u32 type, ap_u64 capacity, char *err, size_t errlen)
{
	struct ds_config cfg = { .capacity = capacity };
	int res = DS_OK;
	ap_u64 d = ds_create(b->sp, &b->c, type, &cfg, NULL, &res);

	if (!d)
		ap_fail(err, errlen, ENOMEM, "cannot create a %s instance: result %d", ds_meta_of(type)->name, res);
	return d;
}

/* ---- the hash map comparison ---- */

/* user-side buffers of one thread (heap, not TLS: this is a dlopen'ed module) */
struct ubuf {
	ap_u8 res[DSB_CHUNK];
	ap_u64 keys[DSB_CHUNK], vals[DSB_CHUNK], okeys[DSB_CHUNK], ovals[DSB_CHUNK];
};

static const ap_u8 ds_op_of[AP_DSB_OPS] = { DS_OP_INSERT, DS_OP_SEARCH, DS_OP_DELETE };
static const ap_u32 mix_of[AP_DSB_OPS] = { DS_MIX_INSERT, DS_MIX_SEARCH, DS_MIX_DELETE };

/* n operations of one kind on keys [lo, lo + n) through ds_exec, the loop
 * behind DsArena.exec; nanoseconds taken */
static double user_run(struct ds_ctx *c, struct ubuf *u, ap_u64 ds, int op, ap_u64 lo, ap_u64 n, ap_u64 *fails)
{
	struct ds_exec_args a = { .ds = ds, .type = DS_TYPE_hash, .op = ds_op_of[op], .keys = u->keys,
				  .vals = u->vals, .okeys = u->okeys, .ovals = u->ovals, .results = u->res };
	ap_u64 i, j;
	double t0 = now_ns();

	for (i = 0; i < n; i += DSB_CHUNK) {
		ap_u64 m = n - i < DSB_CHUNK ? n - i : DSB_CHUNK;

		for (j = 0; j < m; j++) {
			u->keys[j] = lo + i + j;
			u->vals[j] = u->keys[j] * 3 + 1;
		}
		a.n = m;
		ds_exec(c, &a);
		*fails += m - a.done + a.fails[ds_op_of[op]];
	}
	return now_ns() - t0;
}

struct half {
	struct dsb *b;
	ap_u64 ds, lo, n, fails;
	int op;
	double ns;
};

static void *half_worker(void *arg)
{
	struct half *h = arg;
	struct ds_ctx c;
	struct ubuf *u = malloc(sizeof(*u));

	if (!u || ds_user_attach(h->b->sp, &c) != DS_OK) {
		h->fails = h->n;
		free(u);
		return NULL;
	}
	h->ns = user_run(&c, u, h->ds, h->op, h->lo, h->n, &h->fails);
	ds_user_detach(&c);
	free(u);
	return NULL;
}

/* BPF hash map, one system call per operation */
static double sys_run(int fd, int op, ap_u64 n, ap_u64 *fails)
{
	ap_u64 i, k, v;
	double t0 = now_ns();

	for (i = 0; i < n; i++) {
		int e;

		k = i;
		v = i * 3 + 1;
		if (op == AP_DSB_INSERT)
			e = bpf_map_update_elem(fd, &k, &v, BPF_ANY);
		else if (op == AP_DSB_SEARCH)
			e = bpf_map_lookup_elem(fd, &k, &v);
		else
			e = bpf_map_delete_elem(fd, &k);
		*fails += e != 0;
	}
	return now_ns() - t0;
}

/* BPF hash map, DSB_CHUNK keys per system call; lookup is a dump in map
 * order (bpf_map_lookup_batch takes no keys) */
static double sys_batch(int fd, int op, ap_u64 n, struct ubuf *u, ap_u64 *fails)
{
	ap_u64 i, j, got = 0;
	double t0 = now_ns();

	if (op == AP_DSB_SEARCH) {
		__u64 in = 0, out = 0;
		int first = 1;

		while (got < n) {
			__u32 cnt = DSB_CHUNK;
			int e = bpf_map_lookup_batch(fd, first ? NULL : &in, &out, u->keys, u->vals, &cnt, NULL);

			got += cnt;
			if (e)
				break; /* ENOENT: the end of the map */
			in = out;
			first = 0;
		}
		t0 = now_ns() - t0;
		*fails += got < n ? n - got : 0;
		return t0;
	}
	for (i = 0; i < n; i += DSB_CHUNK) {
		__u32 cnt = (__u32)(n - i < DSB_CHUNK ? n - i : DSB_CHUNK), want = cnt;
		int e;

		for (j = 0; j < cnt; j++) {
			u->keys[j] = i + j;
			u->vals[j] = u->keys[j] * 3 + 1;
		}
		if (op == AP_DSB_INSERT)
			e = bpf_map_update_batch(fd, u->keys, u->vals, &cnt, NULL);
		else
			e = bpf_map_delete_batch(fd, u->keys, &cnt, NULL);
		*fails += e ? want - (cnt < want ? cnt : want) : 0;
	}
	return now_ns() - t0;
}


static int kernel_hash(struct dsb *b, ap_u64 ds, int op, ap_u64 n, ap_u64 per_call, double *ns, ap_u64 *fails)
{
	ap_u32 mix[DS_MIX__COUNT] = { 0 };
	struct ap_kmix k;

	memset(&k, 0, sizeof(k));
	mix[mix_of[op]] = 1;
	/* the value of op j is val_base + j; the map baseline stores key * 3 + 1 */
	ap_ds_batch_mix(&k.tmpl, ds, DS_TYPE_hash, 0, mix, DS_KEYS_SEQ, 0, n, 0, 0, 0);
	k.total = n;
	k.per_call = per_call;
	ap_kmix_run(ap_ds_ops_prog_fd(b->ops, DS_TYPE_hash), &k);
	if (k.err)
		return k.err;
	if (k.status != DS_OK)
		return -EIO;
	*ns = (double)k.ns;
	*fails += k.fails[mix_of[op]];
	return 0;
}

static int kernel_map(struct dsb *b, int op, ap_u64 n, ap_u64 per_call, double *ns, ap_u64 *fails)
{
	int fd = bpf_program__fd(b->bench->progs.bench_map);
	ap_u64 i, sum = 0;

	for (i = 0; i < n; i += per_call) {
		struct bench_args a = { .key_lo = i, .count = (__u32)(n - i < per_call ? n - i : per_call),
					.op = (__u32)op };
		LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &a, .ctx_size_in = sizeof(a));

		if (bpf_prog_test_run_opts(fd, &o))
			return -errno;
		sum += a.ns;
		*fails += a.count - a.ok;
	}
	*ns = (double)sum;
	return 0;
}

int ap_dsb_hash(uint64_t keys, uint64_t per_call, struct ap_dsb_hash_result *r, char *err, size_t errlen)
{
	struct dsb b;
	struct ubuf *u;
	ap_u64 ds, warm = 0;
	int op, ret, map_fd;

	memset(r, 0, sizeof(*r));
	if (keys < 2 || keys > (1ULL << 22))
		return ap_fail(err, errlen, EINVAL, "keys must be in [2, 4194304], not %llu", (unsigned long long)keys);
	if (per_call < 1 || per_call > DS_BATCH_MAX)
		return ap_fail(err, errlen, EINVAL, "per_call must be in [1, %d]", DS_BATCH_MAX);
	r->keys = keys;
	r->per_call = per_call;
	u = malloc(sizeof(*u));
	if (!u)
		return ap_fail(err, errlen, ENOMEM, "out of memory");
	ret = dsb_open(&b, keys, err, errlen);
	if (ret) {
		free(u);
		return ret;
	}
	map_fd = bpf_map__fd(b.bench->maps.bench_hash);
	ds = dsb_create(&b, DS_TYPE_hash, keys, err, errlen);
	if (!ds) {
		ret = -ENOMEM;
		goto out;
	}

	/* user side, one thread; one pass first to back the pages */
	user_run(&b.c, u, ds, AP_DSB_INSERT, 0, keys, &warm);
	user_run(&b.c, u, ds, AP_DSB_DELETE, 0, keys, &warm);
	ebr_synchronize(&b.sp->ebr, b.c.rec, 1000);
	for (op = 0; op < AP_DSB_OPS; op++)
		r->ns[AP_DSB_USER1][op] = user_run(&b.c, u, ds, op, 0, keys, &r->fails[AP_DSB_USER1][op]);
	ebr_synchronize(&b.sp->ebr, b.c.rec, 1000);

	/* user side, two threads on disjoint halves */
	for (op = 0; op < AP_DSB_OPS; op++) {
		struct half h[2];
		pthread_t t[2];
		int i;

		for (i = 0; i < 2; i++) {
			memset(&h[i], 0, sizeof(h[i]));
			h[i].b = &b;
			h[i].ds = ds;
			h[i].op = op;
			h[i].lo = (ap_u64)i * (keys / 2);
			h[i].n = i ? keys - keys / 2 : keys / 2;
			pthread_create(&t[i], NULL, half_worker, &h[i]);
		}
		for (i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		r->ns[AP_DSB_USER2][op] = h[0].ns > h[1].ns ? h[0].ns : h[1].ns;
		r->fails[AP_DSB_USER2][op] = h[0].fails + h[1].fails;
	}
	ebr_synchronize(&b.sp->ebr, b.c.rec, 1000);

	/* the BPF hash map through system calls */
	for (op = 0; op < AP_DSB_OPS; op++)
		r->ns[AP_DSB_SYSCALL][op] = sys_run(map_fd, op, keys, &r->fails[AP_DSB_SYSCALL][op]);
	for (op = 0; op < AP_DSB_OPS; op++) {
		/* the dump needs a full map: lookups run between insert and delete */
		r->ns[AP_DSB_BATCH][op] = sys_batch(map_fd, op, keys, u, &r->fails[AP_DSB_BATCH][op]);
	}

	/* kernel side: the same operations in one program each */
	for (op = 0; op < AP_DSB_OPS && !ret; op++)
		ret = kernel_hash(&b, ds, op, keys, per_call, &r->ns[AP_DSB_KARENA][op], &r->fails[AP_DSB_KARENA][op]);
	for (op = 0; op < AP_DSB_OPS && !ret; op++)
		ret = kernel_map(&b, op, keys, per_call, &r->ns[AP_DSB_KMAP][op], &r->fails[AP_DSB_KMAP][op]);
	if (ret) {
		ap_fail(err, errlen, ret, "running a kernel batch failed: %s", strerror(-ret));
		goto out;
	}
	for (op = 0; op < AP_DSB_OPS; op++) {
		int w;

		for (w = 0; w < AP_DSB_WAYS; w++)
			r->ns[w][op] /= (double)keys;
	}
out:
	dsb_close(&b);
	free(u);
	return ret;
}

/* ---- queues: kernel producer, user consumer ---- */

struct qrun {
	struct dsb *b;
	const struct ds_meta *m;
	ap_u64 d;
	int prog_fd;
	ap_u64 items, samples, per_call, window;
	int prod_cpu, cons_cpu;
	/* shared */
	_Atomic ap_u64 popped;
	_Atomic int consumer_ready;
	_Atomic int stop;
	/* producer's */
	int prod_err;
	double t_start;
	double kernel_ns;
	ap_u64 pushed;
	double *t_push; /* [samples] */
	/* consumer's */
	double t_done;
	double busy_ns;
	double *t_pop; /* [samples] */
	ap_u64 *seen;  /* bitmap over [0, items + samples) */
	struct ap_dsb_queue_result *r;
};

/* One kernel batch of cnt pushes of keys [key, key + cnt); returns how many went in. */
static ap_u64 kpush(struct qrun *q, ap_u64 key, ap_u64 cnt)
{
	static const ap_u32 push[DS_MIX__COUNT] = { [DS_MIX_INSERT] = 1 };
	struct ds_batch bt;
	ap_u64 ok;
	int ret;

	/* DS_BATCH_STOP_ON_FAIL: the successes are then ops 0..done-2 */
	ap_ds_batch_mix(&bt, q->d, q->m->id, (ap_u32)cnt, push, DS_KEYS_SEQ, key, cnt, key + DSB_VAL_TAG, 0,
			DS_BATCH_STOP_ON_FAIL);
	ret = ap_ds_kernel_call(q->prog_fd, &bt);
	if (ret) {
		q->prod_err = -ret;
		atomic_store(&q->stop, 1);
		return 0;
	}
	q->r->kernel_calls++;
	if (q->prod_cpu >= 0 && bt.cpu != (ap_u32)q->prod_cpu)
		q->r->wrong_cpu++;
	ok = bt.done[DS_MIX_INSERT] - bt.fails[DS_MIX_INSERT];
	q->kernel_ns += (double)bt.ns;
	if (bt.status == DS_FULL)
		q->r->full_stops++;
	else if (bt.status == DS_BUSY)
		q->r->busy_stops++;
	else if (bt.status == DS_NOMEM)
		q->r->nomem_stops++;
	else if (bt.status != DS_OK) {
		q->prod_err = EIO;
		atomic_store(&q->stop, 1);
	}
	return ok;
}

static void *q_producer(void *arg)
{
	struct qrun *q = arg;
	ap_u64 sent = 0, s;

	ap_pin_to_cpu(q->prod_cpu);
	while (!atomic_load(&q->consumer_ready))
		sched_yield();
	q->t_start = now_ns();
	/* throughput: at most window values in flight (the capacity of the
	 * bounded ones; it bounds the memory of the others) */
	while (sent < q->items && !atomic_load_explicit(&q->stop, memory_order_relaxed)) {
		ap_u64 in_flight = sent - atomic_load_explicit(&q->popped, memory_order_acquire);
		ap_u64 cnt = q->items - sent, got;

		if (in_flight >= q->window) {
			arena_cpu_relax();
			continue;
		}
		if (cnt > q->window - in_flight)
			cnt = q->window - in_flight;
		if (cnt > q->per_call)
			cnt = q->per_call;
		got = kpush(q, sent, cnt);
		sent += got;
		if (got < cnt)
			arena_cpu_relax();
	}
	q->pushed = sent;
	/* latency: one value at a time into an empty structure */
	for (s = 0; s < q->samples && !atomic_load(&q->stop); s++) {
		ap_u64 want = q->items + s;

		while (atomic_load_explicit(&q->popped, memory_order_acquire) < want && !atomic_load(&q->stop))
			arena_cpu_relax();
		q->t_push[s] = now_ns();
		while (!kpush(q, want, 1) && !atomic_load(&q->stop))
			arena_cpu_relax();
	}
	return NULL;
}

static void q_record(struct qrun *q, ap_u64 k, ap_u64 v, ap_u64 *last, int *have_last)
{
	struct ap_dsb_queue_result *r = q->r;
	ap_u64 total = q->items + q->samples;

	if (k >= total) {
		r->strays++;
		return;
	}
	if (v != k + DSB_VAL_TAG)
		r->malformed++;
	if (q->seen[k / 64] & (1ULL << (k % 64)))
		r->duplicates++;
	q->seen[k / 64] |= 1ULL << (k % 64);
	/* one producer: a FIFO hands its keys out in increasing order */
	if ((q->m->flags & DS_F_FIFO) && *have_last && k <= *last)
		r->order_errors++;
	*last = k;
	*have_last = 1;
	if (k >= q->items)
		q->t_pop[k - q->items] = now_ns();
}

static void *q_consumer(void *arg)
{
	struct qrun *q = arg;
	struct ap_dsb_queue_result *r = q->r;
	ap_u64 total = q->items + q->samples, popped = 0, last = 0;
	double last_progress;
	struct ds_ctx c;
	ap_u64 okeys[DS_BATCH_CS_OPS], ovals[DS_BATCH_CS_OPS], i;
	ap_u8 res[DS_BATCH_CS_OPS];
	struct ds_exec_args a = { .ds = q->d, .type = q->m->id, .op = DS_OP_POP, .flags = DS_BATCH_STOP_ON_FAIL,
				  .n = DS_BATCH_CS_OPS, .okeys = okeys, .ovals = ovals, .results = res };
	int have_last = 0;

	ap_pin_to_cpu(q->cons_cpu);
	if (ds_user_attach(q->b->sp, &c) != DS_OK) {
		atomic_store(&q->stop, 1);
		atomic_store(&q->consumer_ready, 1);
		return NULL;
	}
	atomic_store(&q->consumer_ready, 1);
	last_progress = now_ns();
	while (popped < total && !atomic_load_explicit(&q->stop, memory_order_relaxed)) {
		double t0 = now_ns();
		ap_u64 j;

		/* pops until one finds nothing, through the loop behind DsArena.exec */
		ds_exec(&c, &a);
		if (a.busy && !a.done) {
			arena_cpu_relax();
			continue;
		}
		j = a.done && res[a.done - 1] != DS_OK ? a.done - 1 : a.done;
		for (i = 0; i < j; i++)
			q_record(q, okeys[i], ovals[i], &last, &have_last);
		popped += j;
		if (j) {
			double t1 = now_ns();

			q->busy_ns += t1 - t0;
			last_progress = t1;
			atomic_store_explicit(&q->popped, popped, memory_order_release);
			if (popped >= q->items && q->t_done == 0)
				q->t_done = t1;
			continue;
		}
		r->empty_polls++;
		if ((r->empty_polls & 1023) == 0 && t0 - last_progress > (double)DSB_STALL_NS)
			atomic_store(&q->stop, 1); /* lost values: the accounting says which */
		arena_cpu_relax();
	}
	r->popped = popped;
	ds_user_detach(&c);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int queue_one(struct dsb *b, const struct ds_meta *m, uint64_t items, uint64_t samples, uint64_t per_call,
		     uint64_t capacity, int prod_cpu, int cons_cpu, struct ap_dsb_queue_result *r, char *err,
		     size_t errlen)
{
	struct qrun q;
	pthread_t pt, ct;
	ap_u64 total = items + samples, i, seen = 0;
	struct ds_verify v = { 0 };
	double *lat;

	memset(&q, 0, sizeof(q));
	memset(r, 0, sizeof(*r));
	r->items = items;
	r->samples = samples;
	q.b = b;
	q.m = m;
	q.r = r;
	q.items = items;
	q.samples = samples;
	q.per_call = per_call;
	q.window = capacity;
	q.prod_cpu = prod_cpu;
	q.cons_cpu = cons_cpu;
	q.prog_fd = ap_ds_ops_prog_fd(b->ops, m->id);
	if (q.prog_fd < 0)
		return ap_fail(err, errlen, ENOENT, "no kernel program ds_run_%s", m->name);
	q.d = dsb_create(b, m->id, capacity, err, errlen);
	if (!q.d)
		return -ENOMEM;
	q.seen = calloc((total + 63) / 64, sizeof(ap_u64));
	q.t_push = calloc(samples + 1, sizeof(double));
	q.t_pop = calloc(samples + 1, sizeof(double));
	lat = calloc(samples + 1, sizeof(double));
	if (!q.seen || !q.t_push || !q.t_pop || !lat) {
		free(q.seen);
		free(q.t_push);
		free(q.t_pop);
		free(lat);
		return ap_fail(err, errlen, ENOMEM, "out of memory for %llu values", (unsigned long long)total);
	}
	/* the consumer first: it polls before the first push */
	pthread_create(&ct, NULL, q_consumer, &q);
	pthread_create(&pt, NULL, q_producer, &q);
	pthread_join(pt, NULL);
	pthread_join(ct, NULL);

	for (i = 0; i < (total + 63) / 64; i++)
		seen += (ap_u64)__builtin_popcountll(q.seen[i]);
	r->unseen = total - seen;
	if (!ds_enter(&b->c)) {
		r->verify = ds_verify_type(&b->c, m->id, q.d, &v);
		ds_exit(&b->c);
	} else {
		r->verify = DS_BUSY;
	}
	r->left = v.count;
	r->seconds = q.t_done > q.t_start ? (q.t_done - q.t_start) / 1e9 : 0;
	r->kernel_ns_per_push = q.pushed + samples ? q.kernel_ns / (double)(q.pushed + samples) : 0;
	r->user_ns_per_pop = r->popped ? q.busy_ns / (double)r->popped : 0;
	{
		ap_u64 n = 0;

		for (i = 0; i < samples; i++)
			if (q.t_pop[i] > 0 && q.t_push[i] > 0)
				lat[n++] = q.t_pop[i] - q.t_push[i];
		if (n) {
			qsort(lat, n, sizeof(double), cmp_double);
			r->lat_p50_ns = lat[n / 2];
			r->lat_p99_ns = lat[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1];
			r->lat_max_ns = lat[n - 1];
		}
	}
	free(q.seen);
	free(q.t_push);
	free(q.t_pop);
	free(lat);
	ebr_synchronize(&b->sp->ebr, b->c.rec, 1000);
	if (q.prod_err)
		return ap_fail(err, errlen, q.prod_err, "%s: the kernel producer failed: %s", m->name,
			    strerror(q.prod_err));
	return 0;
}

int ap_dsb_queues(const uint32_t *types, int ntypes, uint64_t items, uint64_t samples, uint64_t per_call,
		  uint64_t capacity, int prod_cpu, int cons_cpu, struct ap_dsb_queue_result *out, char *err,
		  size_t errlen)
{
	struct dsb b;
	int i, ret;

	if (items < 1 || items > (1ULL << 32) || samples > (1ULL << 24))
		return ap_fail(err, errlen, EINVAL, "items must be in [1, 2^32] and samples at most 2^24");
	if (per_call < 1 || per_call > DS_BATCH_MAX)
		return ap_fail(err, errlen, EINVAL, "per_call must be in [1, %d]", DS_BATCH_MAX);
	if (capacity < 2 || capacity > (1ULL << 20) || (capacity & (capacity - 1)))
		return ap_fail(err, errlen, EINVAL, "capacity must be a power of two in [2, 2^20]");
	for (i = 0; i < ntypes; i++) {
		const struct ds_meta *m = ds_meta_of(types[i]);

		if (!m || (m->flags & DS_F_KEYED) || !(m->flags & (DS_F_FIFO | DS_F_LIFO)))
			return ap_fail(err, errlen, EINVAL, "structure id %u is not a registered queue or stack",
				    types[i]);
	}
	ret = dsb_open(&b, 0, err, errlen);
	if (ret)
		return ret;
	for (i = 0; i < ntypes && !ret; i++)
		ret = queue_one(&b, ds_meta_of(types[i]), items, samples, per_call, capacity, prod_cpu, cons_cpu,
				&out[i], err, errlen);
	dsb_close(&b);
	return ret;
}

/* ---- Python ---- */

static const char *const op_names[AP_DSB_OPS] = { "insert", "search", "delete" };
static const char *const way_names[AP_DSB_WAYS] = { "arena_user",   "arena_user_2threads", "map_syscall",
						    "map_batch",    "kernel_arena",        "kernel_map" };

/* dsbench_hash(keys=262144, per_call=4096) -> dict */
static PyObject *py_dsbench_hash(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "keys", "per_call", NULL };
	unsigned long long keys = 262144, per_call = 4096;
	struct ap_dsb_hash_result r;
	char err[512];
	PyObject *res, *ways;
	int ret, w, op;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|KK", kwlist, &keys, &per_call))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	ret = ap_dsb_hash(keys, per_call, &r, err, sizeof(err));
	Py_END_ALLOW_THREADS
	if (ret)
		return ap_raise(ret, "%s", err);
	ways = PyDict_New();
	if (!ways)
		return NULL;
	for (w = 0; w < AP_DSB_WAYS; w++) {
		PyObject *ops = PyDict_New();

		if (!ops || PyDict_SetItemString(ways, way_names[w], ops)) {
			Py_XDECREF(ops);
			Py_DECREF(ways);
			return NULL;
		}
		Py_DECREF(ops);
		for (op = 0; op < AP_DSB_OPS; op++) {
			PyObject *cell = Py_BuildValue("{sdsK}", "ns", r.ns[w][op], "fails",
						       (unsigned long long)r.fails[w][op]);

			if (!cell || PyDict_SetItemString(ops, op_names[op], cell)) {
				Py_XDECREF(cell);
				Py_DECREF(ways);
				return NULL;
			}
			Py_DECREF(cell);
		}
	}
	res = Py_BuildValue("{sKsKsN}", "keys", (unsigned long long)r.keys, "per_call",
			    (unsigned long long)r.per_call, "ways", ways);
	return res;
}

static PyObject *queue_dict(const struct ap_dsb_queue_result *r)
{
	return Py_BuildValue(
		"{sKsKsKsKsKsKsKsKsKsisKsKsKsKsKsKsdsdsdsdsdsd}", "items", (unsigned long long)r->items, "samples",
		(unsigned long long)r->samples, "popped", (unsigned long long)r->popped, "duplicates",
		(unsigned long long)r->duplicates, "strays", (unsigned long long)r->strays, "malformed",
		(unsigned long long)r->malformed, "unseen", (unsigned long long)r->unseen, "order_errors",
		(unsigned long long)r->order_errors, "left", (unsigned long long)r->left, "verify", r->verify,
		"kernel_calls", (unsigned long long)r->kernel_calls, "full_stops", (unsigned long long)r->full_stops,
		"busy_stops", (unsigned long long)r->busy_stops, "nomem_stops", (unsigned long long)r->nomem_stops,
		"wrong_cpu", (unsigned long long)r->wrong_cpu, "empty_polls", (unsigned long long)r->empty_polls,
		"seconds", r->seconds, "kernel_ns_per_push", r->kernel_ns_per_push, "user_ns_per_pop",
		r->user_ns_per_pop, "lat_p50_ns", r->lat_p50_ns, "lat_p99_ns", r->lat_p99_ns, "lat_max_ns",
		r->lat_max_ns);
}

/* dsbench_queues(names, items=2000000, samples=2000, per_call=4096,
 *                capacity=65536, prod_cpu=0, cons_cpu=1) -> {name: dict} */
static PyObject *py_dsbench_queues(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "names", "items", "samples", "per_call", "capacity", "prod_cpu", "cons_cpu", NULL };
	unsigned long long items = 2000000, samples = 2000, per_call = 4096, capacity = 65536;
	int pc = 0, cc = 1, ret = 0;
	PyObject *names, *seq, *out = NULL;
	uint32_t *types = NULL;
	struct ap_dsb_queue_result *res = NULL;
	Py_ssize_t n, i;
	char err[512];

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|KKKKii", kwlist, &names, &items, &samples, &per_call,
					 &capacity, &pc, &cc))
		return NULL;
	seq = PySequence_Fast(names, "names must be a sequence of structure names");
	if (!seq)
		return NULL;
	n = PySequence_Fast_GET_SIZE(seq);
	types = calloc((size_t)n + 1, sizeof(*types));
	res = calloc((size_t)n + 1, sizeof(*res));
	if (!types || !res) {
		PyErr_NoMemory();
		goto out;
	}
	for (i = 0; i < n; i++) {
		const char *s = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
		const struct ds_meta *meta;

		if (!s)
			goto out;
		meta = ds_meta_by_name(s);
		if (!meta) {
			snprintf(err, sizeof(err), "no registered structure named %s", s);
			ap_raise(EINVAL, "%s", err);
			goto out;
		}
		types[i] = meta->id;
	}
	Py_BEGIN_ALLOW_THREADS
	ret = ap_dsb_queues(types, (int)n, items, samples, per_call, capacity, pc, cc, res, err, sizeof(err));
	Py_END_ALLOW_THREADS
	if (ret) {
		ap_raise(ret, "%s", err);
		goto out;
	}
	out = PyDict_New();
	for (i = 0; out && i < n; i++) {
		PyObject *d = queue_dict(&res[i]);

		if (!d || PyDict_SetItemString(out, ds_meta_of(types[i])->name, d)) {
			Py_XDECREF(d);
			Py_CLEAR(out);
			break;
		}
		Py_DECREF(d);
	}
out:
	Py_DECREF(seq);
	free(types);
	free(res);
	return out;
}

/* dsbench_queue_names() -> the registered structures with queue or stack
 * semantics (FIFO or LIFO, not keyed), in registry order */
static PyObject *py_dsbench_queue_names(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
	PyObject *l = PyList_New(0);
	ap_u32 t;

	for (t = 0; l && t < DS_TYPES_END; t++) {
		const struct ds_meta *m = ds_meta_of(t);
		PyObject *s;

		if (!m || (m->flags & DS_F_KEYED) || !(m->flags & (DS_F_FIFO | DS_F_LIFO)))
			continue;
		s = PyUnicode_FromString(m->name);
		if (!s || PyList_Append(l, s))
			Py_CLEAR(l);
		Py_XDECREF(s);
	}
	return l;
}

static PyMethodDef dsbench_methods[] = {
	{ "dsbench_hash", (PyCFunction)(void (*)(void))py_dsbench_hash, METH_VARARGS | METH_KEYWORDS,
	  "dsbench_hash(keys=262144, per_call=4096) -> dict: the arena hash map against a BPF hash map, "
	  "from userspace and in the kernel (ns per op of each way)" },
	{ "dsbench_queues", (PyCFunction)(void (*)(void))py_dsbench_queues, METH_VARARGS | METH_KEYWORDS,
	  "dsbench_queues(names, items=2000000, samples=2000, per_call=4096, capacity=65536, prod_cpu=0, "
	  "cons_cpu=1) -> {name: dict}: kernel producer to user consumer, exact accounting" },
	{ "dsbench_queue_names", py_dsbench_queue_names, METH_NOARGS,
	  "dsbench_queue_names() -> the registered queues and stacks" },
	{ NULL, NULL, 0, NULL },
};

int ap_dsbench_add_to_module(PyObject *m)
{
	return PyModule_AddFunctions(m, dsbench_methods);
}
