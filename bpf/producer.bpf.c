// SPDX-License-Identifier: GPL-2.0
/*
 * File-creation producer, tracepoint fallback: one program on the exit
 * tracepoint of each file-creating syscall emits an event for every call
 * that succeeded. The call's arguments are still in the task's saved user
 * registers at exit (bpf_task_pt_regs), so no program runs at enter and
 * nothing is carried from enter to exit: a call that creates nothing (an
 * open without O_CREAT, a failed call) costs a few loads. Also holds the
 * burst generator (SEC("syscall")) used by tests and the benchmark. The LSM
 * producer lives in lsm.bpf.c so that a kernel that refuses BPF LSM does not
 * stop this object from loading.
 */
#include "common.bpf.h"
#include "producer.bpf.h"
#include "path.bpf.h"
#include "filter.bpf.h"
#include "creation_calls.bpf.h"
#include "burst.h"

char LICENSE[] SEC("license") = "GPL";

#define AP_O_CREAT 0100
#define AP_O_EXCL 0200

/* The record under construction, one per CPU: a tracepoint program does
 * not migrate while it runs, and the kernel runs one tracepoint or kprobe
 * BPF program at a time per CPU (bpf_prog_active: a second one that would
 * start meanwhile is skipped), so no other user of this buffer can run on
 * its CPU before the record is copied out. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ap_scratch);
} scratch SEC(".maps");

/* The arguments of the call, read back from the saved user registers. */
struct call_args {
	const char *path; /* user pointer to the path argument */
	int dfd;          /* directory it is relative to, or AP_AT_FDCWD */
	__u32 open_flags;
	__u32 mode;
};

static __always_inline bool read_args(__u32 syscall, struct pt_regs *regs, struct call_args *a)
{
	struct open_how how = {};

	a->dfd = AP_AT_FDCWD;
	a->open_flags = 0;
	switch (syscall) {
	case AP_SYS_OPEN:
		a->path = (const char *)PT_REGS_PARM1_SYSCALL(regs);
		a->open_flags = PT_REGS_PARM2_SYSCALL(regs);
		a->mode = PT_REGS_PARM3_SYSCALL(regs);
		return a->open_flags & AP_O_CREAT;
	case AP_SYS_OPENAT:
		a->dfd = PT_REGS_PARM1_SYSCALL(regs);
		a->path = (const char *)PT_REGS_PARM2_SYSCALL(regs);
		a->open_flags = PT_REGS_PARM3_SYSCALL(regs);
		a->mode = PT_REGS_PARM4_SYSCALL(regs);
		return a->open_flags & AP_O_CREAT;
	case AP_SYS_OPENAT2:
		a->dfd = PT_REGS_PARM1_SYSCALL(regs);
		a->path = (const char *)PT_REGS_PARM2_SYSCALL(regs);
		/* flags and mode live in a user struct */
		bpf_probe_read_user(&how, sizeof(how), (const void *)PT_REGS_PARM3_SYSCALL(regs));
		a->open_flags = how.flags;
		a->mode = how.mode;
		return a->open_flags & AP_O_CREAT;
	case AP_SYS_CREAT:
		/* creat() is open(O_CREAT|O_WRONLY|O_TRUNC) */
		a->path = (const char *)PT_REGS_PARM1_SYSCALL(regs);
		a->open_flags = AP_O_CREAT | 01 | 01000;
		a->mode = PT_REGS_PARM2_SYSCALL(regs);
		return true;
	case AP_SYS_MKNOD:
	case AP_SYS_MKDIR:
		a->path = (const char *)PT_REGS_PARM1_SYSCALL(regs);
		a->mode = PT_REGS_PARM2_SYSCALL(regs);
		return true;
	default: /* mknodat, mkdirat */
		a->dfd = PT_REGS_PARM1_SYSCALL(regs);
		a->path = (const char *)PT_REGS_PARM2_SYSCALL(regs);
		a->mode = PT_REGS_PARM3_SYSCALL(regs);
		return true;
	}
}

/* The path argument, as the caller gave it, into the record's name. */
static __always_inline void read_name(struct ap_event *ev, const char *upath)
{
	/* The kernel has copied the path in by now, so its page is resident. */
	long n = bpf_probe_read_user_str(ev->name, sizeof(ev->name), upath);

	if (n <= 0) {
		n = 1;
		ev->name[0] = 0;
	}
	if (n == sizeof(ev->name)) {
		char next = 0;

		/* a full buffer: find out whether the path went on */
		bpf_probe_read_user(&next, 1, upath + AP_NAME_KEEP);
		if (next)
			ev->flags |= AP_EV_TRUNCATED;
	}
	ev->name_len = (n - 1) & (AP_NAME_CAP - 1);
}

/* The absolute path: an open is resolved from the file its new descriptor
 * refers to; the other calls have no file to look at, so the path is the
 * directory the argument is relative to (the dirfd's, the working
 * directory, or the process's root for an absolute argument), resolved,
 * followed by the argument as given. */
