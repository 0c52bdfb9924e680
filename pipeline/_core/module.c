// SPDX-License-Identifier: MIT
/*
 * pipeline._core, the runtime: the Python face of the capture session's BPF
 * side. Hot paths (draining the queue, formatting a batch, running bursts)
 * release the GIL and handle a whole batch per call. The data structures
 * are pipeline._ds, the native benchmarks pipeline.bench._native: this
 * module holds neither (tests/test_modules.py checks its symbols).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <linux/membarrier.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "cgfh.h"
#include "cgtable.h"
#include "coreutil.h"
#include "filtergen.h"
#include "jsonfmt.h"
#include "libbpflog.h"
#include "procfmt.h"
#include "session.h"

/* Batches are bounded so one drain call never holds the loop for long. */
#define MAX_BATCH 65536
/* the most a drain's output buffer is sized for, in bytes */
#define DRAIN_BUF_MAX ((size_t)64 << 20)


typedef struct {
	PyObject_HEAD
	struct ap_session s;
	int open;
	char *buf; /* formatting buffer, grown to the largest batch asked for */
	size_t buf_cap;
	/* cgroup fields (cgtable.h): when cg_on, drain_json stops at a record
	 * whose cgroup id is not in cg and leaves the id in cg_miss */
	struct ap_cgtab cg;
	int cg_on;
	int draining; /* the GIL is released over cg: no change meanwhile */
	uint64_t cg_miss;
	struct ap_procfmt pf; /* each event's process context, when asked for */
} SessionObject;

/* Before the session unmaps the arena: the drain's epoch record goes back. */
static void procfmt_release(SessionObject *self)
{
	if (self->pf.attached && self->open) {
		/* exits delete at once again: nobody would reap */
		__atomic_store_n(&self->s.root->proc.keep, 0, __ATOMIC_RELEASE);
		ds_user_detach(&self->pf.c);
	}
	memset(&self->pf, 0, sizeof(self->pf));
}

static int session_ready(SessionObject *self)
{
	if (!self->open) {
		PyErr_SetString(PyExc_ValueError, "session is closed");
		return 0;
	}
	return 1;
}

static int Session_init(SessionObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "arena_pages", "queue_capacity", NULL };
	unsigned long long pages = 32768, cap = 65536;
	char err[AP_ERR_LEN];
	int ret;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|KK", kwlist, &pages, &cap))
		return -1;
	procfmt_release(self);
	if (self->open)
		ap_session_close(&self->s);
	self->open = 0;
	Py_BEGIN_ALLOW_THREADS
	ret = ap_session_open(&self->s, pages, cap, err, sizeof(err));
	Py_END_ALLOW_THREADS
	if (ret) {
		ap_raise(ret, "%s", err);
		return -1;
	}
	self->open = 1;
	return 0;
}

static void Session_dealloc(SessionObject *self)
{
	procfmt_release(self);
	if (self->open)
		ap_session_close(&self->s);
	free(self->buf);
	ap_cg_free(&self->cg);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Session_attach(SessionObject *self, PyObject *args)
{
	const char *which;
	char err[AP_ERR_LEN];
	int ret;

	if (!PyArg_ParseTuple(args, "s", &which) || !session_ready(self))
		return NULL;
	if (strcmp(which, "lsm") == 0)
		ret = ap_session_attach_lsm(&self->s, err, sizeof(err));
	else if (strcmp(which, "tracepoint") == 0)
		ret = ap_session_attach_tracepoint(&self->s, err, sizeof(err));
	else if (strcmp(which, "getppid") == 0)
		ret = ap_session_attach_getppid(&self->s, err, sizeof(err));
	else
		return ap_raise(EINVAL, "%s", "trigger must be 'lsm', 'tracepoint' or 'getppid'");
	if (ret)
		return ap_raise(ret, "%s", err);
	Py_RETURN_NONE;
}

static PyObject *Session_detach(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (self->open)
		ap_session_detach(&self->s);
	Py_RETURN_NONE;
}

static PyObject *Session_set_filter(SessionObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "pid", "comm", "ignore_pid", NULL };
	unsigned int pid = 0, ignore = 0;
	const char *comm = NULL;
	Py_ssize_t comm_len = 0;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|Iz#I", kwlist, &pid, &comm, &comm_len, &ignore) ||
	    !session_ready(self))
		return NULL;
	if (comm && (comm_len >= AP_COMM_LEN || (Py_ssize_t)strlen(comm) != comm_len))
		return ap_raise(EINVAL, "%s", "comm filter must be at most 15 bytes, without NUL");
	ap_session_set_filter(&self->s, pid, comm, ignore);
	Py_RETURN_NONE;
}

/* The prefixes of a list of bytes objects into ps (at most cap). */
static int filter_prefixes(PyObject *seq, struct ap_filter_prefix *ps, size_t cap, size_t *n)
{
	Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);

	if ((size_t)len > cap) {
		PyErr_Format(PyExc_ValueError, "at most %zu prefixes of each kind", cap);
		return -1;
	}
	for (Py_ssize_t i = 0; i < len; i++) {
		PyObject *o = PySequence_Fast_GET_ITEM(seq, i);
		char *b;
		Py_ssize_t blen;

		if (PyBytes_AsStringAndSize(o, &b, &blen))
			return -1;
		ps[i].bytes = (const unsigned char *)b;
		ps[i].len = (size_t)blen;
	}
	*n = (size_t)len;
	return 0;
}

/* set_filters(include, exclude, uids, cgroups) -> generation: the path
 * prefixes (bytes), uids (ints) and cgroups ((id, level) pairs) as the next
 * generation of the kernel-evaluated filters; arena stores only. */
