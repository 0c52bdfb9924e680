// SPDX-License-Identifier: GPL-2.0
/*
 * File-creation producer, tracepoint fallback: pairs each file-creating
 * syscall's enter and exit tracepoints and emits an event only for calls that
 * succeeded. Also holds the burst generator (SEC("syscall")) used by tests and
 * the benchmark. The LSM producer lives in lsm.bpf.c so that a kernel that
 * refuses BPF LSM does not stop this object from loading.
 */
#include "common.bpf.h"
#include "producer.bpf.h"
#include "burst.h"

char LICENSE[] SEC("license") = "GPL";

#define AP_O_CREAT 0100
#define AP_O_EXCL 0200
#define AP_AT_FDCWD -100

/* A call in flight: saved at enter, consumed at exit. */
struct pending {
	__u64 path; /* user pointer to the path argument */
	__u32 syscall;
	__u32 mode;
	__u32 open_flags;
	__u32 pad;
};

/* LRU so that a thread killed inside a call cannot leak an entry for good. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct pending);
} inflight SEC(".maps");

static __always_inline int on_enter(__u32 syscall, const char *path, __u32 open_flags, __u32 mode,
				    bool is_open)
{
	struct ap_root __arena *root = ap_root_enabled();
	struct pending p = {};
	char comm[AP_COMM_LEN];
	__u64 id;

	if (!root)
		return 0;
	if (is_open && !(open_flags & AP_O_CREAT))
		return 0;
	id = bpf_get_current_pid_tgid();
	ap_task_comm(comm, bpf_get_current_task_btf());
	if (!ap_filter_pass(root, id >> 32, comm))
		return 0;
	p.path = (__u64)path;
	p.syscall = syscall;
	p.mode = mode;
	p.open_flags = open_flags;
	bpf_map_update_elem(&inflight, (__u32 *)&id, &p, BPF_ANY);
	return 0;
}

static __always_inline int on_exit(long ret, bool is_open)
{
	struct ap_root __arena *root;
	struct pending *p;
	struct ap_event ev;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	long n;

	p = bpf_map_lookup_elem(&inflight, &tid);
	if (!p)
		return 0;
	root = ap_root_enabled();
	/* failed calls created nothing: open returns an fd, the others 0 */
	if (!root || ret < 0 || (!is_open && ret != 0)) {
		bpf_map_delete_elem(&inflight, &tid);
		return 0;
	}
	__builtin_memset(&ev, 0, sizeof(ev));
	ap_fill_task(&ev, AP_TRIGGER_TRACEPOINT, true);
	ev.syscall = p->syscall;
	ev.mode = p->mode;
	ev.open_flags = p->open_flags;
	ev.ret = ret;
	if (p->open_flags & AP_O_EXCL)
		ev.flags |= AP_EV_EXCL;
	/* The kernel has copied the path in by now, so its page is resident. */
	n = bpf_probe_read_user_str(ev.name, sizeof(ev.name), (const void *)p->path);
	bpf_map_delete_elem(&inflight, &tid);
	if (n <= 0) {
		n = 1;
		ev.name[0] = 0;
	}
	if (n == sizeof(ev.name)) {
		char next = 0;

		/* a full buffer: find out whether the path went on */
		bpf_probe_read_user(&next, 1, (const char *)p->path + AP_NAME_KEEP);
		if (next)
			ev.flags |= AP_EV_TRUNCATED;
	}
	ev.name_len = (n - 1) & (AP_NAME_CAP - 1);
	ap_emit(root, &ev, EVQ_PUBLISH_RCU);
	return 0;
}

#define ARG(ctx, i) ((ctx)->args[i])

