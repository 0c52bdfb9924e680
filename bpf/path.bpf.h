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

/*
 * The path of the directory the last creation went into, kept so that the
 * next creation in it does not walk and copy its names again: consecutive
 * creations mostly share their directory. A hit still reads the descriptor
 * table and the new file's own name, so it saves the directory's names only
 * (about a tenth of the program's time; README, "Instructions per
 * creation").
 *
 * The cached bytes stand while the walk they came from would give the same
 * bytes now, and a hit checks exactly that, without reading a name:
 * - the directory is the same object: its dentry and inode are at the same
 *   addresses, and the inode has the same number and generation (a freed
 *   dentry's memory given to another directory would also need its inode's
 *   memory, number and generation);
 * - no dentry on the way up was renamed or moved: each one's d_seq is what it
 *   was (d_move and d_exchange, the only writers of d_name and d_parent,
 *   advance it by two; an odd count, a move under way, is never cached);
 * - while a dentry is unchanged, its parent is the same object: a dentry
 *   holds a reference on its parent, so that memory cannot be freed and
 *   reused meanwhile;
 * - every mount crossed is the same mount (address and mnt_id_unique, never
 *   reused), crossed at the same dentry into the same parent, and the walk
 *   ends at the same top (a pivot_root that gives the old top a parent is
 *   seen there).
 * What this leaves: a mount moved away and back onto a mountpoint dentry
 * whose memory was freed and reused in between, which takes CAP_SYS_ADMIN
 * over the mount namespace the path is given in. A rename racing the
 * creation gives the old or the new path, as the uncached walk does.
 *
 * One per CPU on the tracepoints, one per task on LSM (in the scratch
 * record's map value, so no second lookup). Only walks that reached the top
 * in at most AP_PCACHE_STEPS steps and fewer than AP_PCACHE_BYTES bytes are
 * kept.
 */
#define AP_PCACHE_STEPS 16
#define AP_PCACHE_BYTES 256

struct ap_path_cache {
	__u64 node[AP_PCACHE_STEPS]; /* each step's dentry or, crossing, mount */
	__u64 ver[AP_PCACHE_STEPS];  /* its d_seq, or the mount's unique id */
	__u64 dir;                   /* the directory's dentry */
	__u64 mnt;                   /* and the vfsmount it was reached through */
	__u64 dir_inode;
	__u64 dir_ino;
	__u32 dir_gen;
	__u32 valid;
	__u32 steps;
	__u32 len;    /* bytes[0..len): the directory's path ("" for the root) */
	__u32 mnt_ns; /* where the walk ended */
	__u32 pad;
	char bytes[AP_PCACHE_BYTES];
};

/* The record under construction, in a map value (helpers cannot write into
 * the arena, and the record does not fit on the stack). The slack lets the
 * verifier bound every write of a name into path[] by the value's size. */
struct ap_scratch {
	struct ap_event ev;
	char slack[AP_NAME_CAP];
	struct ap_path_cache pc;
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

/* Put "/" + dentry's name before pos in path[]: one step of the walk. false,
 * with nothing written, when it does not fit. */
static __always_inline bool ap_path_put_name(struct ap_event *ev, __u32 *pos,
					     struct dentry *dentry)
{
	__u32 len = dentry->d_name.len & (AP_NAME_CAP - 1);
	const unsigned char *name = dentry->d_name.name;
	__u32 npos = *pos - len - 1;

