/* SPDX-License-Identifier: MIT */
/*
 * The file-creation event record: fixed size, written by the kernel side into
 * the arena event queue and read in place by the userspace drain.
 */
#ifndef AP_EVENT_H
#define AP_EVENT_H

#include "arena/arena.h"

#define AP_COMM_LEN 16
/* NAME_MAX (255) bytes plus the terminating NUL: a dentry name always fits
 * whole; a longer path argument on the fallback keeps its first 255 bytes and
 * sets AP_EV_TRUNCATED. */
#define AP_NAME_CAP 256
#define AP_NAME_KEEP (AP_NAME_CAP - 1)

/* Which producer wrote the record. */
enum ap_trigger {
	AP_TRIGGER_NONE = 0,
	AP_TRIGGER_LSM = 1,        /* lsm.s/inode_create (and inode_mkdir/mknod) */
	AP_TRIGGER_TRACEPOINT = 2, /* syscall enter/exit tracepoints */
	AP_TRIGGER_BURST = 3,      /* SEC("syscall") load generator (tests, bench) */
	AP_TRIGGER_BENCH = 4,      /* getppid tracepoint (bench) */
};

/* The call that produced it (fallback path; AP_SYS_NONE on the LSM path). */
enum ap_syscall {
	AP_SYS_NONE = 0,
	AP_SYS_OPEN,
	AP_SYS_OPENAT,
	AP_SYS_OPENAT2,
	AP_SYS_CREAT,
	AP_SYS_MKNOD,
	AP_SYS_MKNODAT,
	AP_SYS_MKDIR,
	AP_SYS_MKDIRAT,
	AP_SYS_INODE_CREATE, /* LSM hooks */
	AP_SYS_INODE_MKNOD,
	AP_SYS_INODE_MKDIR,
	AP_SYS_GETPPID,
	AP_SYS__COUNT,
};

/* The absolute path of what was created, resolved in the kernel, kept in a
 * fixed field of AP_PATH_CAP bytes. The resolver writes it from the leaf
 * towards the root, so it ends at the end of the field: the path is the last
 * path_len bytes of path[] (no NUL). A path that does not fit keeps its last
 * bytes (a suffix that starts at a component) and sets AP_EV_PATH_TRUNCATED;
 * so does a walk that needs more than AP_PATH_DEPTH steps (components and
 * mount crossings). */
#define AP_PATH_CAP 512
#define AP_PATH_DEPTH 64

/* flags */
#define AP_EV_TRUNCATED 0x1      /* name longer than AP_NAME_KEEP: cut */
#define AP_EV_EXCL 0x2           /* O_EXCL was set: the call created the file */
#define AP_EV_PATH_TRUNCATED 0x4 /* path: only its last path_len bytes are known */
#define AP_EV_FILTER_GEN 0x8     /* filter_gen holds the generation that judged it */

/* The record's fields up to and including name: every record has them. A
 * producer without a path (the burst generator, the getppid load) builds
 * only this much (struct ap_event_head) and leaves path_len 0; the queue's
 * copy never reads past name then. */
#define AP_EVENT_HEAD_FIELDS                                                            \
	ap_u64 seq;   /* per-run sequence number, also given to dropped events */      \
	ap_u64 ts_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */                           \
	ap_u32 tid;   /* kernel pid of the thread */                                     \
	ap_u32 pid;   /* tgid: the process id users see */                               \
	ap_u32 ppid;                                                                     \
	ap_u32 uid;                                                                      \
	ap_u32 cpu;                                                                      \
	ap_u32 mode;       /* mode argument (0 where the call has none) */               \
	ap_s32 ret;        /* the syscall's return value (fd or 0); 0 on LSM */          \
	ap_u16 name_len;   /* bytes in name, without the NUL */                          \
	ap_u8 trigger;     /* enum ap_trigger */                                         \
	ap_u8 syscall;     /* enum ap_syscall */                                         \
	ap_u32 flags;      /* AP_EV_* */                                                 \
	ap_u32 open_flags; /* O_* flags of open calls */                                 \
	ap_u32 mnt_ns;     /* mount namespace the path starts in (its inode number) */  \
	ap_u16 path_len;   /* bytes of path, at the end of path[] */                     \
	ap_u16 filter_gen; /* filter generation that judged it, mod 65536 (filter.h) */ \
	ap_u64 cgroup_id;  /* cgroup v2 id of the task (its directory's inode number) */ \
	char comm[AP_COMM_LEN];                                                          \
	char name[AP_NAME_CAP];

struct ap_event_head {
	AP_EVENT_HEAD_FIELDS
};

struct ap_event {
	AP_EVENT_HEAD_FIELDS
	char path[AP_PATH_CAP]; /* the path is path[AP_PATH_CAP - path_len ..] */
};

_Static_assert(sizeof(struct ap_event_head) == 88 + AP_NAME_CAP, "ap_event layout");
_Static_assert(sizeof(struct ap_event) == 88 + AP_NAME_CAP + AP_PATH_CAP, "ap_event layout");
_Static_assert(__builtin_offsetof(struct ap_event, cgroup_id) % 8 == 0, "ap_event layout");
_Static_assert(__builtin_offsetof(struct ap_event, path) == sizeof(struct ap_event_head),
	       "ap_event layout");
_Static_assert((AP_PATH_CAP & (AP_PATH_CAP - 1)) == 0 && AP_PATH_CAP > AP_NAME_CAP,
	       "the path field holds a whole name argument and is a power of two");

#endif /* AP_EVENT_H */
