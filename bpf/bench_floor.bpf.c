// SPDX-License-Identifier: GPL-2.0
/*
 * The benchmark's floor (python -m pipeline bench --only overhead): an empty
 * program on each exit tracepoint the tracepoint producer uses. What it costs
 * the traced program is what any tracer on these tracepoints pays before it
 * does any work: the traced syscall path, the tracepoint's argument record and
 * the BPF program's dispatch. The bench attaches it with bpftool.
 */
#include "common.bpf.h"
#include "creation_calls.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define AP_FLOOR_PROG(call, id, is_open)                         \
	SEC("tracepoint/syscalls/sys_exit_" #call)               \
	int floor_##call(struct trace_event_raw_sys_exit *ctx)   \
	{                                                        \
		(void)ctx;                                       \
		return 0;                                        \
	}

AP_CREATION_CALLS(AP_FLOOR_PROG)
