/* SPDX-License-Identifier: MIT */
/*
 * BPF-only: filling event records. Shared by the producers and by the
 * benchmark's ring-buffer baseline, so both carry exactly the same record.
 */
#ifndef AP_EVENT_FILL_H
#define AP_EVENT_FILL_H

#if !defined(__bpf__)
#error "event_fill.bpf.h is for BPF programs"
#endif

#include "event.h"

/* A task's comm, read straight from its task_struct: two 8-byte loads
 * instead of bpf_get_current_comm()'s helper call and string copy. The
 * kernel keeps comm NUL-padded (set_task_comm pads it), so this is the same
 * 16 bytes the helper would give. */
static __always_inline void ap_task_comm(char *dst, struct task_struct *task)
{
	__u64 *d = (__u64 *)dst;

	d[0] = *(__u64 *)&task->comm[0];
	d[1] = *(__u64 *)&task->comm[8];
}

/* Fill what every record carries about the current task (task, with id from
 * bpf_get_current_pid_tgid()), comm and cgroup included.
 * Read through the task's BTF pointer with plain loads where the helpers
 * would cost a call each: the uid is the kuid's value, which is the uid as
 * the initial user namespace sees it (what bpf_get_current_uid_gid()
 * reports). */
static __always_inline void ap_fill_task(struct ap_event_head *ev, struct task_struct *task,
					 __u64 id, __u8 trigger, bool with_ppid)
{

	ev->ts_ns = bpf_ktime_get_ns();
	ev->tid = (__u32)id;
	ev->pid = id >> 32;
	ev->uid = task->cred->uid.val;
	ev->cpu = bpf_get_smp_processor_id();
	ev->trigger = trigger;
	ev->ppid = with_ppid ? task->real_parent->tgid : 0;
	/* the cgroup v2 (default hierarchy) cgroup: userspace maps it to a path
	 * and a container; on a hybrid or v1-only host it is still the task's
	 * cgroup in the (maybe unmounted) v2 hierarchy */
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ap_task_comm(ev->comm, task);
}

/* Fill what a creation record says of its call, and clear what the path
 * walk and the filters add to (the scratch record is reused, never cleared
 * whole: a memset of its head would cost a store per word of name). */
static __always_inline void ap_fill_call(struct ap_event *ev, __u8 syscall, __u32 mode,
					 __u32 open_flags, __s32 ret, __u32 flags)
{
	ev->syscall = syscall;
	ev->mode = mode;
	ev->open_flags = open_flags;
	ev->ret = ret;
	ev->flags = flags;
	ev->mnt_ns = 0;
	ev->path_len = 0;
	ev->filter_gen = 0;
}

/* The synthetic record of the burst generator (tests and benchmarks): a
 * record without a path. */
static __always_inline void ap_fill_burst(struct ap_event_head *ev, __u64 i)
{
	__builtin_memset(ev, 0, sizeof(*ev));
	ap_fill_task(ev, bpf_get_current_task_btf(), bpf_get_current_pid_tgid(), AP_TRIGGER_BURST,
		     false);
	ev->name[0] = 'b';
	ev->name[1] = 'u';
	ev->name[2] = 'r';
	ev->name[3] = 's';
	ev->name[4] = 't';
	ev->name_len = 5;
	ev->ret = (__s32)i;
}

#endif
