// SPDX-License-Identifier: MIT
/*
 * pipeline._ds.DsArena: the arena data structures from Python.
 *
 * The owner process loads bpf/ds_ops.bpf.c (one SEC("syscall") ds_run_NAME
 * per registry line), which maps its arena at ARENA_BASE, and lays out the
 * root page and the data-structure space (ds.h). Another process (a pool
 * worker started with 'spawn') opens the pins instead: it maps the same map
 * at the same address, so every pointer in the arena is valid as is, and
 * runs kernel batches through the pinned programs. The pins may be a capture
 * session's: its arena holds the event queue and a space beside it (root.h).
 * In the process that holds a capture session, a DsArena is bound to the
 * session (dsshare.h): no mapping and no programs of its own, the session's.
 *
 * Every Python thread that operates gets its own struct ds_ctx (its own
 * epoch record and heap slot, ds_user_attach) on first use, kept in a
 * thread-local: the epoch protocol needs one record per thread, and a
 * thread that exits is expired by the next advance (include/arena/epoch.h).
 *
 * The hot paths (exec, run_kernel) take whole buffers and release the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "coreutil.h"
#include "ds.h"
#include "dsops.h"
#include "runloop.h"
#include "ds/trim.h"
#include "dsshare.h"
#include "proctab.h"
#include "root.h"

#define ERR_LEN 512
/* ops per bpf_prog_test_run_opts call: a long kernel loop is not preempted
 * and starves the other side (docs/platform.md) */
#define KERNEL_PER_CALL_DEFAULT 4096
#define KERNEL_PER_CALL_MAX DS_BATCH_MAX
#define ITERATE_MAX (1ULL << 24)
/* pairs in one arena output buffer: a large object is at most
 * ARENA_LARGE_MAX_PAGES pages */
#define KERNEL_OUT_MAX (1ULL << 19)

typedef struct {
	PyObject_HEAD
	struct ds_ops_bpf *skel; /* the owner's; NULL in an attached process */
	int map_fd;              /* attached: the pinned arena map */
	int prog_fd[DS_TYPES_END];
	int own_prog_fds;        /* attached: prog_fd[] are ours to close */
	int trim_fd;             /* ds_trim, -1 when the pins lack it */
	uint64_t pages;
	uint64_t creator_pid;
	struct ds_space *sp;
	/* bound to a capture session: its share and the session object, whose
	 * reference keeps the share's memory */
	struct ap_ds_share *share;
	PyObject *session;
	uint64_t gen; /* tells this arena's thread contexts from a closed one's */
	int open;
	int pinned;
	char pin_dir[256];
} DsArenaObject;

/* One arena at ARENA_BASE per process: the one mapped now, if any. */
static DsArenaObject *mapped_arena;
static uint64_t next_gen = 1;

/* The calling thread's context on the arena of generation tls_gen. */
static __thread uint64_t tls_gen;
static __thread struct ds_ctx tls_ctx;

static int arena_ready(DsArenaObject *self)
{
	if (!self->open) {
		PyErr_SetString(PyExc_ValueError, "the arena is closed");
		return 0;
	}
	if (self->share && !self->share->alive) {
		PyErr_SetString(PyExc_ValueError, "the arena is closed: its pipeline session was closed");
		return 0;
	}
	return 1;
}

/* The calling thread's context, attached on first use. Called with the GIL
 * held (it may raise). */
static struct ds_ctx *thread_ctx(DsArenaObject *self)
{
	if (tls_gen == self->gen)
		return &tls_ctx;
	/* a context on an arena that was closed: its memory is gone, forget it
	 * (the heap slot it owned went with that arena) */
	arena_thread_slot.heap = 0;
	if (ds_user_attach(self->sp, &tls_ctx) != DS_OK) {
		ap_raise(EAGAIN, "all %d user epoch records of the arena are held by live threads", EBR_USERS);
		return NULL;
	}
	tls_gen = self->gen;
	return &tls_ctx;
}

/*
 * The calling thread's output buffer in the arena, for kernel pops and
 * iterates (the kernel writes only into the arena). Kept between calls: a
 * multi-page object comes from fresh pages only and its pages come back one
 * by one, so allocating one per call would use up the fresh pages.
 */
static __thread struct ds_kv *tls_kout;
static __thread uint64_t tls_kout_cap, tls_kout_gen;

static struct ds_kv *kernel_out(DsArenaObject *self, uint64_t cap)
{
	if (tls_kout_gen != self->gen) {
		tls_kout = NULL; /* the last one was in an arena that is gone */
		tls_kout_cap = 0;
		tls_kout_gen = self->gen;
	}
	if (cap <= tls_kout_cap)
		return tls_kout;
	if (tls_kout)
		arena_free(tls_kout);
	cap = cap < 4096 ? 4096 : cap;
	tls_kout = arena_heap_alloc(&self->sp->heap, cap * sizeof(struct ds_kv), 0);
	tls_kout_cap = tls_kout ? cap : 0;
	return tls_kout;
}

/* The calling thread's history buffer in the arena, for kernel batches that
 * record (struct ds_batch.hist); kept between calls like kernel_out. */
static __thread struct ds_hist_rec *tls_khist;
static __thread uint64_t tls_khist_cap, tls_khist_gen;

static struct ds_hist_rec *kernel_hist(DsArenaObject *self, uint64_t cap)
{
	if (tls_khist_gen != self->gen) {
		tls_khist = NULL;
		tls_khist_cap = 0;
		tls_khist_gen = self->gen;
	}
	if (cap <= tls_khist_cap)
		return tls_khist;
	if (tls_khist)
		arena_free(tls_khist);
	cap = cap < KERNEL_PER_CALL_DEFAULT ? KERNEL_PER_CALL_DEFAULT : cap;
	tls_khist = arena_heap_alloc(&self->sp->heap, cap * sizeof(struct ds_hist_rec), 0);
	tls_khist_cap = tls_khist ? cap : 0;
	return tls_khist;
}

/* Is [addr, addr + len) inside the space's pages? Guards every address that
 * comes from Python before it is dereferenced. */
static int in_space(DsArenaObject *self, uint64_t addr, uint64_t len)
{
	uint64_t lo = ARENA_PAGE_ADDR(self->sp->first_page);
	uint64_t hi = ARENA_PAGE_ADDR(self->sp->first_page + self->sp->npages);

	return addr >= lo && addr < hi && len <= hi - addr;
}

/* Check that ds is a live instance of the registered type; raise if not. */
static int check_instance(DsArenaObject *self, uint64_t ds, unsigned int type)
{
	if (!ds_meta_of(type)) {
		ap_raise(EINVAL, "no registered data structure has type id %u", type);
		return -1;
	}
	if (!in_space(self, ds, sizeof(struct ds_head)) ||
	    ds_head_check((struct ds_head *)ds, type) != DS_OK) {
		ap_raise(EINVAL, "%#llx is not a %s instance in this arena", (unsigned long long)ds,
			   ds_meta_of(type)->name);
		return -1;
	}
	return 0;
}

static void release(DsArenaObject *self);
static void unpin_files(const char *dir);

/* ---- owner: load ds_ops, lay out the root page and the space ---- */

static int open_owner(DsArenaObject *self, uint64_t pages, unsigned int pool_pages, int poison, char *err)
{
	struct ap_ds_root *root;
	unsigned int t;
	int ret, i;

	ret = ap_ds_ops_load(&self->skel, pages, err, ERR_LEN);
	if (ret)
		return ret;
	for (t = 0; t < DS_TYPES_END; t++)
		self->prog_fd[t] = ap_ds_ops_prog_fd(self->skel, t);
	self->trim_fd = bpf_program__fd(self->skel->progs.ds_trim);
	i = libbpf_num_possible_cpus();
	self->sp = ds_space_init(AP_DS_SPACE_FIRST, pages - AP_DS_SPACE_FIRST, i > 0 ? (ap_u32)i : 1, pool_pages,
				 poison ? ARENA_HEAP_POISON : 0);
	if (!self->sp)
		return ap_fail(err, ERR_LEN, EINVAL, "cannot lay out a data-structure space over %llu pages",
			       (unsigned long long)pages);
	root = (struct ap_ds_root *)ARENA_PAGE_ADDR(AP_DS_ROOT_PAGE);
	root->version = 1;
	root->arena_pages = pages;
	root->space_first_page = AP_DS_SPACE_FIRST;
	root->space_pages = pages - AP_DS_SPACE_FIRST;
	root->creator_pid = (uint64_t)getpid();
	self->creator_pid = root->creator_pid;
	/* published last: an attacher that sees the magic sees the rest */
	arena_atomic_store(&root->magic, AP_DS_ROOT_MAGIC, ARENA_RELEASE);
	self->pages = pages;
	return 0;
}

/* ---- attached: map the pinned arena, open the pinned programs ---- */

/* Where the space starts in a mapped arena: a data-structure arena's root
 * (ds.h) or a capture session's (root.h), whose space follows the queue. */