SEC("tracepoint/syscalls/sys_enter_open")
int enter_open(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(AP_SYS_OPEN, (const char *)ARG(ctx, 0), ARG(ctx, 1), ARG(ctx, 2), true);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(AP_SYS_OPENAT, (const char *)ARG(ctx, 1), ARG(ctx, 2), ARG(ctx, 3), true);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	struct open_how how = {};

	/* flags and mode live in a user struct */
	bpf_probe_read_user(&how, sizeof(how), (const void *)ARG(ctx, 2));
	return on_enter(AP_SYS_OPENAT2, (const char *)ARG(ctx, 1), how.flags, how.mode, true);
}

SEC("tracepoint/syscalls/sys_enter_creat")
int enter_creat(struct trace_event_raw_sys_enter *ctx)
{
	/* creat() is open(O_CREAT|O_WRONLY|O_TRUNC) */
	return on_enter(AP_SYS_CREAT, (const char *)ARG(ctx, 0), AP_O_CREAT | 01 | 01000,
			ARG(ctx, 1), false);
}

SEC("tracepoint/syscalls/sys_enter_mknod")
int enter_mknod(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(AP_SYS_MKNOD, (const char *)ARG(ctx, 0), 0, ARG(ctx, 1), false);
}

SEC("tracepoint/syscalls/sys_enter_mknodat")
int enter_mknodat(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(AP_SYS_MKNODAT, (const char *)ARG(ctx, 1), 0, ARG(ctx, 2), false);
}

SEC("tracepoint/syscalls/sys_enter_mkdir")
int enter_mkdir(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(AP_SYS_MKDIR, (const char *)ARG(ctx, 0), 0, ARG(ctx, 1), false);
}

SEC("tracepoint/syscalls/sys_enter_mkdirat")
int enter_mkdirat(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(AP_SYS_MKDIRAT, (const char *)ARG(ctx, 1), 0, ARG(ctx, 2), false);
}

/* creat returns an fd like open does */
SEC("tracepoint/syscalls/sys_exit_open")
int exit_open(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx->ret, true); }
SEC("tracepoint/syscalls/sys_exit_openat")
int exit_openat(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx->ret, true); }
SEC("tracepoint/syscalls/sys_exit_openat2")
int exit_openat2(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx->ret, true); }
SEC("tracepoint/syscalls/sys_exit_creat")
int exit_creat(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx->ret, true); }
SEC("tracepoint/syscalls/sys_exit_mknod")
int exit_mknod(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx->ret, false); }
SEC("tracepoint/syscalls/sys_exit_mknodat")
int exit_mknodat(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx->ret, false); }
SEC("tracepoint/syscalls/sys_exit_mkdir")
int exit_mkdir(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx->ret, false); }
SEC("tracepoint/syscalls/sys_exit_mkdirat")
int exit_mkdirat(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx->ret, false); }

/* ---- burst generator: SEC("syscall"), run with bpf_prog_test_run_opts ---- */

static long burst_one(__u64 i, void *data)
{
	struct ap_burst_args *args = data;
	struct ap_root __arena *root = AP_ROOT();
	struct ap_event ev;

	ap_fill_burst(&ev, i);
	/* one barrier and doorbell check per run, in burst() */
	if (ap_emit(root, &ev, EVQ_PUBLISH_BATCH) >= 0)
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
	struct ap_event ev;
	__u64 id;

	if (nr != bench_syscall_nr)
		return 0;
	root = ap_root_enabled();
	id = bpf_get_current_pid_tgid();
	if (!root || !root->filter.pid || root->filter.pid != id >> 32)
		return 0;
	__builtin_memset(&ev, 0, sizeof(ev));
	ap_fill_task(&ev, AP_TRIGGER_BENCH, true);
	ev.syscall = AP_SYS_GETPPID;
	ev.name[0] = 'g';
	ev.name[1] = 'e';
	ev.name[2] = 't';
	ev.name[3] = 'p';
	ev.name[4] = 'p';
	ev.name[5] = 'i';
	ev.name[6] = 'd';
	ev.name_len = 7;
	ap_emit(root, &ev, EVQ_PUBLISH_RCU);
	return 0;
}