static PyObject *Session_set_filters(SessionObject *self, PyObject *args)
{
	PyObject *inc, *exc, *uids, *cgs, *fi = NULL, *fe = NULL, *fu = NULL, *fc = NULL;
	PyObject *res = NULL;
	struct ap_filter_prefix pi[AP_FILTER_MAX_PREFIXES], pe[AP_FILTER_MAX_PREFIXES];
	uint32_t u[AP_FILTER_MAX_UIDS];
	struct ap_filter_cgroup c[AP_FILTER_MAX_CGROUPS];
	struct ap_filter_spec sp = { .include = pi, .exclude = pe, .uids = u, .cgroups = c };
	char err[AP_ERR_LEN];
	uint64_t gen = 0;
	int ret;

	if (!PyArg_ParseTuple(args, "OOOO", &inc, &exc, &uids, &cgs) || !session_ready(self))
		return NULL;
	fi = PySequence_Fast(inc, "include must be a sequence of bytes");
	fe = fi ? PySequence_Fast(exc, "exclude must be a sequence of bytes") : NULL;
	fu = fe ? PySequence_Fast(uids, "uids must be a sequence of ints") : NULL;
	fc = fu ? PySequence_Fast(cgs, "cgroups must be a sequence of (id, level)") : NULL;
	if (!fc || filter_prefixes(fi, pi, AP_FILTER_MAX_PREFIXES, &sp.n_include) ||
	    filter_prefixes(fe, pe, AP_FILTER_MAX_PREFIXES, &sp.n_exclude))
		goto out;
	sp.n_uids = (size_t)PySequence_Fast_GET_SIZE(fu);
	sp.n_cgroups = (size_t)PySequence_Fast_GET_SIZE(fc);
	if (sp.n_uids > AP_FILTER_MAX_UIDS || sp.n_cgroups > AP_FILTER_MAX_CGROUPS) {
		PyErr_Format(PyExc_ValueError, "at most %d uids and %d cgroups", AP_FILTER_MAX_UIDS,
			     AP_FILTER_MAX_CGROUPS);
		goto out;
	}
	for (size_t i = 0; i < sp.n_uids; i++) {
		unsigned long v = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(fu, (Py_ssize_t)i));

		if (PyErr_Occurred())
			goto out;
		if (v >= AP_FILTER_UID_EMPTY) {
			PyErr_Format(PyExc_ValueError, "uid %lu is out of range", v);
			goto out;
		}
		u[i] = (uint32_t)v;
	}
	for (size_t i = 0; i < sp.n_cgroups; i++) {
		unsigned long long id;
		unsigned int level;

		if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fc, (Py_ssize_t)i), "KI", &id, &level))
			goto out;
		c[i].id = id;
		c[i].level = level;
	}
	ret = ap_filter_publish(self->s.root, &sp, &gen, err, sizeof(err));
	if (ret)
		ap_raise(ret, "%s", err);
	else
		res = PyLong_FromUnsignedLongLong(gen);
out:
	Py_XDECREF(fi);
	Py_XDECREF(fe);
	Py_XDECREF(fu);
	Py_XDECREF(fc);
	return res;
}

/* filter_state() -> (generation in force, events emitted unjudged) */
static PyObject *Session_filter_state(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (!session_ready(self))
		return NULL;
	return Py_BuildValue(
		"(KK)",
		(unsigned long long)(arena_atomic_load(&self->s.root->filter_seq, ARENA_ACQUIRE) >> 1),
		(unsigned long long)arena_atomic_load(&self->s.root->filter_unjudged, ARENA_RELAXED));
}

static PyObject *Session_enable(SessionObject *self, PyObject *args)
{
	int on = 1;

	if (!PyArg_ParseTuple(args, "|p", &on) || !session_ready(self))
		return NULL;
	ap_session_enable(&self->s, on);
	Py_RETURN_NONE;
}

static PyObject *Session_doorbell_fd(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (!session_ready(self))
		return NULL;
	return PyLong_FromLong(ap_session_doorbell_fd(&self->s));
}

static PyObject *Session_consume_doorbell(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	int n;

	if (!session_ready(self))
		return NULL;
	n = ap_session_consume_doorbell(&self->s);
	return PyLong_FromLong(n < 0 ? 0 : n);
}

static PyObject *Session_announce_sleep(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (!session_ready(self))
		return NULL;
	evq_announce_sleep(self->s.q);
	Py_RETURN_NONE;
}

static PyObject *Session_may_sleep(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (!session_ready(self))
		return NULL;
	return PyBool_FromLong(evq_may_sleep(self->s.q));
}

static PyObject *Session_cancel_sleep(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (!session_ready(self))
		return NULL;
	evq_cancel_sleep(self->s.q);
	Py_RETURN_NONE;
}

static PyObject *Session_nap(SessionObject *self, PyObject *args)
{
	unsigned long long threshold;

	if (!PyArg_ParseTuple(args, "K", &threshold) || !session_ready(self))
		return NULL;
	evq_nap(self->s.q, threshold);
	Py_RETURN_NONE;
}

static PyObject *Session_ready(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (!session_ready(self))
		return NULL;
	return PyBool_FromLong(evq_peek(self->s.q, self->s.q->head) != NULL);
}

/* grace_period() -> bool: an RCU grace period, the barrier that reaches every
 * non-sleepable producer (evq.h, "Doorbell"). Blocks for milliseconds: call
 * it from a worker thread. False when the kernel has no membarrier(). */
static PyObject *core_grace_period(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
	long ret;

	Py_BEGIN_ALLOW_THREADS
	ret = syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0);
	Py_END_ALLOW_THREADS
	return PyBool_FromLong(ret == 0);
}