static int find_space(DsArenaObject *self, uint64_t *first)
{
	const struct ap_ds_root *dr = (const struct ap_ds_root *)ARENA_PAGE_ADDR(AP_DS_ROOT_PAGE);
	const struct ap_root *pr = (const struct ap_root *)(uintptr_t)(ARENA_BASE + ARENA_ROOT_OFFSET);
	uint64_t magic = arena_atomic_load(&dr->magic, ARENA_ACQUIRE), npages;

	if (magic == AP_DS_ROOT_MAGIC) {
		*first = dr->space_first_page;
		npages = dr->space_pages;
		self->creator_pid = dr->creator_pid;
	} else if (magic == AP_ROOT_MAGIC && pr->version >= 2) {
		*first = pr->ds_first_page;
		npages = pr->ds_pages;
		self->creator_pid = pr->creator_pid;
	} else {
		return -EINVAL;
	}
	if (!npages || *first < AP_DS_SPACE_FIRST || *first > self->pages || npages > self->pages - *first)
		return -EINVAL;
	return 0;
}

static int open_pinned(DsArenaObject *self, const char *dir, char *err)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);
	uint64_t first;
	char path[320];
	void *p;
	int ret;

	if (strlen(dir) >= sizeof(self->pin_dir)) {
		snprintf(err, ERR_LEN, "pin directory name too long");
		return -ENAMETOOLONG;
	}
	snprintf(path, sizeof(path), "%s/arena", dir);
	self->map_fd = bpf_obj_get(path);
	if (self->map_fd < 0) {
		ret = -errno;
		snprintf(err, ERR_LEN, "cannot open the pinned arena %s: %s", path, strerror(errno));
		return ret;
	}
	memset(&info, 0, sizeof(info));
	ret = bpf_map_get_info_by_fd(self->map_fd, &info, &len);
	if (ret || info.type != BPF_MAP_TYPE_ARENA || info.map_extra != ARENA_BASE) {
		snprintf(err, ERR_LEN, "%s is not an arena map at %#llx", path, (unsigned long long)ARENA_BASE);
		return ret ? ret : -EINVAL;
	}
	ret = ap_arena_base_free(info.max_entries);
	if (ret) {
		snprintf(err, ERR_LEN, "address %#llx is already mapped in this process (one arena per process)",
			 (unsigned long long)ARENA_BASE);
		return ret;
	}
	p = mmap((void *)ARENA_BASE, (size_t)info.max_entries * ARENA_PAGE_SIZE, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED, self->map_fd, 0);
	if (p == MAP_FAILED) {
		ret = -errno;
		snprintf(err, ERR_LEN, "cannot map the pinned arena at %#llx: %s", (unsigned long long)ARENA_BASE,
			 strerror(errno));
		return ret;
	}
	self->pages = info.max_entries;
	ret = find_space(self, &first);
	if (ret) {
		snprintf(err, ERR_LEN, "the arena pinned at %s holds no data-structure space", path);
		return ret;
	}
	self->sp = ds_space_at_page(first);
	if (arena_atomic_load(&self->sp->magic, ARENA_ACQUIRE) != DS_SPACE_MAGIC) {
		snprintf(err, ERR_LEN, "the data-structure space in %s is not laid out", path);
		return -EINVAL;
	}
	self->own_prog_fds = 1;
#define PIN_FD(id, name)                                               \
	snprintf(path, sizeof(path), "%s/ds_run_" #name, dir);         \
	self->prog_fd[id] = bpf_obj_get(path);
	DS_REGISTRY(PIN_FD)
#undef PIN_FD
	snprintf(path, sizeof(path), "%s/ds_trim", dir);
	self->trim_fd = bpf_obj_get(path);
	return 0;
}

static void release(DsArenaObject *self)
{
	int i;

	if (mapped_arena == self)
		mapped_arena = NULL;
	/* the pins would keep the map (and its memory) alive after us */
	if (self->pinned)
		unpin_files(self->pin_dir);
	self->pinned = 0;
	if (self->open && tls_gen == self->gen) {
		/* a closed session's arena is unmapped: nothing to give back */
		if (!self->share || self->share->alive)
			ds_user_detach(&tls_ctx);
		tls_gen = 0;
	}
	if (self->share) {
		/* the session's mapping and programs: the session releases them */
		self->share = NULL;
		Py_CLEAR(self->session);
		self->pages = 0;
	} else if (self->skel) {
		ds_ops_bpf__destroy(self->skel); /* unmaps the arena */
		self->skel = NULL;
	} else if (self->pages && self->map_fd >= 0) {
		munmap((void *)ARENA_BASE, self->pages * ARENA_PAGE_SIZE);
	}
	if (self->own_prog_fds) {
		for (i = 0; i < DS_TYPES_END; i++)
			if (self->prog_fd[i] > 0)
				close(self->prog_fd[i]);
		if (self->trim_fd > 0)
			close(self->trim_fd);
	}
	self->trim_fd = -1;
	for (i = 0; i < DS_TYPES_END; i++)
		self->prog_fd[i] = -1;
	self->own_prog_fds = 0;
	if (self->map_fd >= 0)
		close(self->map_fd);
	self->map_fd = -1;
	self->pages = 0;
	self->sp = NULL;
	self->creator_pid = 0;
	self->open = 0;
}

/* ---- bound: the space of a capture session's arena, in its own process ---- */

static int bind_session(DsArenaObject *self, PyObject *session)
{
	PyObject *cap = PyObject_CallMethod(session, "ds_share", NULL);
	struct ap_ds_share *sh;
	int i;

	if (!cap)
		return -1;
	sh = PyCapsule_GetPointer(cap, AP_DS_SHARE_CAPSULE);
	Py_DECREF(cap);
	if (!sh)
		return -1;
	if (sh->version != AP_DS_SHARE_VERSION || !sh->alive || !sh->sp) {
		ap_raise(EINVAL, "%s", "the session offers no data-structure space this module can use (rebuild both modules)");
		return -1;
	}
	self->share = sh;
	Py_INCREF(session);
	self->session = session;
	self->sp = sh->sp;
	self->pages = sh->pages;
	self->creator_pid = sh->creator_pid;
	for (i = 0; i < DS_TYPES_END; i++)
		self->prog_fd[i] = sh->prog_fd[i];
	self->trim_fd = sh->trim_fd;
	self->gen = next_gen++;
	self->open = 1;
	mapped_arena = self;
	return 0;
}

static int DsArena_init(DsArenaObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "pages", "pinned", "pool_pages", "poison", "session", NULL };
	unsigned long long pages = 32768;
	PyObject *session = NULL;
	const char *pinned = NULL;
	unsigned int pool_pages = 4;
	int poison = 0, ret, i;
	char err[ERR_LEN] = "";

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|KzIpO", kwlist, &pages, &pinned, &pool_pages, &poison,
					 &session))
		return -1;
	if (session == Py_None)
		session = NULL;
	if (session && pinned) {
		ap_raise(EINVAL, "%s", "an arena is bound to a session or attached to pins, not both");
		return -1;
	}
	if (self->open)
		release(self);
	self->map_fd = -1;
	self->trim_fd = -1;
	for (i = 0; i < DS_TYPES_END; i++)
		self->prog_fd[i] = -1;
	if (mapped_arena) {
		ap_raise(EBUSY, "this process already has an arena mapped at %#llx: close it first",
			   (unsigned long long)ARENA_BASE);
		return -1;
	}
	if (session)
		return bind_session(self, session);
	if (!pinned && (pages < AP_DS_SPACE_FIRST + DS_SPACE_HDR_PAGES + 16 || pages > (1ULL << 20))) {
		ap_raise(EINVAL, "arena pages must be between %llu and %llu",
			   (unsigned long long)(AP_DS_SPACE_FIRST + DS_SPACE_HDR_PAGES + 16), 1ULL << 20);
		return -1;
	}
	Py_BEGIN_ALLOW_THREADS
	ret = pinned ? open_pinned(self, pinned, err) : open_owner(self, pages, pool_pages, poison, err);
	Py_END_ALLOW_THREADS
	if (ret) {
		release(self);
		ap_raise(ret, "%s", err);
		return -1;
	}
	self->gen = next_gen++;
	self->open = 1;
	mapped_arena = self;
	return 0;
}

