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
#error "producer.h is for BPF programs"
#endif

#include "root.h"
#include "arena_map.bpf.h"

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

/* Fill what every record carries about the current task. */
static __always_inline void ap_fill_task(struct ap_event *ev, __u8 trigger, bool with_ppid)
{
	__u64 id = bpf_get_current_pid_tgid();

	ev->ts_ns = bpf_ktime_get_ns();
	ev->tid = (__u32)id;
	ev->pid = id >> 32;
	ev->uid = (__u32)bpf_get_current_uid_gid();
	ev->cpu = bpf_get_smp_processor_id();
	ev->trigger = trigger;
	ev->ppid = 0;
	if (with_ppid) {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();

		ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	}
}

/* Push a finished record and ring the doorbell when the reader sleeps.
 * Returns the enum evq_push_result. */
static __always_inline int ap_emit(struct ap_root __arena *root, struct ap_event *ev)
{
	int res = evq_push(&root->evq, ev);

	if (res == EVQ_OK_WAKE) {
		__u64 one = 1;

		bpf_ringbuf_output(&doorbell, &one, sizeof(one), BPF_RB_FORCE_WAKEUP);
	}
	return res;
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