struct format_ctx {
	char *out;
	size_t used;
	int64_t wall_off;
	struct ap_procfmt *pf; /* add the process context, or NULL */
};

/* The record of n bytes just written at f->used, with the process context
 * (procfmt.h) before its closing "}\n" when asked for; returns its length. */
static size_t with_context(struct format_ctx *f, size_t n, const struct ap_event *ev)
{
	if (!f->pf)
		return n;
	n -= 2;
	n += ap_procfmt_fields(f->pf, f->out + f->used + n, ev);
	memcpy(f->out + f->used + n, "}\n", 2);
	return n + 2;
}

/* A record that carries no cgroup id (none of the kernel's producers
 * writes 0; the root cgroup is 1) has no cgroup to look up. */
static const char cg_none[] = ",\"cgroup\":null";

/* The drain with the cgroup table: as evq_consume with format_one, but it
 * stops before the first record whose cgroup id the table lacks and leaves
 * that id in cg_miss. Consecutive records mostly share a cgroup, so the
 * last entry found is tried first. */
static uint64_t drain_cg(SessionObject *self, uint64_t max, struct format_ctx *f)
{
	struct evq *q = self->s.q;
	uint64_t head = q->head, n = 0, last_id = 0;
	const char *frag = cg_none;
	size_t frag_len = sizeof(cg_none) - 1;
	const struct ap_event *rec;

	while (n < max && (rec = evq_peek(q, head)) != NULL) {
		uint64_t id = rec->cgroup_id;

		if (id != last_id) {
			const struct ap_cg_entry *e = ap_cg_get(&self->cg, id);

			if (e) {
				frag = e->frag;
				frag_len = e->len;
			} else if (id) {
				self->cg_miss = id;
				break;
			} else {
				frag = cg_none;
				frag_len = sizeof(cg_none) - 1;
			}
			last_id = id;
		}
		f->used += with_context(f, ap_format_event_cg(f->out + f->used, rec, f->wall_off, frag,
								 frag_len), rec);
		head = evq_ring_consumed(q, head, ++n);
	}
	evq_ring_consume_done(q, head, n);
	return n;
}

static void format_one(const struct ap_event *ev, void *ctx)
{
	struct format_ctx *f = ctx;

	f->used += with_context(f, ap_format_event(f->out + f->used, ev, f->wall_off), ev);
}

/*
 * drain_json(max_events, wall_offset_ns) -> (bytes, count)
 * Formats up to max_events ready records as JSON lines, straight from the
 * arena slots, and releases them.
 */
static PyObject *Session_drain_json(SessionObject *self, PyObject *args)
{
	unsigned long long max;
	long long wall_off = 0;
	struct format_ctx f;
	size_t line_max;
	uint64_t n;

	if (!PyArg_ParseTuple(args, "K|L", &max, &wall_off) || !session_ready(self))
		return NULL;
	if (max == 0 || max > MAX_BATCH)
		max = MAX_BATCH;
	line_max = AP_JSON_LINE_MAX + (self->cg_on ? self->cg.longest + sizeof(cg_none) : 0) +
		   (self->pf.table ? AP_PROCFMT_LINE(self->pf.depth) : 0);
	/* deep ancestry makes the worst-case line long: fewer records per
	 * batch keep the buffer bounded (the rest wait for the next drain) */
	if (max * line_max > DRAIN_BUF_MAX && max > DRAIN_BUF_MAX / line_max)
		max = DRAIN_BUF_MAX / line_max ? DRAIN_BUF_MAX / line_max : 1;
	if (self->buf_cap < max * line_max) {
		char *nb = realloc(self->buf, max * line_max);

		if (!nb)
			return PyErr_NoMemory();
		self->buf = nb;
		self->buf_cap = max * line_max;
	}
	f.out = self->buf;
	f.used = 0;
	f.wall_off = wall_off;
	f.pf = NULL;
	self->cg_miss = 0;
	self->draining = 1;
	Py_BEGIN_ALLOW_THREADS
	/* one epoch section for the batch: no table entry it reads is freed meanwhile */
	if (self->pf.table && ap_procfmt_begin(&self->pf) == 0)
		f.pf = &self->pf;
	if (self->cg_on)
		n = drain_cg(self, max, &f);
	else
		n = evq_consume(self->s.q, max, format_one, &f);
	if (f.pf)
		ap_procfmt_end(&self->pf);
	/* exited entries the events drained so far were the last to need */
	ap_procfmt_reap(&self->pf, self->s.q->head);
	Py_END_ALLOW_THREADS
	self->draining = 0;
	PyObject *data = PyBytes_FromStringAndSize(self->buf, (Py_ssize_t)f.used);
	if (!data)
		return NULL;
	return Py_BuildValue("(NK)", data, (unsigned long long)n);
}

static int cg_changeable(SessionObject *self)
{
	if (self->draining) {
		PyErr_SetString(PyExc_RuntimeError, "the cgroup table cannot change during a drain");
		return 0;
	}
	return 1;
}

/* cgroup_resolve(on): drain_json adds the cgroup fields from the table and
 * stops at an id the table lacks (cgroup_miss) */
static PyObject *Session_cgroup_resolve(SessionObject *self, PyObject *args)
{
	int on;

	if (!PyArg_ParseTuple(args, "p", &on) || !cg_changeable(self))
		return NULL;
	self->cg_on = on;
	Py_RETURN_NONE;
}

