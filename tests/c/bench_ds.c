/* SPDX-License-Identifier: MIT */
/*
 * The arena hash map against a BPF_MAP_TYPE_HASH, side by side, same keys
 * (u64), same value size (u64):
 *   user:   ds_exec batches (one thread, then two) against bpf_map_*_elem
 *           (one system call per op) and bpf_map_*_batch;
 *   kernel: ds_run_hash batches against bpf_map_update/lookup/delete_elem in
 *           one SEC("syscall") program (build/ds_bench.skel.h).
 * Needs root. Usage: bench_ds [keys] (default 262144).
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tcommon.h"
#include "ds_ops.skel.h"
#include "ds_bench.skel.h"

#define CHUNK 4096

static struct ds_space *sp;
static ap_u64 hash_ds;
static ap_u64 nkeys;

struct rate {
	double mops;
	double ns;
};

static struct rate rate_of(ap_u64 ops, double secs)
{
	struct rate r = {ops / secs / 1e6, secs * 1e9 / ops};

	return r;
}

/* user side: n ops of one kind through ds_exec, keys [lo, lo + n) */
static double user_run(struct ds_ctx *c, ap_u8 opk, ap_u64 lo, ap_u64 n)
{
	static __thread ap_u8 ops[CHUNK], res[CHUNK];
	static __thread ap_u64 keys[CHUNK], vals[CHUNK], ok[CHUNK], ov[CHUNK];
	ap_u64 i, j;
	double t0 = t_now();

	for (i = 0; i < n; i += CHUNK) {
		ap_u64 m = n - i < CHUNK ? n - i : CHUNK;

		for (j = 0; j < m; j++) {
			ops[j] = opk;
			keys[j] = lo + i + j;
			vals[j] = keys[j] * 3 + 1;
		}
		ds_exec(c, DS_TYPE_hash, hash_ds, m, ops, keys, vals, ok, ov, res);
	}
	return t_now() - t0;
}

struct two {
	ap_u8 op;
	double secs;
};

static void *two_worker(struct t_thread *t)
{
	struct two *w = (struct two *)t->arg;
	struct ds_ctx c;
	double s;

	ds_user_attach(sp, &c);
	s = user_run(&c, w->op, (ap_u64)t->index * (nkeys / 2), nkeys / 2);
	if (s > w->secs)
		w->secs = s;
	ds_user_detach(&c);
	return NULL;
}

static int map_fd;

static double sys_run(int op, ap_u64 n)
{
	ap_u64 i, k, v;
	double t0 = t_now();

	for (i = 0; i < n; i++) {
		k = i;
		v = i * 3 + 1;
		if (op == 0)
			bpf_map_update_elem(map_fd, &k, &v, BPF_ANY);
		else if (op == 1)
			bpf_map_lookup_elem(map_fd, &k, &v);
		else
			bpf_map_delete_elem(map_fd, &k);
	}
	return t_now() - t0;
}

static double sys_batch(int op, ap_u64 n)
{
	static ap_u64 keys[CHUNK], vals[CHUNK];
	ap_u64 i, j;
	double t0 = t_now();

	for (i = 0; i < n; i += CHUNK) {
		__u32 cnt = (__u32)(n - i < CHUNK ? n - i : CHUNK);

		for (j = 0; j < cnt; j++) {
			keys[j] = i + j;
			vals[j] = keys[j] * 3 + 1;
		}
		if (op == 0)
			bpf_map_update_batch(map_fd, keys, vals, &cnt, NULL);
		else
			bpf_map_delete_batch(map_fd, keys, &cnt, NULL);
	}
	return t_now() - t0;
}

static double sys_lookup_batch(ap_u64 n)
{
	static ap_u64 keys[CHUNK], vals[CHUNK];
	__u64 in = 0, out = 0;
	ap_u64 got = 0;
	double t0 = t_now();
	int first = 1;

	while (got < n) {
		__u32 cnt = CHUNK;
		int err = bpf_map_lookup_batch(map_fd, first ? NULL : &in, &out, keys, vals, &cnt, NULL);

		got += cnt;
		if (err)
			break;
		in = out;
		first = 0;
	}
	return t_now() - t0;
}

