// SPDX-License-Identifier: GPL-2.0
/*
 * File-creation producer, first choice: the BPF LSM hooks. Loaded on its own
 * after producer.bpf.o, reusing its arena and doorbell, so a kernel that
 * refuses BPF trampolines (EPERM here) costs one failed load, not the run.
 */
#include "common.bpf.h"
#include "producer.bpf.h"

char LICENSE[] SEC("license") = "GPL";

static __always_inline int emit_dentry(struct dentry *dentry, __u32 mode, __u32 syscall)
{
	struct ap_root __arena *root = ap_root_enabled();
	const unsigned char *name;
	struct ap_event ev;
	long n;

	if (!root)
		return 0;
	__builtin_memset(&ev, 0, sizeof(ev));
	ap_fill_task(&ev, AP_TRIGGER_LSM, true);
	if (!ap_filter_pass(root, ev.pid, ev.comm))
		return 0;
	ev.syscall = syscall;
	ev.mode = mode;
	name = BPF_CORE_READ(dentry, d_name.name);
	n = bpf_probe_read_kernel_str(ev.name, sizeof(ev.name), name);
	if (n <= 0)
		n = 1;
	ev.name_len = (n - 1) & (AP_NAME_CAP - 1);
	ap_emit(root, &ev, EVQ_PUBLISH_FENCED); /* lsm.s: sleepable */
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

SEC("lsm.s/inode_mkdir")
int BPF_PROG(lsm_inode_mkdir, struct inode *dir, struct dentry *dentry, umode_t mode)
{
	return emit_dentry(dentry, mode, AP_SYS_INODE_MKDIR);
}