static void DsArena_dealloc(DsArenaObject *self)
{
	if (self->open)
		release(self);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *DsArena_close(DsArenaObject *self, PyObject *Py_UNUSED(ignored))
{
	if (self->open)
		release(self);
	Py_RETURN_NONE;
}

/* ---- instances ---- */

static int type_from_obj(PyObject *o, unsigned int *type)
{
	const struct ds_meta *m;

	if (PyUnicode_Check(o)) {
		const char *name = PyUnicode_AsUTF8(o);

		if (!name)
			return -1;
		m = ds_meta_by_name(name);
		if (!m) {
			ap_raise(EINVAL, "no registered data structure is named %s", name);
			return -1;
		}
		*type = m->id;
		return 0;
	}
	*type = (unsigned int)PyLong_AsUnsignedLong(o);
	if (PyErr_Occurred())
		return -1;
	if (!ds_meta_of(*type)) {
		ap_raise(EINVAL, "no registered data structure has type id %u", *type);
		return -1;
	}
	return 0;
}

/* create(type, capacity=0, name=None) -> (address, type id) */
static PyObject *DsArena_create(DsArenaObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "type", "capacity", "name", NULL };
	PyObject *t;
	unsigned long long cap = 0;
	const char *name = NULL;
	struct ds_config cfg = { 0 };
	struct ds_ctx *c;
	unsigned int type;
	uint64_t addr;
	int err = 0;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Kz", kwlist, &t, &cap, &name) || !arena_ready(self) ||
	    type_from_obj(t, &type))
		return NULL;
	if (name && (strlen(name) == 0 || strlen(name) >= DS_NAME_LEN))
		return ap_raise(EINVAL, "instance names are 1 to %d bytes", DS_NAME_LEN - 1);
	if (name && ds_lookup(self->sp, name, NULL))
		return ap_raise(EEXIST, "an instance named %s exists already", name);
	c = thread_ctx(self);
	if (!c)
		return NULL;
	cfg.capacity = cap;
	Py_BEGIN_ALLOW_THREADS
	addr = ds_create(self->sp, c, type, &cfg, name, &err);
	Py_END_ALLOW_THREADS
	if (!addr)
		return ap_raise(err == DS_NOMEM ? ENOMEM : EINVAL, "cannot create a %s (capacity %llu): %s",
				  ds_meta_of(type)->name, cap,
				  err == DS_NOMEM ? "the arena is out of pages (give it more pages)" : "bad configuration");
	return Py_BuildValue("(KI)", (unsigned long long)addr, type);
}

/* lookup(name) -> (address, type id) or None */
static PyObject *DsArena_lookup(DsArenaObject *self, PyObject *args)
{
	const char *name;
	ap_u32 type = 0;
	uint64_t addr;

	if (!PyArg_ParseTuple(args, "s", &name) || !arena_ready(self))
		return NULL;
	addr = ds_lookup(self->sp, name, &type);
	if (!addr)
		Py_RETURN_NONE;
	return Py_BuildValue("(KI)", (unsigned long long)addr, type);
}

/* instances() -> [(name, address, type id)] */
static PyObject *DsArena_instances(DsArenaObject *self, PyObject *Py_UNUSED(ignored))
{
	PyObject *list;
	int i;

	if (!arena_ready(self))
		return NULL;
	list = PyList_New(0);
	for (i = 0; list && i < DS_SPACE_DIR; i++) {
		struct ds_dir_entry *e = &self->sp->dir[i];
		uint64_t a = arena_atomic_load(&e->addr, ARENA_ACQUIRE);
		char name[DS_NAME_LEN + 1];
		PyObject *item;

		if (a <= 1)
			continue;
		memcpy(name, e->name, DS_NAME_LEN);
		name[DS_NAME_LEN] = 0;
		item = Py_BuildValue("(sKI)", name, (unsigned long long)a, e->type);
		if (!item || PyList_Append(list, item)) {
			Py_XDECREF(item);
			Py_CLEAR(list);
			break;
		}
		Py_DECREF(item);
	}
	return list;
}

/* ---- batched user operations ---- */

/* Get a buffer of at least n elements of size elem (or release on error). */
static int get_buf(PyObject *o, Py_buffer *b, int writable, uint64_t *n_elems, size_t elem, const char *what)
{
	if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)))
		return -1;
	if (b->len % (Py_ssize_t)elem) {
		PyBuffer_Release(b);
		PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of %zu-byte items", what,
			     b->len, elem);
		return -1;
	}
	*n_elems = (uint64_t)b->len / elem;
	return 0;
}

/*
 * exec(ds, type, ops, keys=None, vals=None, *, results=None, okeys=None,
 *      ovals=None, count=-1, stop_on_fail=False) -> int
 * ops: one op for all (int) or a buffer of u8; keys/vals: buffers of u64;
 * results (u8), okeys/ovals (u64): writable buffers. Returns the number of
 * operations run.
 */
static PyObject *DsArena_exec(DsArenaObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "ds", "type", "ops", "keys", "vals", "results", "okeys", "ovals",
				  "count", "stop_on_fail", NULL };
	unsigned long long ds;
	unsigned int type;
	long long count = -1;
	PyObject *ops_o, *keys_o = Py_None, *vals_o = Py_None, *res_o = Py_None, *okeys_o = Py_None,
			 *ovals_o = Py_None;
	Py_buffer bufs[6];
	int have[6] = { 0 }, stop = 0, k, ok = 0;
	uint64_t lens[6], n = UINT64_MAX;
	struct ds_exec_args a;
	struct ds_ctx *c;

	memset(&a, 0, sizeof(a));
	if (!PyArg_ParseTupleAndKeywords(args, kw, "KIO|OO$OOOLp", kwlist, &ds, &type, &ops_o, &keys_o, &vals_o,
					 &res_o, &okeys_o, &ovals_o, &count, &stop) ||
	    !arena_ready(self) || check_instance(self, ds, type))
		return NULL;
	a.op = -1;
	if (PyLong_Check(ops_o)) {
		long op = PyLong_AsLong(ops_o);

		if (op < 0 || op >= DS_OP__COUNT)
			return ap_raise(EINVAL, "op %ld is not an operation", op);
		a.op = (ap_s32)op;
	}
	{
		PyObject *objs[6] = { a.op >= 0 ? Py_None : ops_o, keys_o, vals_o, res_o, okeys_o, ovals_o };
		static const size_t sizes[6] = { 1, 8, 8, 1, 8, 8 };
		static const int wr[6] = { 0, 0, 0, 1, 1, 1 };
		static const char *names[6] = { "ops", "keys", "vals", "results", "okeys", "ovals" };

		for (k = 0; k < 6; k++) {
			if (objs[k] == Py_None)
				continue;
			if (get_buf(objs[k], &bufs[k], wr[k], &lens[k], sizes[k], names[k]))
				goto out;
			have[k] = 1;
			/* inputs set the count; outputs must hold it */
			if (k < 3 && lens[k] < n)
				n = lens[k];
		}
		if (count >= 0)
			n = n < (uint64_t)count ? n : (uint64_t)count;
		if (n == UINT64_MAX) {
			ap_raise(EINVAL, "exec needs an ops buffer, keys or count");
			goto out;
		}
		for (k = 3; k < 6; k++)
			if (have[k] && lens[k] < n) {
				PyErr_Format(PyExc_ValueError, "%s holds %llu items, %llu needed", names[k],
					     (unsigned long long)lens[k], (unsigned long long)n);
				goto out;
			}
	}
	c = thread_ctx(self);
	if (!c)
		goto out;
	a.type = type;
	a.ds = ds;
	a.n = n;
	a.ops = have[0] ? bufs[0].buf : NULL;
	a.keys = have[1] ? bufs[1].buf : NULL;
	a.vals = have[2] ? bufs[2].buf : NULL;
	a.results = have[3] ? bufs[3].buf : NULL;
	a.okeys = have[4] ? bufs[4].buf : NULL;
	a.ovals = have[5] ? bufs[5].buf : NULL;
	a.flags = stop ? DS_BATCH_STOP_ON_FAIL : 0;
	Py_BEGIN_ALLOW_THREADS
	ds_exec(c, &a);
	Py_END_ALLOW_THREADS
	if (a.busy && !a.done) {
		ap_raise(EBUSY, "cannot enter an epoch critical section (nesting overflow)");
		goto out;
	}
	ok = 1;
out:
	for (k = 0; k < 6; k++)
		if (have[k])
			PyBuffer_Release(&bufs[k]);
	return ok ? PyLong_FromUnsignedLongLong(a.done) : NULL;
}

/* ---- kernel batches ---- */

static int kernel_fd(DsArenaObject *self, unsigned int type)
{
	if (type >= DS_TYPES_END || self->prog_fd[type] < 0) {
		ap_raise(ENOENT, "no kernel program for %s in this process (pin the owner's programs)",
			   ds_meta_of(type) ? ds_meta_of(type)->name : "?");
		return -1;
	}
	return self->prog_fd[type];
}

static PyObject *u64_list(const uint64_t *v, int n)
{
	PyObject *l = PyList_New(n);
	int i;

	for (i = 0; l && i < n; i++) {
		PyObject *x = PyLong_FromUnsignedLongLong(v[i]);

		if (!x) {
			Py_CLEAR(l);
			break;
		}
		PyList_SET_ITEM(l, i, x);
	}
	return l;
}

/*
 * kernel_buffers(per_call=4096, collect=False, history=False)
 * Takes the calling thread's arena buffers that run_kernel hands to the
 * kernel (collected pairs, history records) for batches of up to per_call
 * operations, so that a thread can claim them while the arena still has room
 * and never has to grow them later in an arena that its structure has
 * filled. Raises ENOMEM when the arena cannot hold them.
 */
static PyObject *DsArena_kernel_buffers(DsArenaObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "per_call", "collect", "history", NULL };
	unsigned long long per_call = KERNEL_PER_CALL_DEFAULT;
	int collect = 0, history = 0;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|Kpp", kwlist, &per_call, &collect, &history) ||
	    !arena_ready(self))
		return NULL;
	if (!per_call || per_call > KERNEL_PER_CALL_MAX)
		return ap_raise(EINVAL, "per_call must be 1 to %d operations", KERNEL_PER_CALL_MAX);
	if (collect && !kernel_out(self, per_call))
		return ap_raise(ENOMEM, "the arena has no room for %llu collected pairs", per_call);
	if (history && !kernel_hist(self, per_call))
		return ap_raise(ENOMEM, "the arena has no room for %llu history records", per_call);
	Py_RETURN_NONE;
}

