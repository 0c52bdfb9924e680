// SPDX-License-Identifier: GPL-2.0
/*
 * File-creation producer, first choice: the BPF LSM hooks. Loaded on its own
 * after producer.bpf.o, reusing its arena and doorbell, so a kernel that
 * refuses BPF trampolines (EPERM here) costs one failed load, not the run.
 */
#include "common.bpf.h"
#include "producer.bpf.h"
#include "path.bpf.h"
#include "filter.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* The record under construction, one per task: lsm.s programs sleep and may
 * be preempted, so a per-CPU buffer could be shared by two of them. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ap_scratch);
} lsm_scratch SEC(".maps");

/* The mount the new dentry is created on. The inode hooks are not given
 * one: an open's creation runs inside the lookup whose state the task
 * points at (nameidata: its path is the parent directory); mkdir and mknod
 * have finished their lookup, so the mount is taken from the working
 * directory or the root when the dentry is on the same file system. NULL
 * when none of these is it. */
static __always_inline struct vfsmount *lsm_mount(struct task_struct *task, struct dentry *dentry)
{
	struct dentry *parent = dentry->d_parent;
	struct super_block *sb = dentry->d_sb;
	struct nameidata *nd = task->nameidata;
	struct vfsmount *m;

	if (nd && nd->path.dentry == parent)
		return nd->path.mnt;
	m = task->fs->pwd.mnt;
	if (m && m->mnt_sb == sb)
		return m;
	m = task->fs->root.mnt;
	if (m && m->mnt_sb == sb)
		return m;
	return NULL;
}

static __always_inline int emit_dentry(struct dentry *dentry, __u32 mode, __u32 syscall)
{
	struct ap_root __arena *root = ap_root_enabled();
	struct task_struct *task = bpf_get_current_task_btf();
	struct ap_filter_state fst;
	struct vfsmount *mnt;
	struct ap_scratch *sc;
	struct ap_event *ev;
	const unsigned char *name;
	__u64 id;
	long n;

	if (!root)
		return 0;
	sc = bpf_task_storage_get(&lsm_scratch, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!sc)
		return 0;
	ev = &sc->ev;
	id = bpf_get_current_pid_tgid();
	ap_fill_task((struct ap_event_head *)ev, task, id, AP_TRIGGER_LSM, true);
	if (!ap_filter_pass(root, ev->pid, ev->comm) || !ap_filter_begin(root, ev, &fst))
		return 0;
	ap_fill_call(ev, syscall, mode, 0, 0, 0);
	name = BPF_CORE_READ(dentry, d_name.name);
	n = bpf_probe_read_kernel_str(ev->name, sizeof(ev->name), name);
	if (n <= 0)
		n = 1;
	ev->name_len = (n - 1) & (AP_NAME_CAP - 1);
	/* the dentry's parents, from the new dentry up */
	mnt = lsm_mount(task, dentry);
	if (mnt) {
		ap_path_resolve(ev, &sc->pc, dentry, mnt, true);
	} else {
		/* known only up to its file system's root: a suffix */
		ap_path_walk(ev, dentry, task->fs->root.mnt);
		ev->flags |= AP_EV_PATH_TRUNCATED;
		ev->mnt_ns = 0;
	}
	if (!ap_filter_end(root, ev, &fst))
		return 0;
	ap_emit(root, ev, EVQ_PUBLISH_FENCED); /* lsm.s: sleepable */
	return 0;
}

SEC("lsm.s/inode_create")
int BPF_PROG(lsm_inode_create, struct inode *dir, struct dentry *dentry, umode_t mode)
{
	return emit_dentry(dentry, mode, AP_SYS_INODE_CREATE);
}

SEC("lsm.s/inode_mknod")
int BPF_PROG(lsm_inode_mknod, struct inode *dir, struct dentry *dentry, umode_t mode, dev_t dev)
{
	return emit_dentry(dentry, mode, AP_SYS_INODE_MKNOD);
}

/* not lsm.s: the kernel lets sleepable programs attach only to the hooks on
 * its list, and inode_mkdir is not there ("not sleepable"). The same body is
 * right in both kinds: the record is per task and publication is fenced. */
SEC("lsm/inode_mkdir")
int BPF_PROG(lsm_inode_mkdir, struct inode *dir, struct dentry *dentry, umode_t mode)
{
	return emit_dentry(dentry, mode, AP_SYS_INODE_MKDIR);
}
