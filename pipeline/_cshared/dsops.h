/* SPDX-License-Identifier: MIT */
/*
 * The ds_ops BPF object (bpf/ds_ops.bpf.c: the arena and one SEC("syscall")
 * ds_run_NAME batch program per registered structure) from userspace: the
 * one loader, and the one way to fill and run a kernel batch. Used by the
 * data-structure module and by the native benchmarks, so both load and
 * drive the kernel side alike.
 */
#ifndef AP_DSOPS_H
#define AP_DSOPS_H

#include <stddef.h>
#include <stdint.h>

#include "ds/space.h"
#include "ds/batch.h"
#include "ds_ops.skel.h"

/* Is [ARENA_BASE, + pages) free in this process? 0, or -EBUSY. libbpf maps
 * an arena at its map_extra with MAP_FIXED, which would silently replace
 * another arena already there (a capture Session's, a DsArena's, the
 * benchmark's): this probe of the address space is what keeps "one arena
 * per process" across the extension modules, which share no C state. */
int ap_arena_base_free(uint64_t pages);

/* Opens and loads ds_ops with an arena of pages pages at ARENA_BASE, after
 * checking the address is free, and checks where libbpf mapped it. Returns
 * 0 with *out set, or a negative errno with a one-line message in err. */
int ap_ds_ops_load(struct ds_ops_bpf **out, uint64_t pages, char *err, size_t errlen);

/* Opens and loads ds_ops into an arena map another object created and mapped
 * already (arena_fd: a capture session's), so that its programs work on that
 * arena. Returns 0 with *out set, or a negative errno with a one-line message
 * in err. */
int ap_ds_ops_load_shared(struct ds_ops_bpf **out, int arena_fd, char *err, size_t errlen);

/* The loaded ds_run_NAME program of a registered type, or -1. */
int ap_ds_ops_prog_fd(struct ds_ops_bpf *skel, uint32_t type);

/* A zeroed batch for cmd on instance ds of type. */
void ap_ds_batch_cmd(struct ds_batch *b, uint64_t ds, uint32_t type, uint32_t cmd);

/* A DS_CMD_MIX batch: count operations weighted by mix[] (DS_MIX_*), keys
 * DS_KEYS_SEQ or DS_KEYS_RANDOM over key_lo + [0, key_span), op i inserts
 * val_base + i; flags DS_BATCH_*. */
void ap_ds_batch_mix(struct ds_batch *b, uint64_t ds, uint32_t type, uint32_t count,
		     const uint32_t mix[DS_MIX__COUNT], uint32_t keys, uint64_t key_lo, uint64_t key_span,
		     uint64_t val_base, uint64_t seed, uint32_t flags);

/* Runs one batch through a ds_run_NAME program: 0 or -errno. */
int ap_ds_kernel_call(int prog_fd, struct ds_batch *b);

/* total operations of a template DS_CMD_MIX batch, per_call at a time. */
struct ap_kmix {
	struct ds_batch tmpl;
	uint64_t total, per_call;
	struct ds_kv *arena_out; /* per call, or NULL */
	struct ds_kv *out;       /* every call's pairs (malloc), or NULL */
	uint64_t out_cap;
	struct ds_hist_rec *arena_hist; /* per call, per_call records, or NULL */
	struct ds_hist_rec *hist;       /* every call's records (malloc), or NULL */
	uint64_t hist_cap;
	uint32_t agent;                 /* the records' agent */
	/* out */
	uint64_t done[DS_MIX__COUNT], fails[DS_MIX__COUNT], nomem, busy, full, ns, calls, n_out, n_hist;
	int status, err;
};

/* Runs k's operations (no GIL needed). With sequential keys a call never
 * wraps the key span, so the op at overall index j meets key
 * key_lo + j % key_span and value val_base + j, as in one long batch; with
 * random keys each call gets its own seed. Stops at the first call whose
 * status is not DS_OK or that ran fewer than asked (k->status), or that
 * could not run (k->err, -errno). */
void ap_kmix_run(int prog_fd, struct ap_kmix *k);

#endif