/*
 * run_kernel(ds, type, count, mix=(1, 0, 0, 0), key_lo=0, key_span=1,
 *            seq=False, seed=1, val_base=0, stop_on_fail=False,
 *            collect=False, per_call=4096, history=False, agent=0,
 *            val_key=False) -> dict
 * count operations by ds_run_NAME, per_call per bpf_prog_test_run_opts.
 * collect: the (key, val) pairs successful pops and deletes returned, as
 * bytes of u64 pairs. history: one struct ds_hist_rec per operation (agent
 * as given), as bytes under "history" (None without). val_key: an insert's
 * value is its key.
 */
static PyObject *DsArena_run_kernel(DsArenaObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "ds", "type", "count", "mix", "key_lo", "key_span", "seq", "seed", "val_base",
				  "stop_on_fail", "collect", "per_call", "history", "agent", "val_key", NULL };
	unsigned long long ds, count, key_lo = 0, key_span = 1, seed = 1, val_base = 0, per_call = KERNEL_PER_CALL_DEFAULT;
	unsigned int type, mix[4] = { 1, 0, 0, 0 };
	unsigned int agent = 0, flags;
	int seq = 0, stop = 0, collect = 0, history = 0, val_key = 0, fd;
	struct ap_kmix k;
	PyObject *out = NULL, *hist = NULL, *res = NULL;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "KIK|(IIII)KKpKKppKpIp", kwlist, &ds, &type, &count, &mix[0],
					 &mix[1], &mix[2], &mix[3], &key_lo, &key_span, &seq, &seed, &val_base, &stop,
					 &collect, &per_call, &history, &agent, &val_key) ||
	    !arena_ready(self) || check_instance(self, ds, type))
		return NULL;
	fd = kernel_fd(self, type);
	if (fd < 0)
		return NULL;
	if (!per_call || per_call > KERNEL_PER_CALL_MAX)
		return ap_raise(EINVAL, "per_call must be 1 to %d operations", KERNEL_PER_CALL_MAX);
	if (!mix[0] && !mix[1] && !mix[2] && !mix[3])
		return ap_raise(EINVAL, "the op mix has no weight");
	memset(&k, 0, sizeof(k));
	flags = (stop ? DS_BATCH_STOP_ON_FAIL : 0) | (val_key ? DS_BATCH_VAL_KEY : 0);
	if (history && !(ds_meta_of(type)->flags & DS_F_KEYED))
		flags |= DS_BATCH_HIST_QUEUE;
	ap_ds_batch_mix(&k.tmpl, ds, type, 0, mix, seq ? DS_KEYS_SEQ : DS_KEYS_RANDOM, key_lo, key_span ? key_span : 1,
			val_base, seed ? seed : 1, flags);
	k.total = count;
	k.per_call = per_call;
	if (collect && count) {
		k.out_cap = count;
		k.out = malloc(count * sizeof(struct ds_kv));
		k.arena_out = kernel_out(self, per_call);
		if (!k.out || !k.arena_out) {
			free(k.out);
			return ap_raise(ENOMEM, "no memory for %llu collected pairs", count);
		}
	}
	if (history && count) {
		k.hist_cap = count;
		k.agent = agent;
		k.hist = malloc(count * sizeof(struct ds_hist_rec));
		k.arena_hist = kernel_hist(self, per_call);
		if (!k.hist || !k.arena_hist) {
			free(k.hist);
			free(k.out);
			return ap_raise(ENOMEM, "no memory for a history of %llu records", count);
		}
	}
	Py_BEGIN_ALLOW_THREADS
	ap_kmix_run(fd, &k);
	Py_END_ALLOW_THREADS
	if (history) {
		hist = PyBytes_FromStringAndSize((const char *)k.hist,
						 (Py_ssize_t)(k.n_hist * sizeof(struct ds_hist_rec)));
		free(k.hist);
		if (!hist) {
			free(k.out);
			return NULL;
		}
	} else {
		hist = Py_NewRef(Py_None);
	}
	if (k.err) {
		Py_DECREF(hist);
		free(k.out);
		return ap_raise(k.err, "running ds_run_%s failed: %s", ds_meta_of(type)->name, strerror(-k.err));
	}
	if (collect) {
		out = PyBytes_FromStringAndSize((const char *)k.out, (Py_ssize_t)(k.n_out * sizeof(struct ds_kv)));
		free(k.out);
		if (!out) {
			Py_DECREF(hist);
			return NULL;
		}
	} else {
		out = Py_NewRef(Py_None);
	}
	res = Py_BuildValue("{sNsNsKsKsKsKsKsisNsN}", "done", u64_list(k.done, 4), "fails", u64_list(k.fails, 4), "nomem",
			    (unsigned long long)k.nomem, "busy", (unsigned long long)k.busy, "full",
			    (unsigned long long)k.full, "ns", (unsigned long long)k.ns, "calls",
			    (unsigned long long)k.calls, "status", k.status, "out", out, "history", hist);
	return res;
}

/* A one-call command (verify, iterate) on the kernel side. */
static int kernel_command(DsArenaObject *self, struct ds_batch *b)
{
	int fd = kernel_fd(self, b->type), ret;

	if (fd < 0)
		return -1;
	Py_BEGIN_ALLOW_THREADS
	ret = ap_ds_kernel_call(fd, b);
	Py_END_ALLOW_THREADS
	if (ret) {
		ap_raise(ret, "running ds_run_%s failed: %s", ds_meta_of(b->type)->name, strerror(-ret));
		return -1;
	}
	return 0;
}

/* refill(ds, type) -> result: fill the kernel CPUs' page pools of ds's heap from
 * a sleepable kernel batch, for the non-sleepable programs that allocate */
static PyObject *DsArena_refill(DsArenaObject *self, PyObject *args)
{
	unsigned long long ds;
	unsigned int type;
	struct ds_batch b;

	if (!PyArg_ParseTuple(args, "KI", &ds, &type) || !arena_ready(self) || check_instance(self, ds, type))
		return NULL;
	ap_ds_batch_cmd(&b, ds, type, DS_CMD_REFILL);
	if (kernel_command(self, &b))
		return NULL;
	return PyLong_FromLong(b.status);
}

/* verify(ds, type, kernel=False) -> (result, count, keysum, valsum, where) */
static PyObject *DsArena_verify(DsArenaObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "ds", "type", "kernel", NULL };
	unsigned long long ds;
	unsigned int type;
	int kernel = 0, r;
	struct ds_verify v = { 0 };

	if (!PyArg_ParseTupleAndKeywords(args, kw, "KI|p", kwlist, &ds, &type, &kernel) || !arena_ready(self) ||
	    check_instance(self, ds, type))
		return NULL;
	if (kernel) {
		struct ds_batch b;

		ap_ds_batch_cmd(&b, ds, type, DS_CMD_VERIFY);
		if (kernel_command(self, &b))
			return NULL;
		r = b.status;
		v.count = b.done[0];
		v.keysum = b.done[1];
		v.valsum = b.done[2];
		v.where = b.done[3];
	} else {
		struct ds_ctx *c = thread_ctx(self);
		uint64_t t0;

		if (!c)
			return NULL;
		Py_BEGIN_ALLOW_THREADS
		t0 = arena_now_ns();
		/* a critical section: under concurrent deletes the walk meets
		 * nodes that are retired, never freed under it */
		if (ds_enter(c)) {
			r = DS_BUSY;
		} else {
			r = ds_verify_type(c, type, ds, &v);
			ds_exit(c);
		}
		ds_stats_add((struct ds_head *)ds, DS_SIDE_USER, DS_OP_VERIFY, 1, r != DS_OK, arena_now_ns() - t0);
		Py_END_ALLOW_THREADS
	}
	return Py_BuildValue("(iKKKK)", r, (unsigned long long)v.count, (unsigned long long)v.keysum,
			     (unsigned long long)v.valsum, (unsigned long long)v.where);
}

