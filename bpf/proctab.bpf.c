// SPDX-License-Identifier: GPL-2.0
/*
 * The process table's kernel side (include/proc.h): the scheduler's process
 * tracepoints keep an arena hash of pid -> struct ap_proc current.
 *   fork: a new entry, from the pools (these programs never sleep: every
 *         allocation is ARENA_NOSLEEP_ONLY, an empty pool is counted);
 *   exec: the entry's comm and executable path, under its sequence word;
 *   exit: the key deleted and the entry retired through the epochs, so a
 *         reader still holding it reads valid memory until it leaves; while
 *         a reader formats events with their process context (keep), the
 *         entry is marked exited and handed to that reader instead, which
 *         deletes it once no queued event can need it (include/proc.h).
 * The loader makes this object reuse the session's arena map and attaches it
 * once the root names the table (root->proc.table).
 */
#define ARENA_NOSLEEP_ONLY 1
#include "common.bpf.h"
#include "arena_map.bpf.h"
#include "ds/registry.h"
#include "root.h"
#include "path.bpf.h"

char LICENSE[] SEC("license") = "GPL";

_Static_assert(AP_PROC_EXE_CAP == AP_PATH_CAP, "exe[] holds what the path walker writes");

/* The path walker writes into an event record (helpers cannot write into the
 * arena, and the record does not fit on the stack); the entry gets a copy. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ap_scratch);
} proc_scratch SEC(".maps");

/* The path of file, walked into the CPU's scratch record; NULL when there is
 * no file or no scratch. */
static __always_inline struct ap_event *exe_walk(struct file *f)
{
	__u32 zero = 0;
	struct ap_event *ev;

	if (!f)
		return NULL;
	ev = bpf_map_lookup_elem(&proc_scratch, &zero);
	if (!ev)
		return NULL;
	ev->path_len = 0;
	ev->flags = 0;
	ap_path_walk(ev, f->f_path.dentry, f->f_path.mnt);
	return ev;
}

/* The walked path (or none) into the entry: all of exe[], right-aligned as
 * the walker left it, word by word. */
static __always_inline void exe_store(struct ap_proc __arena *e, struct ap_event *ev)
{
	__u64 __arena *d = (__u64 __arena *)e->exe;
	__u32 i;

	if (!ev) {
		e->exe_len = 0;
		e->flags &= ~AP_PROC_EXE_TRUNCATED;
		return;
	}
	for (i = 0; i < AP_PROC_EXE_CAP / 8; i++)
		d[i] = *(__u64 *)&ev->path[i * 8];
	e->exe_len = ev->path_len;
	if (ev->flags & AP_EV_PATH_TRUNCATED)
		e->flags |= AP_PROC_EXE_TRUNCATED;
	else
		e->flags &= ~AP_PROC_EXE_TRUNCATED;
}

static __always_inline struct file *task_exe(struct task_struct *t)
{
	struct mm_struct *mm = t->mm;

	if (!mm)
		return NULL; /* a kernel thread */
	return mm->exe_file;
}

/* The task's cgroup v2 id (its default-hierarchy cgroup's kernfs id, as
 * bpf_get_current_cgroup_id gives for the current task). */
static __always_inline __u64 task_cgroup_id(struct task_struct *t)
{
	return t->cgroups->dfl_cgrp->kn->id;
}

/* One writer at a time per entry: seq goes from even to odd by
 * compare-and-swap (readers retry while it is odd), and back to even at the
 * end. 0 when another writer kept it odd: the caller leaves the entry. */
static __always_inline int entry_lock(struct ap_proc __arena *e)
{
	__u64 s;
	int i;

	for (i = 0; i < 64 && arena_can_loop; i++) {
		s = arena_atomic_load(&e->seq, ARENA_ACQUIRE);
		if (s & 1)
			continue;
		if (arena_atomic_cmpxchg(&e->seq, s, s + 1, ARENA_ACQ_REL) == s)
			return 1;
	}
	return 0;
}

static __always_inline void entry_unlock(struct ap_proc __arena *e)
{
	__sync_fetch_and_add(&e->seq, 1); /* a full barrier: the writes come first */
}

/* The hash operations, each verified once as a global function. */
__attribute__((noinline)) int ap_proc_insert(struct ds_ctx *c, __u64 ds, __u64 key, __u64 val)
{
	if (!c)
		return DS_INVALID;
	return ds_hash_insert(c, ARENA_PTR(struct ds_hash, ds), key, val);
}

__attribute__((noinline)) int ap_proc_delete(struct ds_ctx *c, __u64 ds, __u64 key, __u64 *val)
{
	if (!c || !val)
		return DS_INVALID;
	return ds_hash_delete(c, ARENA_PTR(struct ds_hash, ds), key, val);
}

