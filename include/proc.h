/* SPDX-License-Identifier: MIT */
/*
 * The process table: one entry per task (thread or process), in the run's
 * data-structure space, found through a registered `hash` keyed by the task's
 * pid (its value is the entry's address). The kernel keeps it current
 * (bpf/proctab.bpf.c: insert on fork, update on exec, delete on exit with the
 * entry retired through the epochs); readers in any process that maps the
 * arena read entries in place.
 */
#ifndef AP_PROC_H
#define AP_PROC_H

#include "arena/arena.h"

#define AP_PROC_COMM_LEN 16
/* The executable's path, as the events' path field (include/event.h): the
 * path ends at the end of exe[], exe_len bytes long; one that does not fit
 * keeps its last components (a true suffix starting with '/') and the entry
 * is flagged AP_PROC_EXE_TRUNCATED. exe_len 0: no executable (a kernel
 * thread) or none known. */
#define AP_PROC_EXE_CAP 512

/* entry flags */
#define AP_PROC_SEEDED 1u /* inserted from /proc at start, not seen forking */
#define AP_PROC_EXE_TRUNCATED 2u /* exe: only its last exe_len bytes are known */
#define AP_PROC_EXITED 4u /* the task has exited: kept for the reader (below) */

struct ap_proc {
	/* even while the entry is stable, odd while exec rewrites it: a reader
	 * copies the entry and keeps the copy if seq was even and unchanged */
	ap_u64 seq;
	ap_u32 pid;
	ap_u32 tgid;
	ap_u32 ppid; /* the parent process's tgid */
	ap_u32 flags;
	ap_u64 start_ns; /* the task's start, CLOCK_MONOTONIC */
	ap_u32 uid;
	ap_u32 euid;
	ap_u32 gid;
	ap_u32 mnt_ns; /* inode numbers of its namespaces */
	ap_u64 cgroup_id;
	ap_u32 pid_ns;
	ap_u32 execs; /* exec()s seen since the entry was made */
	char comm[AP_PROC_COMM_LEN];
	ap_u32 exe_len;
	ap_u32 exe_pad;
	/* Set at exit while a reader keeps exited entries (ap_proc_counts.keep):
	 * when (CLOCK_MONOTONIC), the queue's tail then (every event reserved
	 * before the exit has a smaller ticket) and the link of the exited list
	 * the reader takes them from. */
	ap_u64 exit_ns;
	ap_u64 exit_mark;
	ap_u64 exit_next;
	char exe[AP_PROC_EXE_CAP];
};

/* What the kernel side did, in the root (root.h), for statistics. */
struct ap_proc_counts {
	ap_u64 table;    /* the hash instance's address, 0: no table */
	ap_u64 forks;    /* entries inserted */
	ap_u64 execs;    /* entries updated */
	ap_u64 exits;    /* entries deleted and retired */
	ap_u64 nomem;    /* a fork whose entry or node found no memory: not in the table */
	ap_u64 stale;    /* a fork that found its pid still in the table (an exit missed) */
	ap_u64 missing;  /* an exec or exit of a task not in the table */
	ap_u64 busy;     /* the CPU's epoch record was busy: nothing done */
	/* Set by a reader that formats events with their process context: an
	 * exit then marks the entry AP_PROC_EXITED and pushes it onto `exited`
	 * (a stack of entries linked by exit_next) instead of deleting it; the
	 * reader deletes and retires each once it has drained every event
	 * reserved before the exit (its head reached exit_mark). */
	ap_u64 keep;
	ap_u64 exited;   /* the stack's top entry, 0: empty */
	ap_u64 reused;   /* a fork whose pid was an exited entry's: the entry left the key */
	ap_u64 reaped;   /* exited entries the reader deleted and retired */
};

#if !ARENA_IS_BPF
#include <string.h>

#include "arena/atomics.h"

/* A copy of the entry at addr when it is stable and still pid's; the caller
 * is inside an epoch section, so the memory is not freed meanwhile. Returns
 * 1 with *dst filled, 0 when the entry changed hands or kept changing. */
static inline int ap_proc_read(ap_u64 addr, ap_u64 pid, struct ap_proc *dst)
{
	const struct ap_proc *e = (const struct ap_proc *)addr;
	int tries;

	for (tries = 0; tries < 64; tries++) {
		ap_u64 s0 = arena_atomic_load(&e->seq, ARENA_ACQUIRE);

		if (s0 & 1)
			continue;
		memcpy(dst, e, sizeof(*dst));
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (arena_atomic_load(&e->seq, ARENA_RELAXED) == s0)
			return dst->pid == pid;
	}
	return 0;
}
#endif

#endif /* AP_PROC_H */
