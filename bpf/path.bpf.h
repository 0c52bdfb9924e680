/* SPDX-License-Identifier: MIT */
/*
 * BPF-only: the absolute path of a created file, resolved in the kernel into
 * the record's path field (include/event.h: the path ends at the end of the
 * field, path_len bytes long).
 *
 * The walk goes from a dentry up through d_parent, and at the root of each
 * mount over to the dentry it is mounted on in the parent mount (struct
 * mount, the vfsmount's container: mnt_parent, mnt_mountpoint), until the
 * top of the mount tree: the mount that is its own parent, the root of the
 * mount namespace the file's mount belongs to. The process's own root is
 * not a stop, so a file created inside a chroot shows the path from the
 * namespace's root. mnt_ns of the record names that namespace (its inode
 * number, as in /proc/PID/ns/mnt), so a path from another mount namespace is
 * told apart from the initial namespace's.
 *
 * Bounded twice: at most AP_PATH_DEPTH steps (a component or a mount
 * crossing), and the bytes of the field. A path that does not fit keeps what
 * was written, the components nearest the file (a true suffix of the path,
 * starting with '/'), and is flagged AP_EV_PATH_TRUNCATED.
 *
 * The dentries are read without the rename seqlock: a rename racing the walk
 * can give a path that mixes the old and new names (as d_path's lockless
 * first try could, before it retries).
 */
#ifndef AP_PATH_BPF_H
#define AP_PATH_BPF_H

#if !defined(__bpf__)
#error "path.bpf.h is for BPF programs"
#endif

#include "event.h"
#include "arena/shim.h"

/* The record under construction, in a map value (helpers cannot write into
 * the arena, and the record does not fit on the stack). The slack lets the
 * verifier bound every write of a name into path[] by the value's size. */
struct ap_scratch {
	struct ap_event ev;
	char slack[AP_NAME_CAP];
};

#define AP_AT_FDCWD -100

/* The file behind descriptor fd of task, or NULL. */
static __always_inline struct file *ap_task_file(struct task_struct *task, int fd)
{
	struct fdtable *fdt = task->files->fdt;
	struct file **fds;
	struct file *f = NULL;

	if ((unsigned int)fd >= fdt->max_fds)
		return NULL;
	fds = fdt->fd;
	bpf_probe_read_kernel(&f, sizeof(f), fds + fd);
	if (!f)
		return NULL;
	return bpf_core_cast(f, struct file);
}

static __always_inline struct mount *ap_real_mount(struct vfsmount *vfsmnt)
{
	unsigned long addr = (unsigned long)vfsmnt;

	/* container_of, on an address the verifier sees as a number */
	addr -= bpf_core_field_offset(struct mount, mnt);
	return bpf_core_cast((void *)addr, struct mount);
}

/* Put "/" + name (name_len bytes of the record's name field) at the end of
 * path[]: the part of a path that comes from the caller's argument. An
 * absolute argument goes in as it is (it starts with its own '/'). */
static __always_inline void ap_path_put_arg(struct ap_event *ev)
{
	__u32 len = ev->name_len & (AP_NAME_CAP - 1);
	__u32 pos = AP_PATH_CAP - len;

	bpf_probe_read_kernel(&ev->path[pos & (AP_PATH_CAP - 1)], len, ev->name);
	if (ev->name[0] != '/' && len) {
		pos--;
		ev->path[pos & (AP_PATH_CAP - 1)] = '/';
	}
	ev->path_len = AP_PATH_CAP - pos;
}

/* Prepend the path of (dentry, vfsmnt) to what path[] already holds at its
 * end, and name the mount namespace where the walk ended. */
static __always_inline void ap_path_walk(struct ap_event *ev, struct dentry *dentry,
					 struct vfsmount *vfsmnt)
{
	struct mount *mnt = ap_real_mount(vfsmnt);
	struct dentry *mnt_root = vfsmnt->mnt_root;
	__u32 pos = AP_PATH_CAP - (ev->path_len & (AP_PATH_CAP * 2 - 1));
	bool done = false;
	__u32 i;

	for (i = arena_opaque(0); i < AP_PATH_DEPTH && arena_can_loop; i++) {
		struct dentry *parent;
		const unsigned char *name;
		__u32 len, npos;

		if (dentry == mnt_root) {
			struct mount *up = mnt->mnt_parent;

			if (up == mnt) {
				done = true; /* the top of the mount tree */
				break;
			}
			dentry = mnt->mnt_mountpoint;
			mnt = up;
			mnt_root = up->mnt.mnt_root;
			continue;
		}
		parent = dentry->d_parent;
		if (parent == dentry) {
			/* the root of a file system not mounted here: a
			 * detached or internal mount */
			done = true;
			break;
		}
		len = dentry->d_name.len & (AP_NAME_CAP - 1);
		name = dentry->d_name.name;
		npos = pos - len - 1;
		if (npos > AP_PATH_CAP)
			break; /* does not fit: wrapped below 0 */
		/* address the copy from the checked npos: clang would rebuild it
		 * as pos - len, which older verifiers cannot bound */
		barrier_var(npos);
		ev->path[npos] = '/';
		bpf_probe_read_kernel(&ev->path[npos + 1], len, name);
		pos = npos;
		dentry = parent;
	}
	/* all steps taken: whole if they ended at the top */
	if (!done && !(dentry == mnt_root && mnt->mnt_parent == mnt))
		ev->flags |= AP_EV_PATH_TRUNCATED;
	if (pos == AP_PATH_CAP) {
		/* the root itself */
		pos--;
		ev->path[AP_PATH_CAP - 1] = '/';
	}
	ev->path_len = AP_PATH_CAP - pos;
	ev->mnt_ns = BPF_CORE_READ(mnt, mnt_ns, ns.inum);
}

#endif /* AP_PATH_BPF_H */