/* iterate(ds, type, lo=0, hi=2**64-1, cap=1<<20, kernel=False) -> (result, bytes of u64 pairs) */
static PyObject *DsArena_iterate(DsArenaObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "ds", "type", "lo", "hi", "cap", "kernel", NULL };
	unsigned long long ds, lo = 0, hi = ~0ULL, cap = 1ULL << 20;
	unsigned int type;
	int kernel = 0, r;
	struct ds_kv *out;
	ap_u64 n = 0;
	PyObject *bytes;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "KI|KKKp", kwlist, &ds, &type, &lo, &hi, &cap, &kernel) ||
	    !arena_ready(self) || check_instance(self, ds, type))
		return NULL;
	if (!cap || cap > ITERATE_MAX)
		return ap_raise(EINVAL, "cap must be 1 to %llu pairs", ITERATE_MAX);
	if (hi < lo)
		hi = lo;
	/* the kernel writes into the arena; userspace into any memory */
	if (kernel && cap > KERNEL_OUT_MAX)
		return ap_raise(EINVAL, "a kernel iterate returns at most %llu pairs", KERNEL_OUT_MAX);
	out = kernel ? kernel_out(self, cap) : malloc(cap * sizeof(*out));
	if (!out)
		return ap_raise(ENOMEM, "no memory for %llu pairs", cap);
	if (kernel) {
		struct ds_batch b;

		ap_ds_batch_cmd(&b, ds, type, DS_CMD_ITERATE);
		b.key_lo = lo;
		b.key_span = hi - lo;
		b.out = (ap_u64)out;
		b.out_cap = cap;
		if (kernel_command(self, &b))
			return NULL;
		r = b.status;
		n = b.n_out;
	} else {
		struct ds_ctx *c = thread_ctx(self);

		if (!c) {
			free(out);
			return NULL;
		}
		Py_BEGIN_ALLOW_THREADS
		if (ds_enter(c)) {
			r = DS_BUSY;
		} else {
			uint64_t t0 = arena_now_ns();

			r = ds_iterate_type(c, type, ds, lo, hi, out, cap, &n);
			ds_exit(c);
			ds_stats_add((struct ds_head *)ds, DS_SIDE_USER, DS_OP_ITERATE, 1, r != DS_OK,
				     arena_now_ns() - t0);
		}
		Py_END_ALLOW_THREADS
	}
	bytes = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)(n * sizeof(*out)));
	if (!kernel)
		free(out);
	if (!bytes)
		return NULL;
	return Py_BuildValue("(iN)", r, bytes);
}

/* ---- statistics ---- */

/* The one spelling of each operation: the keys of stats() and, upper-cased, the
 * members of pipeline._ds.DsOp. */
static const char *const op_names[DS_OP__COUNT] = {
	[DS_OP_INIT] = "init",       [DS_OP_INSERT] = "insert", [DS_OP_DELETE] = "delete",
	[DS_OP_POP] = "pop",         [DS_OP_SEARCH] = "search", [DS_OP_VERIFY] = "verify",
	[DS_OP_ITERATE] = "iterate", [DS_OP_STATS] = "stats",
};

static PyObject *side_dict(struct ds_head *h, ap_u32 side)
{
	struct ds_stats st;
	PyObject *d = PyDict_New();
	int o;

	if (!d)
		return NULL;
	ds_stats_read(h, side, &st);
	for (o = 0; o < DS_OP__COUNT; o++) {
		PyObject *e;

		if (!st.op[o].count)
			continue;
		e = Py_BuildValue("{sKsKsK}", "count", (unsigned long long)st.op[o].count, "failures",
				  (unsigned long long)st.op[o].failures, "ns", (unsigned long long)st.op[o].ns);
		if (!e || PyDict_SetItemString(d, op_names[o], e)) {
			Py_XDECREF(e);
			Py_DECREF(d);
			return NULL;
		}
		Py_DECREF(e);
	}
	return d;
}

/* stats(ds, type) -> {"kernel": {op: {count, failures, ns}}, "user": {...}} */
static PyObject *DsArena_stats(DsArenaObject *self, PyObject *args)
{
	unsigned long long ds;
	unsigned int type;
	struct ds_head *h;

	if (!PyArg_ParseTuple(args, "KI", &ds, &type) || !arena_ready(self) || check_instance(self, ds, type))
		return NULL;
	h = (struct ds_head *)ds;
	return Py_BuildValue("{sNsN}", "kernel", side_dict(h, DS_SIDE_KERNEL), "user", side_dict(h, DS_SIDE_USER));
}

/* heap_stats() -> dict: the allocator's counters */
/*
 * run_loop(ds, type, control, slot, *, role=0, ops=0, mix=(1, 0, 0), key_lo=1,
 *          keys=1, theta=0.0, seed=1, producer=0, net=None, agent=0,
 *          sample_shift=6, sample_cap=65536, hist_cap=0, net_own=False) -> dict
 * The stress driver's timed loop (runloop.h) on the calling thread, GIL
 * released. control: a writable buffer of u64 (the control block, shared
 * with the driver); net: a writable buffer of keys int32 counters, or None;
 * net_own: no other thread updates net (plain updates, not atomic adds).
 */
static PyObject *DsArena_run_loop(DsArenaObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "ds", "type", "control", "slot", "role", "ops", "mix", "key_lo", "keys",
				  "theta", "seed", "producer", "net", "agent", "sample_shift", "sample_cap",
				  "hist_cap", "net_own", NULL };
	unsigned long long ds, ops = 0, key_lo = 1, keys = 1, seed = 1, producer = 0, sample_cap = 65536,
			   hist_cap = 0;
	unsigned int type, slot, role = 0, agent = 0, sample_shift = 6;
	unsigned int mix[3] = { 1, 0, 0 };
	double theta = 0;
	PyObject *ctl_o, *net_o = Py_None, *res = NULL, *samples = NULL, *hist = NULL, *popped = NULL, *kinds = NULL;
	Py_buffer ctl, net;
	int have_net = 0, net_own = 0, k;
	uint64_t n;
	struct ap_runloop r;
	struct ds_ctx *c;

	memset(&r, 0, sizeof(r));
	if (!PyArg_ParseTupleAndKeywords(args, kw, "KIOI|$IK(III)KKdKKOIIKKp", kwlist, &ds, &type, &ctl_o, &slot,
					 &role, &ops, &mix[0], &mix[1], &mix[2], &key_lo, &keys, &theta, &seed,
					 &producer, &net_o, &agent, &sample_shift, &sample_cap, &hist_cap, &net_own) ||
	    !arena_ready(self) || check_instance(self, ds, type))
		return NULL;
	if (role > AP_ROLE_CONSUMER || !keys || sample_shift > 30 || !(theta >= 0 && theta < 1))
		return ap_raise(EINVAL, "run_loop: bad role, keys, sample_shift or theta");
	if (get_buf(ctl_o, &ctl, 1, &n, 8, "control"))
		return NULL;
	if (n < AP_CTL_SLOT0 + ((uint64_t)slot + 1) * AP_CTL_SLOT_WORDS) {
		PyBuffer_Release(&ctl);
		return ap_raise(EINVAL, "run_loop: the control block has no slot %u", slot);
	}
	if (net_o != Py_None) {
		if (get_buf(net_o, &net, 1, &n, 4, "net")) {
			PyBuffer_Release(&ctl);
			return NULL;
		}
		have_net = 1;
		if (n < keys) {
			ap_raise(EINVAL, "run_loop: net holds %llu counters, %llu keys", (unsigned long long)n, keys);
			goto out;
		}
	}
	c = thread_ctx(self);
	if (!c)
		goto out;
	r.ds = ds;
	r.type = type;
	r.role = role;
	r.ops = ops;
	memcpy(r.mix, mix, sizeof(mix));
	r.key_lo = key_lo;
	r.keys = keys;
	r.theta = theta;
	r.seed = seed;
	r.producer = producer;
	r.net = have_net ? net.buf : NULL;
	r.net_own = (uint32_t)net_own;
	r.control = ctl.buf;
	r.slot = slot;
	r.agent = agent;
	r.sample_shift = sample_shift;
	r.sample_cap = sample_cap;
	r.hist_cap = hist_cap;
	r.samples = sample_cap ? malloc(sample_cap * sizeof(*r.samples)) : NULL;
	r.hist = hist_cap ? malloc(hist_cap * sizeof(*r.hist)) : NULL;
	if ((sample_cap && !r.samples) || (hist_cap && !r.hist)) {
		ap_raise(ENOMEM, "run_loop: no memory for %llu samples and %llu history records", sample_cap, hist_cap);
		goto out;
	}
	Py_BEGIN_ALLOW_THREADS
	ap_runloop(c, &r);
	Py_END_ALLOW_THREADS
	if (r.err && r.err != ENOMEM) {
		ap_raise(r.err, "run_loop on %s: %s", ds_meta_of(type)->name, strerror(r.err));
		goto out;
	}
	kinds = PyList_New(4);
	for (k = 0; kinds && k < 4; k++) {
		PyObject *l = u64_list(r.res[k], 8);

		if (!l) {
			Py_CLEAR(kinds);
			break;
		}
		PyList_SET_ITEM(kinds, k, l);
	}
	samples = PyBytes_FromStringAndSize((const char *)r.samples, (Py_ssize_t)(r.n_samples * sizeof(*r.samples)));
	hist = r.hist ? PyBytes_FromStringAndSize((const char *)r.hist, (Py_ssize_t)(r.n_hist * sizeof(*r.hist)))
		      : Py_NewRef(Py_None);
	popped = PyBytes_FromStringAndSize((const char *)r.popped, (Py_ssize_t)(r.n_popped * sizeof(*r.popped)));
	if (!kinds || !samples || !hist || !popped)
		goto out;
	res = Py_BuildValue("{sKsOsKsKsKsKsOsOsOsisi}", "done", (unsigned long long)r.done, "results", kinds,
			    "bad_values", (unsigned long long)r.bad_values, "pushed", (unsigned long long)r.pushed,
			    "ns", (unsigned long long)r.ns, "cpu_ns", (unsigned long long)r.cpu_ns, "samples", samples,
			    "history", hist, "popped", popped, "out_of_memory", r.err == ENOMEM, "stuck", r.stuck);