__attribute__((noinline)) int ap_proc_search(struct ds_ctx *c, __u64 ds, __u64 key, __u64 *val)
{
	if (!c || !val)
		return DS_INVALID;
	return ds_hash_search(c, ARENA_PTR(struct ds_hash, ds), key, val);
}

enum { SET_CGROUP, SET_PPID };

/* One field of pid's entry set under its lock: the cgroup id or the parent.
 * DS_NOT_FOUND when the table does not hold pid, DS_BUSY when another
 * writer held the entry. */
__attribute__((noinline)) int ap_proc_set(struct ds_ctx *c, __u64 ds, __u64 pid, __u64 what, __u64 v)
{
	struct ap_proc __arena *e;
	__u64 addr = 0;

	if (!c)
		return DS_INVALID;
	if (ds_hash_search(c, ARENA_PTR(struct ds_hash, ds), pid, &addr) != DS_OK || !addr)
		return DS_NOT_FOUND;
	e = ARENA_PTR(struct ap_proc, addr);
	if (!entry_lock(e))
		return DS_BUSY;
	if (what == SET_CGROUP)
		e->cgroup_id = v;
	else
		e->ppid = v;
	entry_unlock(e);
	return DS_OK;
}

/* Tasks linked on one list walked: a thread group's threads, a task's children. */
#define AP_PROC_LIST_MAX 512

/* The table and a context on its space, entered; NULL when there is no
 * table or the CPU's epoch record is busy (counted). */
static __always_inline struct ap_root __arena *proc_enter(struct ds_ctx *c)
{
	struct ap_root __arena *root = AP_ROOT();
	struct ds_head __arena *h;
	__u64 table;

	arena_use_map();
	if (root->magic != AP_ROOT_MAGIC)
		return NULL;
	table = root->proc.table;
	if (!table)
		return NULL;
	h = ARENA_PTR(struct ds_head, table);
	if (ds_head_check(h, DS_TYPE_hash))
		return NULL;
	c->heap = ARENA_PTR(struct arena_heap, h->heap);
	c->ebr = ARENA_PTR(struct ebr_domain, h->ebr);
	c->rec = ebr_cpu_record(c->ebr);
	c->rng = 1;
	c->flags = ARENA_NOSLEEP;
	c->side = DS_SIDE_KERNEL;
	c->held = 0;
	if (ds_enter(c)) {
		__sync_fetch_and_add(&root->proc.busy, 1);
		return NULL;
	}
	return root;
}