	if (npos > AP_PATH_CAP)
		return false; /* wrapped below 0 */
	/* address the copy from the checked npos: clang would rebuild it as
	 * pos - len, which older verifiers cannot bound */
	barrier_var(npos);
	ev->path[npos] = '/';
	bpf_probe_read_kernel(&ev->path[npos + 1], len, name);
	*pos = npos;
	return true;
}

/* A mount's identity for the cache: mnt_id_unique is never given twice
 * (6.8 on); mnt_id, where it is all there is, can be. */
static __always_inline __u64 ap_mount_uid(struct mount *mnt)
{
	if (bpf_core_field_exists(mnt->mnt_id_unique))
		return mnt->mnt_id_unique;
	return (__u32)mnt->mnt_id;
}

/* path[] from pos on is the whole path: set path_len (the root alone when
 * nothing was written). */
static __always_inline void ap_path_finish(struct ap_event *ev, __u32 pos)
{
	if (pos == AP_PATH_CAP) {
		pos--;
		ev->path[AP_PATH_CAP - 1] = '/';
	}
	ev->path_len = AP_PATH_CAP - pos;
}

/* The walk from (dentry, vfsmnt), prepended to path[pos..], taken steps of
 * the AP_PATH_DEPTH already taken. Returns whether it reached the top (a
 * path that did not is flagged). */
static __always_inline bool ap_path_walk_from(struct ap_event *ev, __u32 *posp,
					      struct dentry *dentry, struct vfsmount *vfsmnt,
					      __u32 taken)
{
	struct mount *mnt = ap_real_mount(vfsmnt);
	struct dentry *mnt_root = vfsmnt->mnt_root;
	__u32 pos = *posp;
	bool done = false;
	__u32 i;

	for (i = arena_opaque(taken); i < AP_PATH_DEPTH && arena_can_loop; i++) {
		struct dentry *parent;

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
		if (!ap_path_put_name(ev, &pos, dentry))
			break;
		dentry = parent;
	}
	/* all steps taken: whole if they ended at the top */
	if (!done && dentry == mnt_root && mnt->mnt_parent == mnt)
		done = true;
	if (!done)
		ev->flags |= AP_EV_PATH_TRUNCATED;
	ev->mnt_ns = BPF_CORE_READ(mnt, mnt_ns, ns.inum);
	*posp = pos;
	return done;
}

/* Prepend the path of (dentry, vfsmnt) to what path[] already holds at its
 * end, and name the mount namespace where the walk ended. */
static __always_inline void ap_path_walk(struct ap_event *ev, struct dentry *dentry,
					 struct vfsmount *vfsmnt)
{
	__u32 pos = AP_PATH_CAP - (ev->path_len & (AP_PATH_CAP * 2 - 1));

	ap_path_walk_from(ev, &pos, dentry, vfsmnt, 0);
	ap_path_finish(ev, pos);
}

/* The steps the walk from (dentry, vfsmnt) takes, each one's dentry (or
 * mount, crossing) and its version (d_seq, or the mount's unique id):
 * written into pc with store, else compared with what pc holds. Returns the
 * number of steps to the top, or -1: more than AP_PCACHE_STEPS, a dentry
 * being moved (odd d_seq), or (comparing) a step that differs. No name is
 * read. */
static __always_inline int ap_path_chain(struct ap_path_cache *pc, struct dentry *dentry,
					 struct vfsmount *vfsmnt, bool store)
{
	struct mount *mnt = ap_real_mount(vfsmnt);
	struct dentry *mnt_root = vfsmnt->mnt_root;
	__u32 i;