/* Formats the cgroup fields from Python arguments into a new buffer. */
static char *cg_fields_from(const char *path, Py_ssize_t path_len, const char *rt,
			    Py_ssize_t rt_len, const char *cid, Py_ssize_t cid_len, size_t *len)
{
	char *buf;

	if (path && (path_len > AP_CG_PATH_MAX || memchr(path, 0, (size_t)path_len))) {
		ap_raise(EINVAL, "cgroup path must be at most %d bytes without NUL", AP_CG_PATH_MAX);
		return NULL;
	}
	if (!rt != !cid || (rt && (rt_len > 64 || cid_len > 256))) {
		ap_raise(EINVAL, "%s", "container runtime and id go together (at most 64 and 256 bytes)");
		return NULL;
	}
	buf = malloc(AP_CG_FIELDS_MAX((size_t)path_len, (size_t)rt_len, (size_t)cid_len));
	if (!buf) {
		PyErr_NoMemory();
		return NULL;
	}
	*len = ap_format_cgroup_fields(buf, (const unsigned char *)path, (size_t)path_len, rt,
				       (size_t)rt_len, cid, (size_t)cid_len);
	return buf;
}

/* cgroup_set(id, path, runtime=None, container_id=None): the fields for
 * cgroup id (path None: unknown) */
static PyObject *Session_cgroup_set(SessionObject *self, PyObject *args)
{
	unsigned long long id;
	const char *path, *rt = NULL, *cid = NULL;
	Py_ssize_t path_len = 0, rt_len = 0, cid_len = 0;
	size_t len;
	char *frag;
	int ret;

	if (!PyArg_ParseTuple(args, "Kz#|z#z#", &id, &path, &path_len, &rt, &rt_len, &cid,
			      &cid_len) ||
	    !cg_changeable(self))
		return NULL;
	if (!id)
		return ap_raise(EINVAL, "%s", "cgroup id 0 names no cgroup");
	frag = cg_fields_from(path, path_len, rt, rt_len, cid, cid_len, &len);
	if (!frag)
		return NULL;
	ret = ap_cg_put(&self->cg, id, frag, len);
	free(frag);
	if (ret)
		return ap_raise(ret, "%s", "cannot store the cgroup's fields");
	Py_RETURN_NONE;
}

static PyObject *Session_cgroup_drop(SessionObject *self, PyObject *args)
{
	unsigned long long id;

	if (!PyArg_ParseTuple(args, "K", &id) || !cg_changeable(self))
		return NULL;
	return PyBool_FromLong(ap_cg_drop(&self->cg, id));
}

static PyObject *Session_cgroup_clear(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (!cg_changeable(self))
		return NULL;
	ap_cg_clear(&self->cg);
	Py_RETURN_NONE;
}

static PyObject *Session_cgroup_count(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	return PyLong_FromSize_t(self->cg.count);
}

static PyObject *Session_cgroup_evicted(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	return PyLong_FromUnsignedLongLong(self->cg.evicted);
}

static PyObject *Session_cgroup_miss(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	return PyLong_FromUnsignedLongLong(self->cg_miss);
}

static void checksum_one(const struct ap_event *ev, void *ctx)
{
	*(uint64_t *)ctx += ev->seq + ev->name_len;
}

/*
 * drain_discard(max_events) -> (count, checksum)
 * The transport alone: reads each ready record's fields and releases it,
 * without formatting. The checksum (sum of seq) keeps the reads honest.
 */
static PyObject *Session_drain_discard(SessionObject *self, PyObject *args)
{
	unsigned long long max;
	uint64_t n, sum = 0;

	if (!PyArg_ParseTuple(args, "K", &max) || !session_ready(self))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	n = evq_consume(self->s.q, max, checksum_one, &sum);
	Py_END_ALLOW_THREADS
	return Py_BuildValue("(KK)", (unsigned long long)n, (unsigned long long)sum);
}

static PyObject *Session_stats(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	struct evq *q;
	uint64_t head, tail;

	if (!session_ready(self))
		return NULL;
	q = self->s.q;
	head = arena_atomic_load(&q->head, ARENA_ACQUIRE);
	tail = arena_atomic_load(&q->tail, ARENA_ACQUIRE);
	return Py_BuildValue(
		"{sKsKsKsKsKsKsKsKsKsKsKsKsK}",
		"produced", (unsigned long long)arena_atomic_load(&q->seq, ARENA_ACQUIRE),
		"consumed", (unsigned long long)head,
		"queued", (unsigned long long)(tail - head),
		"reserved", (unsigned long long)tail,
		"dropped_full", (unsigned long long)arena_atomic_load(&q->dropped_full, ARENA_RELAXED),
		"dropped_busy", (unsigned long long)arena_atomic_load(&q->dropped_busy, ARENA_RELAXED),
		"high_water", (unsigned long long)arena_atomic_load(&q->high_water, ARENA_RELAXED),
		"wakeups", (unsigned long long)arena_atomic_load(&q->wakeups, ARENA_RELAXED),
		"capacity", (unsigned long long)q->capacity,
		"arena_pages", (unsigned long long)self->s.arena_pages,
		"arena_queue_pages", (unsigned long long)self->s.queue_pages,
		"arena_ds_pages", (unsigned long long)(self->s.arena_pages - self->s.ds_first_page),
		"arena_resident_bytes", (unsigned long long)ap_session_resident_bytes(&self->s));
}

/* oldest_ts() -> int: the queue's head record's stamp, 0 when none (session.h) */
static PyObject *Session_oldest_ts(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (!session_ready(self))
		return NULL;
	return PyLong_FromUnsignedLongLong(ap_session_oldest_ts(&self->s));
}

static int prog_stat_append(void *ctx, const char *name, uint32_t id, uint64_t run_time_ns,
			    uint64_t run_cnt)
{
	PyObject *item = Py_BuildValue("(sIKK)", name, (unsigned int)id,
				       (unsigned long long)run_time_ns,
				       (unsigned long long)run_cnt);
	int ret;

	if (!item)
		return -1;
	ret = PyList_Append((PyObject *)ctx, item);
	Py_DECREF(item);
	return ret;
}

