/* SPDX-License-Identifier: MIT */
/*
 * BPF-only: filling event records. Shared by the producers and by the
 * benchmark's ring-buffer baseline, so both carry exactly the same record.
 */
#ifndef AP_EVENT_FILL_H
#define AP_EVENT_FILL_H

#if !defined(__bpf__)
#error "event_fill.h is for BPF programs"
#endif

#include "event.h"

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
		/* a trusted BTF pointer: plain loads, no probe-read helper calls */
		struct task_struct *task = bpf_get_current_task_btf();

		ev->ppid = task->real_parent->tgid;
	}
}

/* The synthetic record of the burst generator (tests and benchmarks). */
static __always_inline void ap_fill_burst(struct ap_event *ev, __u64 i)
{
	__builtin_memset(ev, 0, sizeof(*ev));
	ap_fill_task(ev, AP_TRIGGER_BURST, false);
	ev->name[0] = 'b';
	ev->name[1] = 'u';
	ev->name[2] = 'r';
	ev->name[3] = 's';
	ev->name[4] = 't';
	ev->name_len = 5;
	ev->ret = (__s32)i;
}

#endif