static __always_inline void copy_comm(struct ap_proc __arena *e, struct task_struct *t)
{
	__u64 __arena *d = (__u64 __arena *)e->comm;

	arena_store_once(&d[0], *(__u64 *)&t->comm[0]);
	arena_store_once(&d[1], *(__u64 *)&t->comm[8]);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(proc_fork, struct task_struct *parent, struct task_struct *child)
{
	struct ap_root __arena *root;
	struct ap_proc __arena *e;
	struct ds_ctx c;
	__u64 old = 0, key = child->pid;
	int r;

	root = proc_enter(&c);
	if (!root)
		return 0;
	e = (struct ap_proc __arena *)arena_heap_alloc(c.heap, sizeof(struct ap_proc), ARENA_NOSLEEP);
	if (!e) {
		__sync_fetch_and_add(&root->proc.nomem, 1);
		goto out;
	}
	arena_store_once(&e->seq, 0);
	e->pid = child->pid;
	e->tgid = child->tgid;
	e->ppid = child->real_parent->tgid;
	e->flags = 0;
	e->start_ns = child->start_time;
	e->uid = child->cred->uid.val;
	e->euid = child->cred->euid.val;
	e->gid = child->cred->gid.val;
	e->mnt_ns = child->nsproxy->mnt_ns->ns.inum;
	e->pid_ns = child->nsproxy->pid_ns_for_children->ns.inum;
	/* the child's own: clone3(CLONE_INTO_CGROUP) starts it elsewhere than its parent */
	e->cgroup_id = task_cgroup_id(child);
	e->execs = 0;
	copy_comm(e, child);
	exe_store(e, exe_walk(task_exe(child)));
	r = ap_proc_insert(&c, root->proc.table, key, ARENA_ADDR(e));
	if (r == DS_EXISTS) {
		if (ap_proc_delete(&c, root->proc.table, key, &old) == DS_OK && old) {
			struct ap_proc __arena *o = ARENA_PTR(struct ap_proc, old);

			if (o->flags & AP_PROC_EXITED) {
				/* an exited entry the reader still holds: it leaves
				 * the key here, the reader retires it */
				__sync_fetch_and_add(&root->proc.reused, 1);
			} else {
				/* the pid's last task left no exit behind */
				__sync_fetch_and_add(&root->proc.stale, 1);
				ds_retire(&c, ARENA_PTR(void, old));
			}
		}
		r = ap_proc_insert(&c, root->proc.table, key, ARENA_ADDR(e));
	}
	if (r == DS_OK) {
		__sync_fetch_and_add(&root->proc.forks, 1);
	} else {
		arena_free(e);
		__sync_fetch_and_add(&root->proc.nomem, 1);
	}
out:
	ds_exit(&c);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(proc_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct ap_root __arena *root;
	struct ap_proc __arena *e;
	struct ap_event *ev;
	struct ds_ctx c;
	__u64 addr = 0;

	root = proc_enter(&c);
	if (!root)
		return 0;
	/* walked before the entry is marked busy, so readers retry briefly */
	ev = exe_walk(bprm->file);
	if (ap_proc_search(&c, root->proc.table, p->pid, &addr) != DS_OK || !addr) {
		__sync_fetch_and_add(&root->proc.missing, 1);
		goto out;
	}
	e = ARENA_PTR(struct ap_proc, addr);
	if (!entry_lock(e)) {
		__sync_fetch_and_add(&root->proc.busy, 1);
		goto out;
	}
	copy_comm(e, p);
	exe_store(e, ev);
	/* what an exec may have changed since the fork, or what changed before
	 * it without an event of its own: set-user-ID and set-group-ID, a new
	 * mount namespace (unshare(1) then exec), a new parent (reparenting) */
	e->uid = p->cred->uid.val;
	e->euid = p->cred->euid.val;
	e->gid = p->cred->gid.val;
	e->mnt_ns = p->nsproxy->mnt_ns->ns.inum;
	e->cgroup_id = task_cgroup_id(p);
	e->ppid = p->real_parent->tgid;
	e->execs += 1;
	entry_unlock(e);
	__sync_fetch_and_add(&root->proc.execs, 1);
out:
	ds_exit(&c);
	return 0;
}

/* Mark e exited and push it onto the reader's list: 1. -1 when it was
 * marked already (this task's entry was never made; the pid's entry is an
 * older task's, which the reader holds): nothing to do. 0 when the push kept
 * losing races: the caller deletes it at once. */
static __always_inline int keep_exited(struct ap_root __arena *root, struct ap_proc __arena *e)
{
	__u64 top, seen, addr = ARENA_ADDR(e);
	int i;

	if (e->flags & AP_PROC_EXITED)
		return -1;
	if (!entry_lock(e))
		return 0;
	e->flags |= AP_PROC_EXITED;
	e->exit_ns = bpf_ktime_get_ns();
	/* after the lock's full barrier: every ticket taken before the exit is below */
	e->exit_mark = arena_atomic_load(&root->evq.tail, ARENA_ACQUIRE);
	entry_unlock(e);
	for (i = 0; i < 64 && arena_can_loop; i++) {
		top = arena_atomic_load(&root->proc.exited, ARENA_ACQUIRE);
		arena_store_once(&e->exit_next, top);
		seen = arena_atomic_cmpxchg(&root->proc.exited, top, addr, ARENA_ACQ_REL);
		if (seen == top)
			return 1;
	}
	return 0;
}

/*
 * A task moved to another cgroup (cgroup.procs, cgroup.threads): this
 * tracepoint follows a migration that succeeded, once for the task named,
 * with threadgroup set when its whole thread group moved. Each moved task's
 * entry takes its cgroup v2 id as the task holds it now (a move in a v1
 * hierarchy leaves that unchanged).
 */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(proc_cgroup, struct cgroup *dst, const char *path, struct task_struct *task,
	     bool threadgroup)
{
	struct ap_root __arena *root;
	struct list_head *head, *pos;
	struct task_struct *t;
	struct ds_ctx c;
	__u64 head_addr;
	int i;

	root = proc_enter(&c);
	if (!root)
		return 0;
	ap_proc_set(&c, root->proc.table, task->pid, SET_CGROUP, task_cgroup_id(task));
	if (!threadgroup)
		goto out;
	head = &task->signal->thread_head;
	head_addr = (__u64)head;
	pos = head->next;
	for (i = 0; i < AP_PROC_LIST_MAX && (__u64)pos != head_addr && arena_can_loop; i++) {
		t = bpf_core_cast((void *)((__u64)pos - bpf_core_field_offset(struct task_struct, thread_node)),
				  struct task_struct);
		if (t->pid != task->pid)
			ap_proc_set(&c, root->proc.table, t->pid, SET_CGROUP, task_cgroup_id(t));
		pos = t->thread_node.next;
	}
out:
	ds_exit(&c);
	return 0;
}

/*
 * The process that will adopt the children of father, whose last thread is
 * exiting: what the kernel's exit path chooses a moment later (kernel/exit.c,
 * find_new_reaper), read now, as no tracepoint follows the reparenting: the
 * nearest ancestor in the same pid namespace that is a child subreaper
 * (prctl(PR_SET_CHILD_SUBREAPER)) with a thread still alive, else the pid
 * namespace's init. 0 when father is that init (the namespace ends).
 */
static __always_inline __u32 new_parent(struct task_struct *father)
{
	struct pid *pid = father->thread_pid;
	unsigned int level = pid->level;
	struct pid_namespace *ns = NULL;
	struct task_struct *r;
	__u32 reaper;
	int i;

	if (BPF_CORE_READ_BITFIELD_PROBED(father->signal, has_child_subreaper)) {
		r = father->real_parent;
		for (i = 0; i < 64 && arena_can_loop; i++) {
			if (!r || r->pid == 0 || r->thread_pid->level != level)
				break;
			if (BPF_CORE_READ_BITFIELD_PROBED(r->signal, is_child_subreaper) &&
			    r->signal->live.counter > 0)
				return r->tgid;
			r = r->real_parent;
		}
	}
	if (level >= 32)
		return 0;
	bpf_probe_read_kernel(&ns, sizeof(ns),
			      (void *)((__u64)pid + bpf_core_field_offset(struct pid, numbers) +
				       level * sizeof(struct upid) + bpf_core_field_offset(struct upid, ns)));
	reaper = BPF_CORE_READ(ns, child_reaper, tgid);
	return reaper == (__u32)father->tgid ? 0 : reaper;
}

/* Every child of father (its last thread, exiting) gets its new parent. */
static __always_inline void reparent_children(struct ds_ctx *c, struct ap_root __arena *root,
					      struct task_struct *father)
{
	struct list_head *head = &father->children, *pos = head->next;
	__u64 head_addr = (__u64)head;
	struct task_struct *t;
	__u32 reaper;
	int i;

	if ((__u64)pos == head_addr)
		return; /* no children: nothing to look up */
	reaper = new_parent(father);
	if (!reaper)
		return;
	for (i = 0; i < AP_PROC_LIST_MAX && (__u64)pos != head_addr && arena_can_loop; i++) {
		t = bpf_core_cast((void *)((__u64)pos - bpf_core_field_offset(struct task_struct, sibling)),
				  struct task_struct);
		ap_proc_set(c, root->proc.table, t->pid, SET_PPID, reaper);
		pos = t->sibling.next;
	}
}

/* sched_process_exit as kernels since 6.16 declare it, with group_dead; a
 * kernel whose tracepoint has only the task refuses a read of ctx[1]. */
typedef void (*btf_trace_sched_process_exit___group)(void *, struct task_struct *, bool);

/* Whether p's exit ends its thread group. Without the argument: do_exit
 * lowers signal->live before the tracepoint fires, so 0 means the last
 * thread. Two threads exiting together may both read 0 and both reparent
 * the children, to the same adopter: harmless. */
static __always_inline bool exit_group_dead(unsigned long long *ctx, struct task_struct *p)
{
	if (bpf_core_type_matches(btf_trace_sched_process_exit___group))
		return (bool)ctx[1];
	return BPF_CORE_READ(p, signal, live.counter) == 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(proc_exit, struct task_struct *p)
{
	struct ap_root __arena *root;
	struct ds_ctx c;
	__u64 addr = 0;

	root = proc_enter(&c);
	if (!root)
		return 0;
	/* while another thread of the group lives, children move to it: their
	 * parent process (a tgid) stays the same */
	if (exit_group_dead(ctx, p))
		reparent_children(&c, root, p);
	if (root->proc.keep &&
	    ap_proc_search(&c, root->proc.table, p->pid, &addr) == DS_OK && addr) {
		int k = keep_exited(root, ARENA_PTR(struct ap_proc, addr));

		if (k) {
			__sync_fetch_and_add(k > 0 ? &root->proc.exits : &root->proc.missing, 1);
			goto out;
		}
	}
	addr = 0;
	if (ap_proc_delete(&c, root->proc.table, p->pid, &addr) == DS_OK && addr) {
		ds_retire(&c, ARENA_PTR(void, addr));
		__sync_fetch_and_add(&root->proc.exits, 1);
	} else {
		__sync_fetch_and_add(&root->proc.missing, 1);
	}
out:
	ds_exit(&c);
	return 0;
}