/* prog_stats() -> [(name, id, run_time_ns, run_cnt)]: every loaded program */
static PyObject *Session_prog_stats(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	PyObject *out;

	if (!session_ready(self))
		return NULL;
	out = PyList_New(0);
	if (!out)
		return NULL;
	if (ap_session_prog_stats(&self->s, prog_stat_append, out)) {
		Py_DECREF(out);
		return NULL;
	}
	return out;
}

static PyObject *Session_pin(SessionObject *self, PyObject *args)
{
	const char *dir;
	char err[AP_ERR_LEN];
	int ret;

	if (!PyArg_ParseTuple(args, "s", &dir) || !session_ready(self))
		return NULL;
	ret = ap_session_pin(&self->s, dir, err, sizeof(err));
	if (ret)
		return ap_raise(ret, "%s", err);
	Py_RETURN_NONE;
}

static PyObject *Session_unpin(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (self->open)
		ap_session_unpin(&self->s);
	Py_RETURN_NONE;
}

static PyObject *run_burst_fd(int fd, unsigned long long total, unsigned long long per_call)
{
	uint64_t published = 0, dropped = 0;
	char err[AP_ERR_LEN];
	int ret;

	Py_BEGIN_ALLOW_THREADS
	ret = ap_run_burst(fd, total, per_call, &published, &dropped, err, sizeof(err));
	Py_END_ALLOW_THREADS
	if (ret)
		return ap_raise(ret, "%s", err);
	return Py_BuildValue("(KK)", (unsigned long long)published, (unsigned long long)dropped);
}

static PyObject *Session_burst(SessionObject *self, PyObject *args)
{
	unsigned long long total, per_call = 4096;

	if (!PyArg_ParseTuple(args, "K|K", &total, &per_call) || !session_ready(self))
		return NULL;
	return run_burst_fd(ap_session_burst_fd(&self->s), total, per_call);
}

/* attach_proctab() -> int: the process table's hash instance, kept by the
 * scheduler's tracepoints from now on (include/proc.h) */
static PyObject *Session_attach_proctab(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	char err[AP_ERR_LEN];
	uint64_t table = 0;
	int ret;

	if (!session_ready(self))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	ret = ap_session_attach_proctab(&self->s, &table, err, sizeof(err));
	Py_END_ALLOW_THREADS
	if (ret)
		return ap_raise(ret, "%s", err);
	return PyLong_FromUnsignedLongLong(table);
}

/* proc_counts() -> dict: what the process table's tracepoints did */
static PyObject *Session_proc_counts(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	struct ap_proc_counts *p;

	if (!session_ready(self))
		return NULL;
	p = &self->s.root->proc;
	return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsK}", "table", (unsigned long long)p->table,
			     "forks", (unsigned long long)p->forks, "execs", (unsigned long long)p->execs,
			     "exits", (unsigned long long)p->exits, "nomem", (unsigned long long)p->nomem,
			     "stale", (unsigned long long)p->stale, "missing",
			     (unsigned long long)p->missing, "busy", (unsigned long long)p->busy,
			     "reused", (unsigned long long)p->reused, "reaped",
			     (unsigned long long)p->reaped, "exited_pending",
			     (unsigned long long)self->pf.npending);
}

/* proc_reap() -> int: what a drain does after its batch, without one: the
 * exited entries no queued event can need are deleted and retired (the
 * run calls it on a timer, so entries do not wait for the next event) */
static PyObject *Session_proc_reap(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (!session_ready(self))
		return NULL;
	if (self->draining)
		return PyLong_FromLong(0); /* the drain reaps when it ends */
	return PyLong_FromUnsignedLongLong(ap_procfmt_reap(&self->pf, self->s.q->head));
}

/* set_ancestors(depth): from now on every drained event carries its process
 * context from the process table (attach_proctab first): "proc", "parent_comm",
 * "ancestors" up to depth levels */
static PyObject *Session_set_ancestors(SessionObject *self, PyObject *args)
{
	unsigned int depth;

	if (!PyArg_ParseTuple(args, "I", &depth) || !session_ready(self))
		return NULL;
	if (depth > AP_ANCESTORS_MAX)
		return ap_raise(EINVAL, "ancestors must be 0 to %d levels", AP_ANCESTORS_MAX);
	if (!self->s.root->proc.table)
		return ap_raise(ENOENT, "%s", "the session keeps no process table: attach_proctab() first");
	if (!self->pf.attached) {
		if (ds_user_attach(self->s.sp, &self->pf.c) != DS_OK)
			return ap_raise(EAGAIN, "%s", "no epoch record is free in the arena's space");
		self->pf.attached = 1;
	}
	self->pf.depth = depth;
	self->pf.table = self->s.root->proc.table;
	self->pf.counts = (struct ap_proc_counts *)&self->s.root->proc;
	/* from now on exits leave their entries to this reader */
	__atomic_store_n(&self->s.root->proc.keep, 1, __ATOMIC_RELEASE);
	Py_RETURN_NONE;
}

/* ds_share() -> capsule: the data-structure space and programs of this
 * session's arena, for pipeline._ds.DsArena(session=...) (dsshare.h). Waits
 * until the ds_ops programs are loaded. */
static PyObject *Session_ds_share(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	char err[AP_ERR_LEN];
	int ret;

	if (!session_ready(self))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	ret = ap_session_ds(&self->s, err, sizeof(err));
	Py_END_ALLOW_THREADS
	if (ret)
		return ap_raise(ret, "%s", err);
	return PyCapsule_New(&self->s.share, AP_DS_SHARE_CAPSULE, NULL);
}