out:
	Py_XDECREF(kinds);
	Py_XDECREF(samples);
	Py_XDECREF(hist);
	Py_XDECREF(popped);
	free(r.samples);
	free(r.hist);
	free(r.popped);
	if (have_net)
		PyBuffer_Release(&net);
	PyBuffer_Release(&ctl);
	return res;
}

static PyObject *DsArena_heap_stats(DsArenaObject *self, PyObject *Py_UNUSED(ignored))
{
	struct arena_heap_stats st;
	PyObject *d;
	size_t i;

	if (!arena_ready(self))
		return NULL;
	arena_heap_get_stats(&self->sp->heap, &st);
	{
		const struct {
			const char *name;
			ap_u64 v;
		} f[] = {
			{ "allocs", st.allocs },
			{ "frees", st.frees },
			{ "bytes_in_use", st.bytes_in_use },
			{ "pages_in_use", st.pages_in_use },
			{ "failures", st.failures },
			{ "pages_populated", st.pages_populated },
			{ "pages_hwm", st.pages_hwm },
			{ "free_pages", st.free_pages },
			{ "pool_pages", st.pool_pages },
			{ "pages_returned", st.pages_returned },
			{ "pages_retaken", st.pages_retaken },
			{ "pages_quarantined", st.pages_quarantined },
			{ "record_pages", st.record_pages },
			{ "trims", st.trims },
			{ "trim_waits", st.trim_waits },
			{ "pages_lost", st.pages_lost },
			{ "bad_frees", st.bad_frees },
			{ "large_allocs", st.large_allocs },
			{ "overruns", st.overruns },
			{ "trim_keep", self->sp->heap.trim_keep },
			{ "trim_high", self->sp->heap.trim_high },
		};

		d = PyDict_New();
		for (i = 0; d && i < sizeof(f) / sizeof(f[0]); i++) {
			PyObject *v = PyLong_FromUnsignedLongLong(f[i].v);

			if (!v || PyDict_SetItemString(d, f[i].name, v))
				Py_CLEAR(d);
			Py_XDECREF(v);
		}
	}
	return d;
}

/*
 * trim(max_pages=1<<20, force=True) -> dict: give free pages back to the
 * kernel through ds_trim, DS_TRIM_MAX_BUDGET pages per call, until the free
 * stack is down to its watermark (force: trim_keep; else only above
 * trim_high) and no page waits in quarantine (a quarantine whose grace
 * period does not end is retried TRIM_RETRIES times, yielding between).
 */
#define TRIM_RETRIES 1000
static PyObject *DsArena_trim(DsArenaObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "max_pages", "force", NULL };
	unsigned long long max_pages = 1ULL << 20, given = 0, calls = 0;
	int force = 1, ret = 0, tries = 0;
	struct ds_trim_args a;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|Kp", kwlist, &max_pages, &force) || !arena_ready(self))
		return NULL;
	if (self->trim_fd < 0)
		return ap_raise(ENOENT, "ds_trim is not loaded or pinned here: pin the arena from a current build");
	memset(&a, 0, sizeof(a));
	Py_BEGIN_ALLOW_THREADS
	while (given < max_pages || a.quarantined) {
		/* a syscall program writes its context back into ctx_in */
		LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &a, .ctx_size_in = sizeof(a));

		a.heap = (ap_u64)&self->sp->heap;
		a.budget = max_pages - given < DS_TRIM_MAX_BUDGET ? max_pages - given : DS_TRIM_MAX_BUDGET;
		a.force = (ap_u32)force;
		if (!a.budget)
			a.budget = 1;
		ret = bpf_prog_test_run_opts(self->trim_fd, &opts) ? (errno ? -errno : -EIO) : 0;
		if (ret || a.status)
			break;
		calls++;
		given += a.given;
		if (a.quarantined) {
			/* a task is inside a heap section: let it run */
			if (++tries > TRIM_RETRIES)
				break;
			sched_yield();
			continue;
		}
		if (!a.given)
			break;
	}
	Py_END_ALLOW_THREADS
	if (ret)
		return ap_raise(ret, "running ds_trim failed: %s", strerror(-ret));
	if (a.status)
		return ap_raise(EINVAL, "ds_trim refused the heap at %#llx", (unsigned long long)a.heap);
	return Py_BuildValue("{sKsKsKsK}", "given", given, "quarantined", (unsigned long long)a.quarantined,
			     "free_pages", (unsigned long long)a.free_pages, "calls", calls);
}

/* set_trim(keep, high): the watermarks, in pages on the free stack */
static PyObject *DsArena_set_trim(DsArenaObject *self, PyObject *args)
{
	unsigned int keep, high;

	if (!PyArg_ParseTuple(args, "II", &keep, &high) || !arena_ready(self))
		return NULL;
	if (keep > high || high > (1U << 20))
		return ap_raise(EINVAL, "trim watermarks need 0 <= keep <= high <= %u pages (got keep %u, high %u)",
				1U << 20, keep, high);
	arena_heap_set_trim(&self->sp->heap, keep, high);
	Py_RETURN_NONE;
}

/* epoch_stats() -> dict: reclamation's counters */
static PyObject *DsArena_epoch_stats(DsArenaObject *self, PyObject *Py_UNUSED(ignored))
{
	struct ebr_stats st;

	if (!arena_ready(self))
		return NULL;
	ebr_get_stats(&self->sp->ebr, &st);
	return Py_BuildValue("{sKsKsKsKsKsKsKsKsK}", "epoch", (unsigned long long)st.epoch, "advances",
			     (unsigned long long)st.advances, "freed", (unsigned long long)st.freed, "expired",
			     (unsigned long long)st.expired, "retired", (unsigned long long)st.retired, "pending",
			     (unsigned long long)st.pending, "active", (unsigned long long)st.active, "users",
			     (unsigned long long)st.users, "drain_lost", (unsigned long long)st.drain_lost);
}

/* synchronize(max_tries=100000) -> bool: everything retired so far is freed */
static PyObject *DsArena_synchronize(DsArenaObject *self, PyObject *args)
{
	unsigned long long tries = 100000;
	struct ds_ctx *c;
	int r;

	if (!PyArg_ParseTuple(args, "|K", &tries) || !arena_ready(self))
		return NULL;
	c = thread_ctx(self);
	if (!c)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	r = ebr_synchronize(c->ebr, c->rec, tries);
	Py_END_ALLOW_THREADS
	return PyBool_FromLong(r == 0);
}

/* kernel_totals() -> {"kernel_ops", "kernel_fails", "kernel_batches"} (owner only) */
static PyObject *DsArena_kernel_totals(DsArenaObject *self, PyObject *Py_UNUSED(ignored))
{
	if (!arena_ready(self))
		return NULL;
	if (self->share)
		return Py_BuildValue("{sKsKsK}", "kernel_ops", (unsigned long long)*self->share->kernel_ops,
				     "kernel_fails", (unsigned long long)*self->share->kernel_fails, "kernel_batches",
				     (unsigned long long)*self->share->kernel_batches);
	if (!self->skel)
		return ap_raise(ENOENT, "kernel totals are kept by the process that loaded the programs");
	return Py_BuildValue("{sKsKsK}", "kernel_ops", (unsigned long long)self->skel->bss->kernel_ops, "kernel_fails",
			     (unsigned long long)self->skel->bss->kernel_fails, "kernel_batches",
			     (unsigned long long)self->skel->bss->kernel_batches);
}

static PyObject *DsArena_info(DsArenaObject *self, PyObject *Py_UNUSED(ignored))
{
	if (!arena_ready(self))
		return NULL;
	return Py_BuildValue("{sKsKsKsKsKsOsO}", "base", (unsigned long long)ARENA_BASE, "pages",
			     (unsigned long long)self->pages, "space_first_page",
			     (unsigned long long)self->sp->first_page, "space_pages", (unsigned long long)self->sp->npages,
			     "creator_pid", (unsigned long long)self->creator_pid, "owner",
			     self->skel ? Py_True : Py_False, "session", self->share ? Py_True : Py_False);
}

/* ---- the process table (include/proc.h) ---- */

#define PROC_SNAPSHOT_MAX (1ULL << 22)

/* proc_seed(table, entries) -> (inserted, present, nomem): entries are packed
 * struct ap_proc, each inserted under its pid and flagged as seeded */