	for (i = arena_opaque(0); i < AP_PCACHE_STEPS + 1 && arena_can_loop; i++) {
		__u64 node, ver;
		__u32 k;

		if (dentry == mnt_root) {
			struct mount *up = mnt->mnt_parent;

			if (up == mnt)
				return i; /* the top */
			node = (__u64)mnt;
			ver = ap_mount_uid(mnt);
			dentry = mnt->mnt_mountpoint;
			mnt = up;
			mnt_root = up->mnt.mnt_root;
		} else {
			struct dentry *parent;

			/* read before the parent it vouches for (x86-64 keeps
			 * loads in order) */
			ver = dentry->d_seq.seqcount.sequence;
			parent = dentry->d_parent;
			if (parent == dentry)
				return i; /* a file system's own root */
			if (ver & 1)
				return -1;
			node = (__u64)dentry;
			dentry = parent;
		}
		/* index from the checked counter itself, not from a pointer
		 * clang would step along the arrays */
		k = i;
		barrier_var(k);
		if (k >= AP_PCACHE_STEPS)
			return -1;
		if (store) {
			pc->node[k] = node;
			pc->ver[k] = ver;
		} else if (pc->node[k] != node || pc->ver[k] != ver) {
			return -1;
		}
	}
	return -1;
}

/* Make pc name the directory dentry (whose inode is inode), seen through
 * vfsmnt; ap_path_cache_is checks exactly these fields. */
static __always_inline void ap_path_cache_name_dir(struct ap_path_cache *pc, struct dentry *dentry,
						   struct vfsmount *vfsmnt, struct inode *inode)
{
	pc->dir = (__u64)dentry;
	pc->mnt = (__u64)vfsmnt;
	pc->dir_inode = (__u64)inode;
	pc->dir_ino = inode->i_ino;
	pc->dir_gen = inode->i_generation;
}

/* Whether pc holds the directory dentry, seen through vfsmnt. */
static __always_inline bool ap_path_cache_is(struct ap_path_cache *pc, struct dentry *dentry,
					     struct vfsmount *vfsmnt, struct inode *inode)
{
	return pc->dir == (__u64)dentry && pc->mnt == (__u64)vfsmnt &&
	       pc->dir_inode == (__u64)inode && pc->dir_ino == inode->i_ino &&
	       pc->dir_gen == inode->i_generation;
}

/* Prepend the path of (dentry, vfsmnt), as ap_path_walk, through the cache
 * pc. With leaf, dentry is what was just created: its own name is put first
 * and its parent is the directory looked up in the cache, since the parent
 * is what repeats from one creation to the next. A miss takes the walk
 * between two readings of its chain, as a seqlock reader does, and keeps
 * the bytes only when both agree. */
static __always_inline void ap_path_resolve(struct ap_event *ev, struct ap_path_cache *pc,
					    struct dentry *dentry, struct vfsmount *vfsmnt,
					    bool leaf)
{
	__u32 pos = AP_PATH_CAP - (ev->path_len & (AP_PATH_CAP * 2 - 1));
	__u32 start, len, npos;
	struct inode *inode;
	bool cache = true;
	__u32 taken = 0;
	int steps;

	if (leaf) {
		struct dentry *parent = dentry->d_parent;

		if (dentry != vfsmnt->mnt_root && parent != dentry &&
		    ap_path_put_name(ev, &pos, dentry)) {
			dentry = parent;
			taken = 1;
		} else {
			cache = false; /* a mount's root, or too long: walked as is */
		}
	}
	inode = dentry->d_inode;
	if (!inode)
		cache = false;
	if (cache && pc->valid && ap_path_cache_is(pc, dentry, vfsmnt, inode) &&
	    ap_path_chain(pc, dentry, vfsmnt, false) == (int)pc->steps) {
		len = pc->len & (AP_PCACHE_BYTES - 1);
		npos = pos - len;
		if (npos <= AP_PATH_CAP) {
			barrier_var(npos);
			bpf_probe_read_kernel(&ev->path[npos], len, pc->bytes);
			ev->mnt_ns = pc->mnt_ns;
			ap_path_finish(ev, npos);
			return;
		}
	}
	steps = -1;
	if (cache) {
		pc->valid = 0;
		steps = ap_path_chain(pc, dentry, vfsmnt, true);
	}
	start = pos;
	if (ap_path_walk_from(ev, &pos, dentry, vfsmnt, taken) && steps >= 0) {
		len = start - pos;
		if (len < AP_PCACHE_BYTES && ap_path_chain(pc, dentry, vfsmnt, false) == steps) {
			len &= AP_PCACHE_BYTES - 1;
			bpf_probe_read_kernel(pc->bytes, len, &ev->path[pos & (AP_PATH_CAP - 1)]);
			pc->len = len;
			pc->steps = steps;
			pc->mnt_ns = ev->mnt_ns;
			ap_path_cache_name_dir(pc, dentry, vfsmnt, inode);
			pc->valid = 1;
		}
	}
	ap_path_finish(ev, pos);
}

#endif /* AP_PATH_BPF_H */