static PyObject *Session_close(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
	procfmt_release(self);
	if (self->open)
		ap_session_close(&self->s);
	self->open = 0;
	Py_RETURN_NONE;
}

static PyMethodDef Session_methods[] = {
	{ "attach", (PyCFunction)Session_attach, METH_VARARGS,
	  "attach(trigger): attach the 'lsm' or the 'tracepoint' producer" },
	{ "detach", (PyCFunction)Session_detach, METH_NOARGS, "detach every producer" },
	{ "set_filter", (PyCFunction)(void (*)(void))Session_set_filter, METH_VARARGS | METH_KEYWORDS,
	  "set_filter(pid=0, comm=None, ignore_pid=0): kernel-side filters" },
	{ "set_filters", (PyCFunction)Session_set_filters, METH_VARARGS,
	  "set_filters(include, exclude, uids, cgroups) -> generation: publish the next filters" },
	{ "filter_state", (PyCFunction)Session_filter_state, METH_NOARGS,
	  "filter_state() -> (generation, unjudged)" },
	{ "enable", (PyCFunction)Session_enable, METH_VARARGS, "enable(on=True): start producing" },
	{ "doorbell_fd", (PyCFunction)Session_doorbell_fd, METH_NOARGS,
	  "the fd that becomes readable when a producer rings" },
	{ "consume_doorbell", (PyCFunction)Session_consume_doorbell, METH_NOARGS,
	  "clear pending doorbell records" },
	{ "announce_sleep", (PyCFunction)Session_announce_sleep, METH_NOARGS,
	  "tell producers the reader is going to sleep (then: grace_period, may_sleep)" },
	{ "may_sleep", (PyCFunction)Session_may_sleep, METH_NOARGS,
	  "after a grace period: True when the queue is still empty and the reader may wait" },
	{ "cancel_sleep", (PyCFunction)Session_cancel_sleep, METH_NOARGS, "withdraw the announcement" },
	{ "nap", (PyCFunction)Session_nap, METH_VARARGS,
	  "nap(threshold): ask producers to ring once the queue holds threshold events (then: a timed wait on the doorbell, cancel_sleep)" },
	{ "ready", (PyCFunction)Session_ready, METH_NOARGS, "True when a record is ready to drain" },
	{ "drain_json", (PyCFunction)Session_drain_json, METH_VARARGS,
	  "drain_json(max_events, wall_offset_ns=0) -> (bytes, count)" },
	{ "cgroup_resolve", (PyCFunction)Session_cgroup_resolve, METH_VARARGS,
	  "cgroup_resolve(on): drain_json adds the cgroup table's fields, stops at an unknown id" },
	{ "cgroup_set", (PyCFunction)Session_cgroup_set, METH_VARARGS,
	  "cgroup_set(id, path, runtime=None, container_id=None): the fields of a cgroup id" },
	{ "cgroup_drop", (PyCFunction)Session_cgroup_drop, METH_VARARGS,
	  "cgroup_drop(id) -> bool: forget an id" },
	{ "cgroup_clear", (PyCFunction)Session_cgroup_clear, METH_NOARGS, "forget every id" },
	{ "cgroup_count", (PyCFunction)Session_cgroup_count, METH_NOARGS, "ids in the table" },
	{ "cgroup_evicted", (PyCFunction)Session_cgroup_evicted, METH_NOARGS,
	  "ids the full table has evicted (cgtable.h)" },
	{ "cgroup_miss", (PyCFunction)Session_cgroup_miss, METH_NOARGS,
	  "the cgroup id that stopped the last drain_json, 0 when none did" },
	{ "drain_discard", (PyCFunction)Session_drain_discard, METH_VARARGS,
	  "drain_discard(max_events) -> (count, checksum)" },
	{ "stats", (PyCFunction)Session_stats, METH_NOARGS, "queue counters" },
	{ "oldest_ts", (PyCFunction)Session_oldest_ts, METH_NOARGS,
	  "CLOCK_MONOTONIC stamp of the record at the queue's head, 0 when none" },
	{ "prog_stats", (PyCFunction)Session_prog_stats, METH_NOARGS,
	  "[(name, id, run_time_ns, run_cnt)] of every loaded program" },
	{ "pin", (PyCFunction)Session_pin, METH_VARARGS, "pin(dir): pin the arena and burst program" },
	{ "unpin", (PyCFunction)Session_unpin, METH_NOARGS, "remove the pins" },
	{ "burst", (PyCFunction)Session_burst, METH_VARARGS,
	  "burst(total, per_call=4096) -> (published, dropped)" },
	{ "attach_proctab", (PyCFunction)Session_attach_proctab, METH_NOARGS,
	  "attach_proctab() -> address of the process table's hash, kept by the kernel from now on" },
	{ "set_ancestors", (PyCFunction)Session_set_ancestors, METH_VARARGS,
	  "set_ancestors(depth): each drained event carries its process context from the table" },
	{ "proc_reap", (PyCFunction)Session_proc_reap, METH_NOARGS,
	  "delete and retire the exited entries no queued event can need" },
	{ "proc_counts", (PyCFunction)Session_proc_counts, METH_NOARGS,
	  "what the process table's tracepoints did" },
	{ "ds_share", (PyCFunction)Session_ds_share, METH_NOARGS,
	  "the data-structure space of this arena, for pipeline._ds.DsArena(session=...)" },
	{ "close", (PyCFunction)Session_close, METH_NOARGS, "unload everything" },
	{ NULL, NULL, 0, NULL },
};