static PyObject *DsArena_proc_seed(DsArenaObject *self, PyObject *args)
{
	unsigned long long table;
	struct ap_proc_seeded st = { 0 };
	struct ds_ctx *c;
	Py_buffer b;
	int busy = 0;

	if (!PyArg_ParseTuple(args, "Ky*", &table, &b))
		return NULL;
	if (!arena_ready(self) || check_instance(self, table, DS_TYPE_hash) || !(c = thread_ctx(self))) {
		PyBuffer_Release(&b);
		return NULL;
	}
	if (b.len % (Py_ssize_t)sizeof(struct ap_proc)) {
		PyBuffer_Release(&b);
		return ap_raise(EINVAL, "entries must be whole %zu-byte records", sizeof(struct ap_proc));
	}
	Py_BEGIN_ALLOW_THREADS
	if (ds_enter(c)) {
		busy = 1;
	} else {
		ap_proc_seed(c, table, b.buf, (size_t)b.len / sizeof(struct ap_proc), &st);
		ds_exit(c);
	}
	Py_END_ALLOW_THREADS
	PyBuffer_Release(&b);
	if (busy)
		return ap_raise(EBUSY, "%s", "this thread's epoch record is busy");
	return Py_BuildValue("(KKK)", (unsigned long long)st.inserted, (unsigned long long)st.present,
			     (unsigned long long)st.nomem);
}

/* proc_snapshot(table, cap=65536) -> bytes: the live entries, packed */
static PyObject *DsArena_proc_snapshot(DsArenaObject *self, PyObject *args)
{
	unsigned long long table, cap = 65536;
	struct ap_proc *out;
	struct ds_ctx *c;
	PyObject *res;
	long n = -1;

	if (!PyArg_ParseTuple(args, "K|K", &table, &cap) || !arena_ready(self) ||
	    check_instance(self, table, DS_TYPE_hash) || !(c = thread_ctx(self)))
		return NULL;
	if (!cap || cap > PROC_SNAPSHOT_MAX)
		return ap_raise(EINVAL, "cap must be 1 to %llu entries", PROC_SNAPSHOT_MAX);
	out = malloc(cap * sizeof(*out));
	if (!out)
		return PyErr_NoMemory();
	Py_BEGIN_ALLOW_THREADS
	if (!ds_enter(c)) {
		n = ap_proc_snapshot(c, table, out, cap);
		ds_exit(c);
	}
	Py_END_ALLOW_THREADS
	if (n < 0) {
		free(out);
		return ap_raise(EIO, "%s", "cannot walk the process table (epoch record busy, or no memory)");
	}
	res = PyBytes_FromStringAndSize((const char *)out, n * (Py_ssize_t)sizeof(*out));
	free(out);
	return res;
}

/* proc_counts() -> dict: the process table's counters in a capture session's
 * root (include/proc.h), read in place: what its tracepoints and its reader
 * did, for any process attached to the run's arena */
static PyObject *DsArena_proc_counts(DsArenaObject *self, PyObject *Py_UNUSED(ignored))
{
	const struct ap_root *pr = (const struct ap_root *)(uintptr_t)(ARENA_BASE + ARENA_ROOT_OFFSET);
	const struct ap_proc_counts *p = &pr->proc;

	if (!arena_ready(self))
		return NULL;
	if (arena_atomic_load(&pr->magic, ARENA_ACQUIRE) != AP_ROOT_MAGIC || !p->table)
		return ap_raise(ENOENT, "%s", "this arena is no capture session's with a process table");
	return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsK}", "forks",
			     (unsigned long long)__atomic_load_n(&p->forks, __ATOMIC_ACQUIRE), "execs",
			     (unsigned long long)__atomic_load_n(&p->execs, __ATOMIC_ACQUIRE), "exits",
			     (unsigned long long)__atomic_load_n(&p->exits, __ATOMIC_ACQUIRE), "nomem",
			     (unsigned long long)__atomic_load_n(&p->nomem, __ATOMIC_ACQUIRE), "stale",
			     (unsigned long long)__atomic_load_n(&p->stale, __ATOMIC_ACQUIRE), "missing",
			     (unsigned long long)__atomic_load_n(&p->missing, __ATOMIC_ACQUIRE), "busy",
			     (unsigned long long)__atomic_load_n(&p->busy, __ATOMIC_ACQUIRE), "reused",
			     (unsigned long long)__atomic_load_n(&p->reused, __ATOMIC_ACQUIRE), "reaped",
			     (unsigned long long)__atomic_load_n(&p->reaped, __ATOMIC_ACQUIRE), "keep",
			     (unsigned long long)__atomic_load_n(&p->keep, __ATOMIC_ACQUIRE));
}

/* ---- pins ---- */

static void unpin_files(const char *dir)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/arena", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/ds_trim", dir);
	unlink(path);
#define UNPIN(id, name)                                                \
	snprintf(path, sizeof(path), "%s/ds_run_" #name, dir);         \
	unlink(path);
	DS_REGISTRY(UNPIN)
#undef UNPIN
	rmdir(dir);
}

