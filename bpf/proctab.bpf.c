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
	/* a child starts in its parent's cgroup */
	e->cgroup_id = bpf_get_current_cgroup_id();
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
	/* odd while rewritten; the fetch-and-adds are full barriers */
	__sync_fetch_and_add(&e->seq, 1);
	copy_comm(e, p);
	exe_store(e, ev);
	e->euid = p->cred->euid.val;
	e->execs += 1;
	__sync_fetch_and_add(&e->seq, 1);
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
	__sync_fetch_and_add(&e->seq, 1);
	e->flags |= AP_PROC_EXITED;
	e->exit_ns = bpf_ktime_get_ns();
	/* after the full barrier: every ticket taken before the exit is below */
	e->exit_mark = arena_atomic_load(&root->evq.tail, ARENA_ACQUIRE);
	__sync_fetch_and_add(&e->seq, 1);
	for (i = 0; i < 64 && arena_can_loop; i++) {
		top = arena_atomic_load(&root->proc.exited, ARENA_ACQUIRE);
		arena_store_once(&e->exit_next, top);
		seen = arena_atomic_cmpxchg(&root->proc.exited, top, addr, ARENA_ACQ_REL);
		if (seen == top)
			return 1;
	}
	return 0;
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