static PyTypeObject SessionType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pipeline._core.Session",
	.tp_basicsize = sizeof(SessionObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Session_init,
	.tp_dealloc = (destructor)Session_dealloc,
	.tp_methods = Session_methods,
	.tp_doc = "Session(arena_pages=32768, queue_capacity=65536): loaded BPF side and arena queue",
};

/* burst_pinned(path, total, per_call=4096) -> (published, dropped) */
static PyObject *core_burst_pinned(PyObject *Py_UNUSED(m), PyObject *args)
{
	const char *path;
	unsigned long long total, per_call = 4096;
	PyObject *res;
	int fd;

	if (!PyArg_ParseTuple(args, "sK|K", &path, &total, &per_call))
		return NULL;
	fd = bpf_obj_get(path);
	if (fd < 0) {
		char msg[AP_ERR_LEN];

		snprintf(msg, sizeof(msg), "cannot open pinned program %s: %s", path, strerror(errno));
		return ap_raise(errno, "%s", msg);
	}
	res = run_burst_fd(fd, total, per_call);
	close(fd);
	return res;
}

/*
 * format_event(name, comm, **fields) -> bytes
 * One record formatted by the drain's own formatter (ap_format_event), with
 * no kernel and no queue: lets tests put any name, comm and path through it.
 * The bytes follow the record's limits: name 1..NAME_KEEP bytes, comm at most
 * 15 bytes, path at most PATH_CAP bytes, no NUL in any (the kernel never
 * stores one inside them).
 */
static PyObject *core_format_event(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "name", "comm", "seq", "ts_ns", "wall_offset_ns", "pid", "tid",
				  "ppid", "uid", "cpu", "mode", "ret", "trigger", "syscall",
				  "flags", "open_flags", "path", "mnt_ns", "cgroup_id",
				  "cgroup_fields", "filter_gen", NULL };
	const char *name, *comm, *path = "";
	Py_ssize_t name_len, comm_len, path_len = 0;
	unsigned long long seq = 0, ts = 0;
	long long wall_off = 0;
	unsigned int pid = 0, tid = 0, ppid = 0, uid = 0, cpu = 0, mode = 0, flags = 0, oflags = 0;
	unsigned int mnt_ns = 0;
	unsigned short filter_gen = 0;
	unsigned long long cgroup_id = 0;
	const char *cgf = NULL;
	Py_ssize_t cgf_len = 0;
	int ret = 0;
	unsigned char trigger = 0, sys_nr = 0;
	struct ap_event ev;
	char *out;
	size_t n;
	PyObject *res;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "y#y#|$KKLIIIIIIibbIIy#IKz#H", kwlist, &name,
					 &name_len, &comm, &comm_len, &seq, &ts, &wall_off, &pid,
					 &tid, &ppid, &uid, &cpu, &mode, &ret, &trigger, &sys_nr,
					 &flags, &oflags, &path, &path_len, &mnt_ns, &cgroup_id, &cgf,
					 &cgf_len, &filter_gen))
		return NULL;
	if (name_len < 1 || name_len > AP_NAME_KEEP || memchr(name, 0, (size_t)name_len))
		return ap_raise(EINVAL, "%s", "name must be 1..255 bytes without NUL");
	if (comm_len >= AP_COMM_LEN || memchr(comm, 0, (size_t)comm_len))
		return ap_raise(EINVAL, "%s", "comm must be at most 15 bytes without NUL");
	if (path_len > AP_PATH_CAP || memchr(path, 0, (size_t)path_len))
		return ap_raise(EINVAL, "path must be at most %d bytes without NUL", AP_PATH_CAP);
	memset(&ev, 0, sizeof(ev));
	ev.seq = seq;
	ev.ts_ns = ts;
	ev.pid = pid;
	ev.tid = tid;
	ev.ppid = ppid;
	ev.uid = uid;
	ev.cpu = cpu;
	ev.mode = mode;
	ev.ret = ret;
	ev.trigger = trigger;
	ev.syscall = sys_nr;
	ev.flags = flags;
	ev.open_flags = oflags;
	ev.mnt_ns = mnt_ns;
	ev.cgroup_id = cgroup_id;
	ev.filter_gen = filter_gen;
	ev.name_len = (ap_u16)name_len;
	memcpy(ev.name, name, (size_t)name_len);
	memcpy(ev.comm, comm, (size_t)comm_len);
	/* as the kernel writes it: at the end of the field */
	ev.path_len = (ap_u16)path_len;
	memcpy(ev.path + (AP_PATH_CAP - path_len), path, (size_t)path_len);
	out = malloc(AP_JSON_LINE_MAX + (size_t)cgf_len);
	if (!out)
		return PyErr_NoMemory();
	n = ap_format_event_cg(out, &ev, wall_off, cgf, (size_t)cgf_len);
	res = PyBytes_FromStringAndSize(out, (Py_ssize_t)n);
	free(out);
	return res;
}

/* format_cgroup(path, runtime=None, container_id=None) -> bytes: the cgroup
 * fields as cgroup_set stores them, for format_event's cgroup_fields */
static PyObject *core_format_cgroup(PyObject *Py_UNUSED(m), PyObject *args)
{
	const char *path, *rt = NULL, *cid = NULL;
	Py_ssize_t path_len = 0, rt_len = 0, cid_len = 0;
	PyObject *res;
	size_t len;
	char *frag;

	if (!PyArg_ParseTuple(args, "z#|z#z#", &path, &path_len, &rt, &rt_len, &cid, &cid_len))
		return NULL;
	frag = cg_fields_from(path, path_len, rt, rt_len, cid, cid_len, &len);
	if (!frag)
		return NULL;
	res = PyBytes_FromStringAndSize(frag, (Py_ssize_t)len);
	free(frag);
	return res;
}