/* pin(dir): the arena map and every ds_run_NAME program, for attach_pinned */
static PyObject *DsArena_pin(DsArenaObject *self, PyObject *args)
{
	const char *dir;
	char path[512];
	int ret = 0;

	if (!PyArg_ParseTuple(args, "s", &dir) || !arena_ready(self))
		return NULL;
	if (self->share)
		return ap_raise(EPERM, "%s", "a session's arena is pinned by the session (its run directory holds the data-structure programs too)");
	if (!self->skel)
		return ap_raise(EPERM, "only the process that loaded the arena pins it");
	if (self->pinned)
		return ap_raise(EEXIST, "already pinned under %s", self->pin_dir);
	if (strlen(dir) >= sizeof(self->pin_dir))
		return ap_raise(ENAMETOOLONG, "pin directory name too long: %s", dir);
	if (mkdir(dir, 0700) && errno != EEXIST)
		return ap_raise(errno, "cannot create %s: %s (is bpffs mounted?)", dir, strerror(errno));
	snprintf(path, sizeof(path), "%s/arena", dir);
	ret = bpf_map__pin(self->skel->maps.arena, path);
#define PIN(id, name)                                                          \
	if (!ret) {                                                            \
		snprintf(path, sizeof(path), "%s/ds_run_" #name, dir);         \
		ret = bpf_program__pin(self->skel->progs.ds_run_##name, path); \
	}
	DS_REGISTRY(PIN)
#undef PIN
	if (!ret) {
		snprintf(path, sizeof(path), "%s/ds_trim", dir);
		ret = bpf_program__pin(self->skel->progs.ds_trim, path);
	}
	if (ret) {
		unpin_files(dir);
		return ap_raise(ret, "cannot pin BPF objects under %s: %s", dir, strerror(-ret));
	}
	snprintf(self->pin_dir, sizeof(self->pin_dir), "%s", dir);
	self->pinned = 1;
	Py_RETURN_NONE;
}

static PyObject *DsArena_unpin(DsArenaObject *self, PyObject *Py_UNUSED(ignored))
{
	if (self->pinned)
		unpin_files(self->pin_dir);
	self->pinned = 0;
	Py_RETURN_NONE;
}

static PyMethodDef DsArena_methods[] = {
	{ "create", (PyCFunction)(void (*)(void))DsArena_create, METH_VARARGS | METH_KEYWORDS,
	  "create(type, capacity=0, name=None) -> (address, type id)" },
	{ "lookup", (PyCFunction)DsArena_lookup, METH_VARARGS, "lookup(name) -> (address, type id) or None" },
	{ "instances", (PyCFunction)DsArena_instances, METH_NOARGS, "[(name, address, type id)]" },
	{ "exec", (PyCFunction)(void (*)(void))DsArena_exec, METH_VARARGS | METH_KEYWORDS,
	  "exec(ds, type, ops, keys=None, vals=None, *, results=None, okeys=None, ovals=None, count=-1, "
	  "stop_on_fail=False) -> operations run (GIL released)" },
	{ "run_kernel", (PyCFunction)(void (*)(void))DsArena_run_kernel, METH_VARARGS | METH_KEYWORDS,
	  "run_kernel(ds, type, count, mix=(1,0,0,0), key_lo=0, key_span=1, seq=False, seed=1, val_base=0, "
	  "stop_on_fail=False, collect=False, per_call=4096, history=False, agent=0, val_key=False) -> dict" },
	{ "kernel_buffers", (PyCFunction)(void (*)(void))DsArena_kernel_buffers, METH_VARARGS | METH_KEYWORDS,
	  "kernel_buffers(per_call=4096, collect=False, history=False) -> None: the calling thread's "
	  "arena buffers for run_kernel, taken now (ENOMEM when the arena has no room)" },
	{ "run_loop", (PyCFunction)(void (*)(void))DsArena_run_loop, METH_VARARGS | METH_KEYWORDS,
	  "run_loop(ds, type, control, slot, *, role=0, ops=0, mix=(1,0,0), key_lo=1, keys=1, theta=0.0, "
	  "seed=1, producer=0, net=None, agent=0, sample_shift=6, sample_cap=65536, hist_cap=0, net_own=False) -> dict "
	  "(the stress driver's timed loop, GIL released)" },
	{ "verify", (PyCFunction)(void (*)(void))DsArena_verify, METH_VARARGS | METH_KEYWORDS,
	  "verify(ds, type, kernel=False) -> (result, count, keysum, valsum, where)" },
	{ "iterate", (PyCFunction)(void (*)(void))DsArena_iterate, METH_VARARGS | METH_KEYWORDS,
	  "iterate(ds, type, lo=0, hi=2**64-1, cap=2**20, kernel=False) -> (result, bytes)" },
	{ "stats", (PyCFunction)DsArena_stats, METH_VARARGS, "stats(ds, type) -> per-side statistics" },
	{ "heap_stats", (PyCFunction)DsArena_heap_stats, METH_NOARGS, "the allocator's counters" },
	{ "epoch_stats", (PyCFunction)DsArena_epoch_stats, METH_NOARGS, "reclamation's counters" },
	{ "trim", (PyCFunction)(void (*)(void))DsArena_trim, METH_VARARGS | METH_KEYWORDS,
	  "trim(max_pages=2**20, force=True) -> dict: give free pages back to the kernel" },
	{ "set_trim", (PyCFunction)DsArena_set_trim, METH_VARARGS, "set_trim(keep, high): trim watermarks in pages" },
	{ "synchronize", (PyCFunction)DsArena_synchronize, METH_VARARGS,
	  "synchronize(max_tries=100000) -> True once everything retired is freed" },
	{ "kernel_totals", (PyCFunction)DsArena_kernel_totals, METH_NOARGS, "the kernel programs' counters" },
	{ "info", (PyCFunction)DsArena_info, METH_NOARGS, "where the arena and the space are" },
	{ "refill", (PyCFunction)DsArena_refill, METH_VARARGS,
	  "refill(ds, type) -> result: fill the kernel CPUs' page pools (a sleepable kernel batch)" },
	{ "proc_seed", (PyCFunction)DsArena_proc_seed, METH_VARARGS,
	  "proc_seed(table, entries) -> (inserted, present, nomem): seed the process table" },
	{ "proc_snapshot", (PyCFunction)DsArena_proc_snapshot, METH_VARARGS,
	  "proc_snapshot(table, cap=65536) -> bytes: the live process table's entries" },
	{ "proc_counts", (PyCFunction)DsArena_proc_counts, METH_NOARGS,
	  "proc_counts() -> dict: a capture session's process-table counters" },
	{ "pin", (PyCFunction)DsArena_pin, METH_VARARGS, "pin(dir): pin the arena and the kernel programs" },
	{ "unpin", (PyCFunction)DsArena_unpin, METH_NOARGS, "remove the pins" },
	{ "close", (PyCFunction)DsArena_close, METH_NOARGS, "unmap and unload" },
	{ NULL, NULL, 0, NULL },
};

static PyTypeObject DsArenaType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pipeline._ds.DsArena",
	.tp_basicsize = sizeof(DsArenaObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)DsArena_init,
	.tp_dealloc = (destructor)DsArena_dealloc,
	.tp_methods = DsArena_methods,
	.tp_doc = "DsArena(pages=32768, pinned=None, pool_pages=4, poison=False, session=None): the data-structure arena",
};

/* ds_meta() -> [dict]: the registry (include/ds/registry.h) */
static PyObject *core_ds_meta(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
	PyObject *list = PyList_New(0);
	unsigned int i;

	for (i = 0; list && i < DS_TYPES_END; i++) {
		const struct ds_meta *m = ds_meta_of(i);
		PyObject *d;

		if (!m)
			continue;
		d = Py_BuildValue("{sIsssssssIsIsIsIsI}", "id", m->id, "name", m->name, "description", m->description,
				  "progress", m->progress, "flags", m->flags, "model", m->model, "ops", m->ops,
				  "node_size", m->node_size, "head_size", m->head_size);
		/* PyList_Append takes its own reference: ours goes either way */
		if (!d || PyList_Append(list, d))
			Py_CLEAR(list);
		Py_XDECREF(d);
	}
	return list;
}

static PyMethodDef ds_functions[] = {
	{ "ds_meta", core_ds_meta, METH_NOARGS, "the registered data structures and their metadata" },
	{ NULL, NULL, 0, NULL },
};

/* ---- the contract's codes, as Python enums ---- */

struct ap_named {
	const char *name;
	long value;
};

/* { "OK", DS_OK }: the member name is the C name without its prefix. */
#define AP_NAMED(prefix, n) { #n, prefix##n }

static const struct ap_named result_codes[] = {
	AP_NAMED(DS_, OK),      AP_NAMED(DS_, NOT_FOUND), AP_NAMED(DS_, EXISTS), AP_NAMED(DS_, NOMEM),
	AP_NAMED(DS_, INVALID), AP_NAMED(DS_, CORRUPT),   AP_NAMED(DS_, BUSY),   AP_NAMED(DS_, FULL),
};

static const struct ap_named flag_bits[] = {
	AP_NAMED(DS_F_, LOCK_FREE), AP_NAMED(DS_F_, BOUNDED), AP_NAMED(DS_F_, KEYED),
	AP_NAMED(DS_F_, ORDERED),   AP_NAMED(DS_F_, FIFO),    AP_NAMED(DS_F_, LIFO),
	AP_NAMED(DS_F_, RECLAIM),   AP_NAMED(DS_F_, READS_LOCKFREE),
};

static const struct ap_named models[] = {
	AP_NAMED(DS_MODEL_, ANY),
	AP_NAMED(DS_MODEL_, MPMC),
	AP_NAMED(DS_MODEL_, MPSC),
	AP_NAMED(DS_MODEL_, SPSC),
};

/* m.cls = enum.KIND(cls, {name: value}, module=m.__name__). With upper set the
 * names are upper-cased, for the op names, which are spelled in lower case. */
static int add_enum(PyObject *m, PyObject *enum_mod, const char *kind, const char *cls, const struct ap_named *t,
		    size_t n, int upper)
{
	PyObject *factory = PyObject_GetAttrString(enum_mod, kind);
	PyObject *members = PyDict_New(), *args = NULL, *kwargs = NULL, *type = NULL;
	size_t i;
	int ret = -1;

	if (!factory || !members)
		goto out;
	for (i = 0; i < n; i++) {
		char name[32];
		PyObject *v;
		size_t j;

		snprintf(name, sizeof(name), "%s", t[i].name);
		for (j = 0; upper && name[j]; j++)
			name[j] = (char)toupper((unsigned char)name[j]);
		v = PyLong_FromLong(t[i].value);
		if (!v || PyDict_SetItemString(members, name, v)) {
			Py_XDECREF(v);
			goto out;
		}
		Py_DECREF(v);
	}
	args = Py_BuildValue("(sO)", cls, members);
	kwargs = Py_BuildValue("{sN}", "module", PyModule_GetNameObject(m));
	if (args && kwargs)
		type = PyObject_Call(factory, args, kwargs);
	if (type && !PyModule_AddObject(m, cls, type)) {
		type = NULL; /* the module holds it */
		ret = 0;
	}
out:
	Py_XDECREF(type);
	Py_XDECREF(kwargs);
	Py_XDECREF(args);
	Py_XDECREF(members);
	Py_XDECREF(factory);
	return ret;
}

static int add_enums(PyObject *m)
{
	struct ap_named ops[DS_OP__COUNT];
	PyObject *enum_mod = PyImport_ImportModule("enum");
	int o, ret;

	if (!enum_mod)
		return -1;
	for (o = 0; o < DS_OP__COUNT; o++)
		ops[o] = (struct ap_named){ op_names[o], o };
#define N(t) (sizeof(t) / sizeof((t)[0]))
	ret = add_enum(m, enum_mod, "IntEnum", "DsResult", result_codes, N(result_codes), 0) ||
	      add_enum(m, enum_mod, "IntEnum", "DsOp", ops, DS_OP__COUNT, 1) ||
	      add_enum(m, enum_mod, "IntFlag", "DsFlag", flag_bits, N(flag_bits), 0) ||
	      add_enum(m, enum_mod, "IntEnum", "DsModel", models, N(models), 0) ? -1 : 0;
#undef N
	Py_DECREF(enum_mod);
	return ret;
}

int ap_ds_add_to_module(PyObject *m)
{
	static const struct ap_named consts[] = {
		{ "DS_BATCH_MAX", DS_BATCH_MAX },
		{ "DS_ARENA_BASE_PAGES", AP_DS_SPACE_FIRST },
		{ "PROC_ENTRY_SIZE", sizeof(struct ap_proc) },
		{ "PROC_SEEDED", AP_PROC_SEEDED },
		{ "PROC_EXE_TRUNCATED", AP_PROC_EXE_TRUNCATED },
		{ "PROC_EXE_CAP", AP_PROC_EXE_CAP },
		{ "PROC_EXITED", AP_PROC_EXITED },
	};
	PyObject *f;
	size_t i;

	if (PyType_Ready(&DsArenaType) < 0)
		return -1;
	Py_INCREF(&DsArenaType);
	if (PyModule_AddObject(m, "DsArena", (PyObject *)&DsArenaType)) {
		Py_DECREF(&DsArenaType);
		return -1;
	}
	for (i = 0; i < sizeof(consts) / sizeof(consts[0]); i++)
		if (PyModule_AddIntConstant(m, consts[i].name, consts[i].value))
			return -1;
	if (PyModule_AddIntConstant(m, "DS_ARENA_BASE", (long)ARENA_BASE))
		return -1;
	if (add_enums(m))
		return -1;
	f = PyCFunction_NewEx(&ds_functions[0], NULL, NULL);
	if (!f || PyModule_AddObject(m, "ds_meta", f)) {
		Py_XDECREF(f);
		return -1;
	}
	return 0;
}
