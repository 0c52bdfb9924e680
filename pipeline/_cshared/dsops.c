// SPDX-License-Identifier: MIT
#define _GNU_SOURCE
#include "coreutil.h"
#include "dsops.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

int ap_arena_base_free(uint64_t pages)
{
	void *p = mmap((void *)ARENA_BASE, pages * ARENA_PAGE_SIZE, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);

	if (p == MAP_FAILED)
		return errno == EEXIST ? -EBUSY : -errno;
	munmap(p, pages * ARENA_PAGE_SIZE);
	/* a kernel without MAP_FIXED_NOREPLACE takes it as a hint */
	return p == (void *)ARENA_BASE ? 0 : -EBUSY;
}

int ap_ds_ops_load(struct ds_ops_bpf **out, uint64_t pages, char *err, size_t errlen)
{
	struct ds_ops_bpf *skel;
	size_t sz = 0;
	void *base;
	int ret;

	*out = NULL;
	if (ap_arena_base_free(pages))
		return ap_fail(err, errlen, EBUSY,
			       "address %#llx is already mapped in this process (a Session's arena?): one arena per process; in a process with a pipeline session use its arena, pipeline.ds.Arena.of_session(session)",
			       (unsigned long long)ARENA_BASE);
	skel = ds_ops_bpf__open();
	if (!skel)
		return ap_fail(err, errlen, errno, "cannot open the ds_ops BPF object: %s", strerror(errno));
	bpf_map__set_max_entries(skel->maps.arena, (uint32_t)pages);
	ret = ds_ops_bpf__load(skel);
	if (ret) {
		ds_ops_bpf__destroy(skel);
		return ap_fail(err, errlen, ret,
			       "loading the ds_ops BPF programs failed (%s): needs root and BPF arena support (Linux >= 6.9)",
			       strerror(ret < 0 ? -ret : ret));
	}
	base = bpf_map__initial_value(skel->maps.arena, &sz);
	if (base != (void *)ARENA_BASE) {
		ds_ops_bpf__destroy(skel);
		return ap_fail(err, errlen, EFAULT, "the BPF arena is mapped at %p, not at %#llx", base,
			       (unsigned long long)ARENA_BASE);
	}
	*out = skel;
	return 0;
}

int ap_ds_ops_load_shared(struct ds_ops_bpf **out, int arena_fd, char *err, size_t errlen)
{
	struct ds_ops_bpf *skel;
	int ret;

	*out = NULL;
	skel = ds_ops_bpf__open();
	if (!skel)
		return ap_fail(err, errlen, errno, "cannot open the ds_ops BPF object: %s", strerror(errno));
	/* takes the map's size and flags from the fd; libbpf neither creates
	 * nor maps a reused arena, so destroying this object later leaves the
	 * owner's mapping alone */
	ret = bpf_map__reuse_fd(skel->maps.arena, arena_fd);
	if (!ret)
		ret = ds_ops_bpf__load(skel);
	if (ret) {
		ds_ops_bpf__destroy(skel);
		return ap_fail(err, errlen, ret,
			       "loading the ds_ops BPF programs into the session's arena failed (%s)",
			       strerror(ret < 0 ? -ret : ret));
	}
	*out = skel;
	return 0;
}

int ap_ds_ops_prog_fd(struct ds_ops_bpf *skel, uint32_t type)
{
	switch (type) {
#define PROG_FD(id, name) \
	case id:          \
		return bpf_program__fd(skel->progs.ds_run_##name);
		DS_REGISTRY(PROG_FD)
#undef PROG_FD
	default:
		return -1;
	}
}

void ap_ds_batch_cmd(struct ds_batch *b, uint64_t ds, uint32_t type, uint32_t cmd)
{
	memset(b, 0, sizeof(*b));
	b->ds = ds;
	b->type = type;
	b->cmd = cmd;
}

void ap_ds_batch_mix(struct ds_batch *b, uint64_t ds, uint32_t type, uint32_t count,
		     const uint32_t mix[DS_MIX__COUNT], uint32_t keys, uint64_t key_lo, uint64_t key_span,
		     uint64_t val_base, uint64_t seed, uint32_t flags)
{
	ap_ds_batch_cmd(b, ds, type, DS_CMD_MIX);
	b->count = count;
	b->keys = keys;
	memcpy(b->mix, mix, sizeof(b->mix));
	b->flags = flags;
	b->key_lo = key_lo;
	b->key_span = key_span;
	b->val_base = val_base;
	b->seed = seed;
}

int ap_ds_kernel_call(int prog_fd, struct ds_batch *b)
{
	LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = b, .ctx_size_in = sizeof(*b));

	return bpf_prog_test_run_opts(prog_fd, &o) ? (errno ? -errno : -EIO) : 0;
}

void ap_kmix_run(int prog_fd, struct ap_kmix *k)
{
	uint64_t j = 0, span = k->tmpl.key_span ? k->tmpl.key_span : 1;
	int seq = k->tmpl.keys == DS_KEYS_SEQ;

	while (j < k->total) {
		struct ds_batch b = k->tmpl;
		uint64_t cnt = k->total - j, ran;
		int i;

		if (cnt > k->per_call)
			cnt = k->per_call;
		if (seq) {
			uint64_t off = j % span;

			if (cnt > span - off)
				cnt = span - off;
			b.key_lo = k->tmpl.key_lo + off;
			b.key_span = span - off;
		} else {
			b.seed = k->tmpl.seed + 0x9e3779b97f4a7c15ULL * (k->calls + 1);
		}
		b.count = (ap_u32)cnt;
		b.val_base = k->tmpl.val_base + j;
		b.out = k->arena_out ? (ap_u64)k->arena_out : 0;
		b.out_cap = k->arena_out ? k->per_call : 0;
		b.hist = k->arena_hist ? (ap_u64)k->arena_hist : 0;
		b.hist_cap = k->arena_hist ? cnt : 0;
		b.agent = k->agent;
		k->err = ap_ds_kernel_call(prog_fd, &b);
		if (k->err)
			return;
		k->calls++;
		ran = 0;
		for (i = 0; i < DS_MIX__COUNT; i++) {
			k->done[i] += b.done[i];
			k->fails[i] += b.fails[i];
			ran += b.done[i];
		}
		k->nomem += b.nomem;
		k->busy += b.busy;
		k->full += b.full;
		k->ns += b.ns;
		if (k->out && b.n_out) {
			uint64_t room = k->out_cap - k->n_out, m = b.n_out < room ? b.n_out : room;

			memcpy(k->out + k->n_out, k->arena_out, m * sizeof(struct ds_kv));
			k->n_out += m;
		}
		if (k->hist && b.n_hist) {
			uint64_t room = k->hist_cap - k->n_hist, m = b.n_hist < room ? b.n_hist : room;

			memcpy(k->hist + k->n_hist, k->arena_hist, m * sizeof(struct ds_hist_rec));
			k->n_hist += m;
		}
		k->status = b.status;
		j += ran;
		if (b.status != DS_OK || ran < cnt)
			return;
	}
}