/* fs_magic(fd) -> int: the magic number of the file system fd is on (fstatfs) */
static PyObject *core_fs_magic(PyObject *Py_UNUSED(m), PyObject *args)
{
	struct statfs st;
	int fd;

	if (!PyArg_ParseTuple(args, "i", &fd))
		return NULL;
	if (fstatfs(fd, &st))
		return PyErr_SetFromErrno(PyExc_OSError);
	return PyLong_FromUnsignedLong((unsigned long)st.f_type);
}

static PyObject *core_libbpf_log(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
	return PyUnicode_DecodeUTF8(ap_libbpf_log(), (Py_ssize_t)strlen(ap_libbpf_log()), "replace");
}

static PyObject *core_set_verbose(PyObject *Py_UNUSED(m), PyObject *args)
{
	int on;

	if (!PyArg_ParseTuple(args, "p", &on))
		return NULL;
	ap_libbpf_verbose(on);
	Py_RETURN_NONE;
}

/* enable_bpf_stats() -> fd: the kernel counts every program's run time and
 * runs while this fd is open (BPF_ENABLE_STATS), and stops when it is closed or
 * the process exits, unlike the kernel.bpf_stats_enabled sysctl. */
static PyObject *core_enable_bpf_stats(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
	int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);

	if (fd < 0)
		return ap_raise(errno, "cannot enable BPF run-time statistics: %s", strerror(errno));
	return PyLong_FromLong(fd);
}

static PyMethodDef core_methods[] = {
	{ "burst_pinned", core_burst_pinned, METH_VARARGS,
	  "burst_pinned(path, total, per_call=4096): run a pinned burst program" },
	{ "enable_bpf_stats", core_enable_bpf_stats, METH_NOARGS,
	  "enable_bpf_stats() -> fd: BPF run-time statistics on while the fd is open" },
	{ "grace_period", core_grace_period, METH_NOARGS,
	  "an RCU grace period via membarrier(GLOBAL); False if unsupported" },
	{ "format_event", (PyCFunction)(void (*)(void))core_format_event, METH_VARARGS | METH_KEYWORDS,
	  "format_event(name, comm, *, seq=0, ts_ns=0, wall_offset_ns=0, pid=0, tid=0, ppid=0, uid=0, "
	  "cpu=0, mode=0, ret=0, trigger=0, syscall=0, flags=0, open_flags=0, path=b'', mnt_ns=0, "
	  "cgroup_id=0, cgroup_fields=None, filter_gen=0) -> bytes: one record "
	  "through the drain's JSON formatter" },
	{ "format_cgroup", core_format_cgroup, METH_VARARGS,
	  "format_cgroup(path, runtime=None, container_id=None) -> bytes: the cgroup fields" },
	{ "cgroup_lookup", ap_py_cgroup_lookup, METH_VARARGS,
	  "cgroup_lookup(mount_fd, id) -> (status, path or None, errno): one cgroup by id (cgfh.h)" },
	{ "fs_magic", core_fs_magic, METH_VARARGS,
	  "fs_magic(fd) -> int: the magic number of fd's file system (fstatfs)" },
	{ "libbpf_log", core_libbpf_log, METH_NOARGS, "libbpf's last messages" },
	{ "set_verbose", core_set_verbose, METH_VARARGS, "print libbpf debug output" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef core_module = {
	PyModuleDef_HEAD_INIT, "pipeline._core", "The BPF side of arena-pipeline.", -1, core_methods,
	NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
	PyObject *m;

	if (PyType_Ready(&SessionType) < 0)
		return NULL;
	m = PyModule_Create(&core_module);
	if (!m)
		return NULL;
	if (ap_add_core_error(m)) {
		Py_DECREF(m);
		return NULL;
	}
	Py_INCREF(&SessionType);
	PyModule_AddObject(m, "Session", (PyObject *)&SessionType);
	PyModule_AddIntConstant(m, "EVENT_SIZE", sizeof(struct ap_event));
	PyModule_AddIntConstant(m, "FILTER_PAGES", AP_FILTER_PAGES);
	PyModule_AddIntConstant(m, "FILTER_MAX_PREFIXES", AP_FILTER_MAX_PREFIXES);
	PyModule_AddIntConstant(m, "FILTER_PREFIX_MAX", AP_FILTER_PREFIX_MAX);
	PyModule_AddIntConstant(m, "FILTER_MAX_UIDS", AP_FILTER_MAX_UIDS);
	PyModule_AddIntConstant(m, "FILTER_MAX_CGROUPS", AP_FILTER_MAX_CGROUPS);
	PyModule_AddIntConstant(m, "FILTER_CGROUP_LEVELS", AP_FILTER_CGROUP_LEVELS);
	PyModule_AddIntConstant(m, "FILTER_UID_EMPTY", AP_FILTER_UID_EMPTY);
	PyModule_AddIntConstant(m, "NAME_KEEP", AP_NAME_KEEP);
	PyModule_AddIntConstant(m, "PATH_CAP", AP_PATH_CAP);
	PyModule_AddIntConstant(m, "CGROUP_PATH_MAX", AP_CG_PATH_MAX);
	PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH);
	PyModule_AddIntConstant(m, "CG_FOUND", AP_CG_FOUND);
	PyModule_AddIntConstant(m, "CG_GONE", AP_CG_GONE);
	PyModule_AddIntConstant(m, "CG_UNVERIFIED", AP_CG_UNVERIFIED);
	PyModule_AddIntConstant(m, "CG_UNSUPPORTED", AP_CG_UNSUPPORTED);
	PyModule_AddIntConstant(m, "CGROUP_TABLE_MAX", AP_CG_MAX_ENTRIES);
	return m;
}
