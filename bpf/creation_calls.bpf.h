/* SPDX-License-Identifier: MIT */
/*
 * The file-creating system calls the tracepoint fallback hooks at their exit
 * tracepoint, listed once: the producer defines its programs from this list,
 * and the benchmark's floor object (bench_floor.bpf.c) attaches empty
 * programs to exactly the same tracepoints.
 *
 * X(call, syscall id, returns a descriptor): call names the tracepoint
 * syscalls/sys_exit_<call>; the id is the record's enum ap_syscall.
 */
#ifndef AP_CREATION_CALLS_BPF_H
#define AP_CREATION_CALLS_BPF_H

#define AP_CREATION_CALLS(X)                 \
	X(open, AP_SYS_OPEN, true)           \
	X(openat, AP_SYS_OPENAT, true)       \
	X(openat2, AP_SYS_OPENAT2, true)     \
	X(creat, AP_SYS_CREAT, true)         \
	X(mknod, AP_SYS_MKNOD, false)        \
	X(mknodat, AP_SYS_MKNODAT, false)    \
	X(mkdir, AP_SYS_MKDIR, false)        \
	X(mkdirat, AP_SYS_MKDIRAT, false)

#endif /* AP_CREATION_CALLS_BPF_H */