static __always_inline void resolve_path(struct ap_scratch *sc, struct task_struct *task,
					 const struct call_args *a, long ret, bool is_open)
{
	struct ap_event *ev = &sc->ev;
	struct file *f = NULL;
	struct path p;

	if (is_open)
		f = ap_task_file(task, ret);
	if (f) {
		ap_path_resolve(ev, &sc->pc, f->f_path.dentry, f->f_path.mnt, true);
		return;
	}
	/* not an open, or its descriptor is gone already (another thread
	 * closed it): the argument, after its directory */
	ap_path_put_arg(ev);
	/* a cut argument leaves the path unknown past its first bytes */
	if (ev->flags & AP_EV_TRUNCATED)
		ev->flags |= AP_EV_PATH_TRUNCATED;
	if (ev->name[0] == '/') {
		p.dentry = task->fs->root.dentry;
		p.mnt = task->fs->root.mnt;
	} else if (a->dfd == AP_AT_FDCWD) {
		p.dentry = task->fs->pwd.dentry;
		p.mnt = task->fs->pwd.mnt;
	} else {
		f = ap_task_file(task, a->dfd);
		if (!f) {
			ev->flags |= AP_EV_PATH_TRUNCATED;
			return;
		}
		p.dentry = f->f_path.dentry;
		p.mnt = f->f_path.mnt;
	}
	ap_path_resolve(ev, &sc->pc, p.dentry, p.mnt, false);
}

static __always_inline int on_exit(long ret, __u32 syscall, bool is_open)
{
	struct task_struct *task;
	struct ap_root __arena *root;
	struct ap_filter_state fst;
	struct ap_scratch *sc;
	struct ap_event *ev;
	struct call_args a;
	__u32 zero = 0;
	__u64 id;

	/* failed calls created nothing: open returns an fd, the others 0 */
	if (ret < 0 || (!is_open && ret != 0))
		return 0;
	task = bpf_get_current_task_btf();
	if (!read_args(syscall, (struct pt_regs *)bpf_task_pt_regs(task), &a))
		return 0;
	root = ap_root_enabled();
	sc = bpf_map_lookup_elem(&scratch, &zero);
	if (!root || !sc)
		return 0;
	ev = &sc->ev;
	id = bpf_get_current_pid_tgid();
	ap_task_comm(ev->comm, task);
	if (!ap_filter_pass(root, id >> 32, ev->comm))
		return 0;
	ap_fill_task((struct ap_event_head *)ev, task, id, AP_TRIGGER_TRACEPOINT, true);
	if (!ap_filter_begin(root, ev, &fst))
		return 0;
	ap_fill_call(ev, syscall, a.mode, a.open_flags, ret,
		     a.open_flags & AP_O_EXCL ? AP_EV_EXCL : 0);
	read_name(ev, a.path);
	resolve_path(sc, task, &a, ret, is_open);
	if (!ap_filter_end(root, ev, &fst))
		return 0;
	ap_emit(root, ev, EVQ_PUBLISH_RCU);
	return 0;
}

/* One program per call of creation_calls.bpf.h, exit_<call>; creat returns a
 * descriptor as open does. */
#define AP_EXIT_PROG(call, id, is_open)                          \
	SEC("tracepoint/syscalls/sys_exit_" #call)               \
	int exit_##call(struct trace_event_raw_sys_exit *ctx)    \
	{                                                        \
		return on_exit(ctx->ret, id, is_open);           \
	}

AP_CREATION_CALLS(AP_EXIT_PROG)

/* ---- burst generator: SEC("syscall"), run with bpf_prog_test_run_opts ---- */

static long burst_one(__u64 i, void *data)
{
	struct ap_burst_args *args = data;
	struct ap_root __arena *root = AP_ROOT();
	struct ap_event_head ev;

	ap_fill_burst(&ev, i);
	/* one barrier and doorbell check per run, in burst() */
	if (ap_emit_head(root, &ev, EVQ_PUBLISH_BATCH) >= 0)
		args->published++;
	else
		args->dropped++;
	return 0;
}

SEC("syscall")
int burst(struct ap_burst_args *args)
{
	struct ap_root __arena *root = ap_root_enabled();

	if (!root)
		return -1;
	ap_burst_run(args, burst_one);
	ap_emit_batch_done(root);
	return 0;
}

/* ---- benchmark load: one event per getppid() of the filtered process ---- */

/* getppid's number on this architecture, set by the loader before load. */
const volatile long bench_syscall_nr = -1;

/* The raw (BTF) form of the sys_enter tracepoint: it hands over the syscall
 * number and registers directly, without the per-syscall tracepoint's
 * argument record and perf buffer, so the load generator can drive the queue
 * harder. The BCC baseline hooks the same tracepoint (RAW_TRACEPOINT_PROBE). */
SEC("tp_btf/sys_enter")
int BPF_PROG(bench_getppid, struct pt_regs *regs, long nr)
{
	struct ap_root __arena *root;
	struct ap_event_head ev;
	__u64 id;

	if (nr != bench_syscall_nr)
		return 0;
	root = ap_root_enabled();
	id = bpf_get_current_pid_tgid();
	if (!root || !root->filter.pid || root->filter.pid != id >> 32)
		return 0;
	__builtin_memset(&ev, 0, sizeof(ev));
	ap_fill_task(&ev, bpf_get_current_task_btf(), id, AP_TRIGGER_BENCH, true);
	ev.syscall = AP_SYS_GETPPID;
	ev.name[0] = 'g';
	ev.name[1] = 'e';
	ev.name[2] = 't';
	ev.name[3] = 'p';
	ev.name[4] = 'p';
	ev.name[5] = 'i';
	ev.name[6] = 'd';
	ev.name_len = 7;
	ap_emit_head(root, &ev, EVQ_PUBLISH_RCU);
	return 0;
}