int main(int argc, char **argv)
{
	struct ds_ops_bpf *skel;
	struct ds_bench_bpf *bench;
	struct ds_ctx c;
	struct ds_config cfg;
	int err, k;
	const char *names[3] = {"insert", "search", "delete"};
	ap_u8 ds_ops_of[3] = {DS_OP_INSERT, DS_OP_SEARCH, DS_OP_DELETE};
	struct rate user1[3], user2[3], sys1[3], sysb[3], karena[3], kmap[3];

	nkeys = argc > 1 ? strtoull(argv[1], NULL, 0) : 262144;
	skel = ds_ops_bpf__open_and_load();
	REQUIRE(skel, "load ds_ops");
	bench = ds_bench_bpf__open();
	REQUIRE(bench, "open ds_bench");
	bpf_map__set_max_entries(bench->maps.bench_hash, (__u32)nkeys);
	REQUIRE(ds_bench_bpf__load(bench) == 0, "load ds_bench");
	map_fd = bpf_map__fd(bench->maps.bench_hash);
	sp = ds_space_init(16384, 16000, (ap_u32)libbpf_num_possible_cpus(), 4, 0);
	REQUIRE(sp && ds_user_attach(sp, &c) == DS_OK, "space");
	cfg.capacity = nkeys;
	cfg.flags = 0;
	cfg.spare = 0;
	hash_ds = ds_create(sp, &c, DS_TYPE_hash, &cfg, "bench", &err);
	REQUIRE(hash_ds, "create: %d", err);

	/* user side, one thread (warm the pages once) */
	user_run(&c, DS_OP_INSERT, 0, nkeys);
	user_run(&c, DS_OP_DELETE, 0, nkeys);
	ebr_synchronize(&sp->ebr, c.rec, 1000);
	for (k = 0; k < 3; k++)
		user1[k] = rate_of(nkeys, user_run(&c, ds_ops_of[k], 0, nkeys));
	ebr_synchronize(&sp->ebr, c.rec, 1000);
	for (k = 0; k < 3; k++) {
		struct two w = {ds_ops_of[k], 0};

		t_run_threads(2, two_worker, &w);
		user2[k] = rate_of(nkeys, w.secs);
	}
	ebr_synchronize(&sp->ebr, c.rec, 1000);
	/* system calls on a BPF hash map */
	for (k = 0; k < 3; k++)
		sys1[k] = rate_of(nkeys, sys_run(k, nkeys));
	sysb[0] = rate_of(nkeys, sys_batch(0, nkeys));
	sysb[1] = rate_of(nkeys, sys_lookup_batch(nkeys));
	sysb[2] = rate_of(nkeys, sys_batch(2, nkeys));
	/* kernel side: the same ops in one program each */
	for (k = 0; k < 3; k++) {
		ap_u64 done = 0, ns = 0, i;

		for (i = 0; i < nkeys; i += DS_BATCH_MAX) {
			struct ds_batch b = {0};
			LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &b, .ctx_size_in = sizeof(b));

			b.ds = hash_ds;
			b.type = DS_TYPE_hash;
			b.cmd = DS_CMD_MIX;
			b.keys = DS_KEYS_SEQ;
			b.count = (ap_u32)(nkeys - i < DS_BATCH_MAX ? nkeys - i : DS_BATCH_MAX);
			b.key_lo = i;
			b.key_span = b.count;
			b.val_base = i;
			b.mix[k == 0 ? DS_MIX_INSERT : k == 1 ? DS_MIX_SEARCH : DS_MIX_DELETE] = 1;
			bpf_prog_test_run_opts(bpf_program__fd(skel->progs.ds_run_hash), &o);
			done += b.count;
			ns += b.ns;
		}
		karena[k].ns = (double)ns / done;
		karena[k].mops = 1e3 / karena[k].ns;
	}
	for (k = 0; k < 3; k++) {
		ap_u64 done = 0, ns = 0, i;

		for (i = 0; i < nkeys; i += DS_BATCH_MAX) {
			struct {
				__u64 key_lo;
				__u32 count, op;
				__u64 ok, ns;
			} a = {i, (__u32)(nkeys - i < DS_BATCH_MAX ? nkeys - i : DS_BATCH_MAX), (__u32)k, 0, 0};
			LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &a, .ctx_size_in = sizeof(a));

			bpf_prog_test_run_opts(bpf_program__fd(bench->progs.bench_map), &o);
			done += a.count;
			ns += a.ns;
		}
		kmap[k].ns = (double)ns / done;
		kmap[k].mops = 1e3 / kmap[k].ns;
	}

	printf("keys: %llu (u64 key, u64 value), hash buckets: %llu\n", (unsigned long long)nkeys,
	       (unsigned long long)nkeys);
	printf("%-7s | %-22s | %-22s | %-22s | %-22s | %s\n", "op", "arena, user, 1 thread", "arena, user, 2 threads",
	       "BPF map, syscall/op", "BPF map, batch syscall", "ratios (1 thread)");
	for (k = 0; k < 3; k++)
		printf("%-7s | %6.2f M/s %7.1f ns | %6.2f M/s %7.1f ns | %6.2f M/s %7.1f ns | %6.2f M/s %7.1f ns | "
		       "%5.1fx per-op, %5.1fx batch\n",
		       names[k], user1[k].mops, user1[k].ns, user2[k].mops, user2[k].ns, sys1[k].mops, sys1[k].ns,
		       sysb[k].mops, sysb[k].ns, user1[k].mops / sys1[k].mops, user1[k].mops / sysb[k].mops);
	printf("(BPF map batch lookup is bpf_map_lookup_batch, a dump in map order: it takes no keys)\n");
	printf("%-7s | %-22s | %-22s | %s\n", "kernel", "arena hash, ds_run_hash", "BPF hash map, same prog",
	       "arena time / map time");
	for (k = 0; k < 3; k++)
		printf("%-7s | %7.1f ns/op           | %7.1f ns/op           | %.2fx\n", names[k], karena[k].ns,
		       kmap[k].ns, karena[k].ns / kmap[k].ns);
	ds_user_detach(&c);
	ds_bench_bpf__destroy(bench);
	ds_ops_bpf__destroy(skel);
	return 0;
}
