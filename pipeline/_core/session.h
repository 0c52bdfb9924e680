/* SPDX-License-Identifier: MIT */
/* A capture session: the loaded BPF objects, the mapped arena, the event
 * queue laid out in it, the attached producer and the doorbell. */
#ifndef AP_SESSION_H
#define AP_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include <pthread.h>

#include "root.h"
#include "dsshare.h"

#define AP_ERR_LEN 512

enum ap_active_trigger {
	AP_ACTIVE_NONE = 0,
	AP_ACTIVE_LSM = 1,
	AP_ACTIVE_TRACEPOINT = 2,
	AP_ACTIVE_GETPPID = 3, /* benchmark load source */
};

struct ap_session {
	struct producer_bpf *prod;
	struct lsm_bpf *lsm;
	struct ring_buffer *bell;
	struct ap_root *root;
	struct evq *q;
	int arena_fd;    /* the arena map, made here so every object reuses it */
	int mapped_here; /* mapped by the session, not by libbpf */
	uint64_t arena_pages;
	uint64_t queue_pages; /* pages the root and the queue use, from page 1 */
	int active;
	int pinned;
	char pin_dir[256];
	/* The data-structure space beside the queue, and the ds_ops programs
	 * (ds_run_NAME, ds_trim) loaded into this same arena by a thread of
	 * their own while the rest of the start-up goes on: ap_session_ds()
	 * waits for it. */
	uint64_t ds_first_page;
	struct ds_space *sp;
	struct ds_ops_bpf *ds;
	pthread_t ds_loader;
	int ds_loading;
	int ds_ret;
	char ds_err[AP_ERR_LEN];
	struct ap_ds_share share;
	struct proctab_bpf *proctab; /* the process table's tracepoints, when attached */
};

/* All return 0 or a negative errno, with a one-line message in err. */
int ap_session_open(struct ap_session *s, uint64_t arena_pages, uint64_t queue_capacity,
		    char *err, size_t errlen);
/* Waits for the ds_ops programs; 0 with s->share complete (and alive), or
 * the load's negative errno with its message in err. */
int ap_session_ds(struct ap_session *s, char *err, size_t errlen);
int ap_session_attach_lsm(struct ap_session *s, char *err, size_t errlen);
int ap_session_attach_tracepoint(struct ap_session *s, char *err, size_t errlen);
int ap_session_attach_getppid(struct ap_session *s, char *err, size_t errlen);
/* The process table (include/proc.h): creates its hash in the space, loads
 * the scheduler tracepoints into the arena and attaches them. *table gets
 * the hash instance's address. */
int ap_session_attach_proctab(struct ap_session *s, uint64_t *table, char *err, size_t errlen);
void ap_session_set_filter(struct ap_session *s, uint32_t pid, const char *comm,
			   uint32_t ignore_pid);
void ap_session_enable(struct ap_session *s, int on);
void ap_session_detach(struct ap_session *s);
int ap_session_doorbell_fd(struct ap_session *s);
int ap_session_consume_doorbell(struct ap_session *s);
int ap_session_pin(struct ap_session *s, const char *dir, char *err, size_t errlen);
void ap_session_unpin(struct ap_session *s);
void ap_session_close(struct ap_session *s);
uint64_t ap_session_resident_bytes(struct ap_session *s);
int ap_session_burst_fd(struct ap_session *s);

/* CLOCK_MONOTONIC stamp of the record at the queue's head, or 0 when none
 * is published there (an empty queue, or its head record still being
 * written). The head is stored once per drain batch, so within a batch this
 * may be a record already read: the figure is exact between batches. */
uint64_t ap_session_oldest_ts(struct ap_session *s);

/* Calls fn for each loaded program of the session with the kernel's own
 * run statistics (bpf_prog_info; run_time_ns and run_cnt grow only while BPF
 * statistics are enabled); stops at fn's first non-zero return, which it
 * returns. */
typedef int (*ap_prog_stat_fn)(void *ctx, const char *name, uint32_t id, uint64_t run_time_ns,
			       uint64_t run_cnt);
int ap_session_prog_stats(struct ap_session *s, ap_prog_stat_fn fn, void *ctx);

/* Runs the burst program (an fd of it, pinned or own) total events, per_call
 * at a time; adds the counts to *published / *dropped. */
int ap_run_burst(int prog_fd, uint64_t total, uint64_t per_call, uint64_t *published,
		 uint64_t *dropped, char *err, size_t errlen);

#endif
