// SPDX-License-Identifier: MIT
#include "proctab.h"

#include <stdlib.h>
#include <string.h>

void ap_proc_seed(struct ds_ctx *c, uint64_t table, const struct ap_proc *in, size_t n,
		  struct ap_proc_seeded *out)
{
	struct ds_hash *h = (struct ds_hash *)table;
	size_t i;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < n; i++) {
		struct ap_proc *e = arena_heap_alloc(c->heap, sizeof(*e), 0);
		int r;

		if (!e) {
			out->nomem++;
			continue;
		}
		*e = in[i];
		e->seq = 0;
		e->flags |= AP_PROC_SEEDED;
		r = ds_hash_insert(c, h, in[i].pid, (ap_u64)e);
		if (r == DS_OK) {
			out->inserted++;
			continue;
		}
		/* never seen by anyone: freed at once */
		arena_free(e);
		if (r == DS_EXISTS)
			out->present++;
		else
			out->nomem++;
	}
}

long ap_proc_snapshot(struct ds_ctx *c, uint64_t table, struct ap_proc *out, size_t cap)
{
	struct ds_kv *kv = malloc(cap * sizeof(*kv));
	ap_u64 n = 0, i;
	long got = 0;

	if (!kv)
		return -1;
	if (ds_hash_iterate(c, (struct ds_hash *)table, 0, ~0ULL, kv, cap, &n) != DS_OK) {
		free(kv);
		return -1;
	}
	for (i = 0; i < n; i++)
		if (kv[i].val && ap_proc_read(kv[i].val, kv[i].key, &out[got]))
			got++;
	free(kv);
	return got;
}
