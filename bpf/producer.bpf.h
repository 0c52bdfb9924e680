/* SPDX-License-Identifier: MIT */
/*
 * BPF-only: the maps and the emit path every event producer shares (the
 * tracepoint fallback, the LSM hooks, the burst generator). Each BPF object
 * that includes this gets its own copy of these maps; the loader makes later
 * objects reuse the first object's arena and doorbell (bpf_map__reuse_fd).
 */
#ifndef AP_PRODUCER_H
#define AP_PRODUCER_H

#if !defined(__bpf__)
#error "producer.bpf.h is for BPF programs"
#endif

#include "root.h"
#include "arena_map.bpf.h"
#include "event_fill.bpf.h"

/* The doorbell: one small record wakes the reader's epoll. Records are only
 * written while the reader sleeps, so a page is plenty. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} doorbell SEC(".maps");

static __always_inline bool ap_filter_pass(struct ap_root __arena *root, __u32 tgid,
					   const char *comm)
{
	struct ap_filter __arena *f = &root->filter;
	int i;

	if (f->pid && f->pid != tgid)
		return false;
	if (f->ignore_pid && f->ignore_pid == tgid)
		return false;
	if (f->has_comm) {
		for (i = 0; i < AP_COMM_LEN; i++) {
			if (f->comm[i] != comm[i])
				return false;
			if (!comm[i])
				break;
		}
	}
	return true;
}

/* Push a finished record and ring the doorbell when the reader sleeps.
 * mode is EVQ_PUBLISH_RCU for non-sleepable programs, EVQ_PUBLISH_FENCED for
 * sleepable ones (see evq.h). Returns the enum evq_push_result. */
static __always_inline void ap_ring_doorbell(void)
{
	__u64 one = 1;

	bpf_ringbuf_output(&doorbell, &one, sizeof(one), BPF_RB_FORCE_WAKEUP);
}

static __always_inline int ap_emit(struct ap_root __arena *root, struct ap_event *ev, int mode)
{
	int res = evq_push(&root->evq, ev, mode);

	if (res == EVQ_OK_WAKE)
		ap_ring_doorbell();
	return res;
}

/* The same for a record without a path (struct ap_event_head, path_len 0):
 * the burst generator and the getppid load, which build it on the stack. */
static __always_inline int ap_emit_head(struct ap_root __arena *root, struct ap_event_head *ev,
					int mode)
{
	struct evq __arena *q = &root->evq;
	ap_u64 ticket;
	int res;

	ev->seq = evq_ring_next_seq(q);
	res = evq_reserve(q, &ticket);
	if (res)
		return res;
	evq_copy_event_head(&evq_slot_at(q, ticket)->rec, ev);
	res = evq_publish(q, ticket, mode);
	if (res == EVQ_OK_WAKE)
		ap_ring_doorbell();
	return res;
}

/* After a run of EVQ_PUBLISH_BATCH emits. */
static __always_inline void ap_emit_batch_done(struct ap_root __arena *root)
{
	if (evq_batch_done(&root->evq))
		ap_ring_doorbell();
}

/* The root, or NULL until userspace has laid it out and enabled producing. */
static __always_inline struct ap_root __arena *ap_root_enabled(void)
{
	struct ap_root __arena *root = AP_ROOT();

	arena_use_map();
	if (root->magic != AP_ROOT_MAGIC || !root->enabled)
		return NULL;
	return root;
}

#endif /* AP_PRODUCER_H */
