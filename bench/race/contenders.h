/* SPDX-License-Identifier: MIT */
/*
 * The contenders of the race: each structure of this project, and its
 * counterparts from Concurrency Kit (ck) and liburcu, behind one shape of
 * static inline functions, so that the workloads in race.c are compiled
 * once per contender with every call inlined (no indirect call in a timed
 * loop).
 *
 * Queues and stacks:
 *   X_setup(cap)  X_tinit(t, role)  X_tfini(t)
 *   X_enter(t) X_exit(t)            the reclamation section, every 32 ops
 *   X_push(t, k, v) -> 1, or 0 when full
 *   X_pop(t, &k, &v) -> 1, or 0 when empty
 * Keyed:
 *   X_insert -> 1 inserted, 0 present; X_search, X_del -> 1 found, 0 not;
 *   -1 on any of them: out of memory.
 *
 * Our structures are reached through their headers with a context that
 * holds its role for the run (ds_role_attach), and ds_enter/ds_exit
 * brackets for the types that need them, exactly as ds_exec runs them.
 */
#ifndef RACE_CONTENDERS_H
#define RACE_CONTENDERS_H

#define _LGPL_SOURCE
#include <ck_epoch.h>
#include <ck_fifo.h>
#include <ck_hs.h>
#include <ck_ring.h>
#include <ck_spinlock.h>
#include <ck_stack.h>
#include <urcu.h>
#include <urcu/lfstack.h>
#include <urcu/rculfhash.h>
#include <urcu/rculfqueue.h>
#include <urcu/wfcqueue.h>

#include "ds/roles.h"
#include "ds/spsc_end.h"

#define RACE_CAP 1024      /* bounded queues: slots */
#define RACE_BUCKETS 65536 /* hashes: buckets (ck_hs: twice as many slots) */

struct tctx {
	struct ds_ctx c;
	struct ds_spsc_producer prod; /* spsc: the ends this thread opened */
	struct ds_spsc_consumer cons;
	ck_epoch_record_t *er;
	unsigned long sections;
};

static inline void race_die(const char *what)
{
	fprintf(stderr, "race: %s\n", what);
	exit(3);
}

/* ---- ours ---- */

static struct ds_space *o_sp;
static ap_u64 o_d;
/* the instance's type retires nodes: its operations run in epoch sections
 * (ds_type_needs_section), as ds_exec runs them */
static int o_sections;

static inline void o_create(ap_u32 type, ap_u64 cap)
{
	struct ds_ctx c;
	struct ds_config cfg = {.capacity = cap};
	int err;

	if (ds_user_attach(o_sp, &c) != DS_OK)
		race_die("attach");
	o_d = ds_create(o_sp, &c, type, &cfg, NULL, &err);
	if (!o_d)
		race_die("create");
	o_sections = ds_type_needs_section(type);
	ds_user_detach(&c);
}

/* role: DS_HELD_PRODUCER / DS_HELD_CONSUMER bits for the types that enforce them */
static inline void o_tinit_type(struct tctx *t, ap_u32 type, int role)
{
	if (ds_user_attach(o_sp, &t->c) != DS_OK)
		race_die("attach");
	if ((role & DS_HELD_PRODUCER) && ds_role_enforced(type, DS_ROLE_PRODUCER) &&
	    ds_role_attach(&t->c, type, o_d, DS_ROLE_PRODUCER) != DS_OK)
		race_die("producer role");
	if ((role & DS_HELD_CONSUMER) && ds_role_enforced(type, DS_ROLE_CONSUMER) &&
	    ds_role_attach(&t->c, type, o_d, DS_ROLE_CONSUMER) != DS_OK)
		race_die("consumer role");
}

static inline void o_tfini(struct tctx *t)
{
	ds_role_detach(&t->c);
	ds_user_detach(&t->c);
}

static inline void o_enter(struct tctx *t)
{
	if (o_sections && ds_enter(&t->c))
		race_die("enter");
}

static inline void o_exit(struct tctx *t)
{
	if (o_sections)
		ds_exit(&t->c);
}

#define OURS_QUEUE(name)                                                                              \
	static inline void o_##name##_setup(ap_u64 cap)                                               \
	{                                                                                             \
		o_create(DS_TYPE_##name, cap);                                                        \
	}                                                                                             \
	static inline void o_##name##_tinit(struct tctx *t, int role)                                 \
	{                                                                                             \
		o_tinit_type(t, DS_TYPE_##name, role);                                                \
	}                                                                                             \
	static inline int o_##name##_push(struct tctx *t, ap_u64 k, ap_u64 v)                         \
	{                                                                                             \
		int r = ds_##name##_insert(&t->c, (struct ds_##name *)o_d, k, v);                     \
		if (r == DS_OK)                                                                       \
			return 1;                                                                     \
		if (r != DS_FULL)                                                                     \
			race_die(#name " push failed");                                               \
		return 0;                                                                             \
	}                                                                                             \
	static inline int o_##name##_pop(struct tctx *t, ap_u64 *k, ap_u64 *v)                        \
	{                                                                                             \
		int r = ds_##name##_pop(&t->c, (struct ds_##name *)o_d, k, v);                        \
		if (r == DS_OK)                                                                       \
			return 1;                                                                     \
		if (r != DS_NOT_FOUND && r != DS_BUSY)                                                \
			race_die(#name " pop failed");                                                \
		return 0;                                                                             \
	}
OURS_QUEUE(mpmc)
OURS_QUEUE(msqueue)
OURS_QUEUE(stack)

/* mpsc through its consumer role, claimed once per thread (ds_role_attach,
 * as an attached consumer or a batch holds it): pops run the queue's work
 * alone (ds_mpsc_pop_held), with no role check per operation; a second
 * consumer is refused at its attach. Producers hold no role. */
static inline void o_mpsc_setup(ap_u64 cap)
{
	o_create(DS_TYPE_mpsc, cap);
}

static inline void o_mpsc_tinit(struct tctx *t, int role)
{
	o_tinit_type(t, DS_TYPE_mpsc, role);
	if ((role & DS_HELD_CONSUMER) && !ds_role_held(&t->c, &((struct ds_mpsc *)o_d)->roles, DS_ROLE_CONSUMER))
		race_die("mpsc: the consumer role is not held after its attach");
}

static inline int o_mpsc_push(struct tctx *t, ap_u64 k, ap_u64 v)
{
	if (ds_mpsc_insert(&t->c, (struct ds_mpsc *)o_d, k, v) != DS_OK)
		race_die("mpsc push failed");
	return 1;
}

/* DS_BUSY: a producer is between its exchange and its link; try again */
static inline int o_mpsc_pop(struct tctx *t, ap_u64 *k, ap_u64 *v)
{
	int r = ds_mpsc_pop_held(&t->c, (struct ds_mpsc *)o_d, k, v);

	if (r == DS_OK)
		return 1;
	if (r != DS_NOT_FOUND && r != DS_BUSY)
		race_die("mpsc pop failed");
	return 0;
}

/* spsc through its ends (spsc_end.h): each role claimed once, when the
 * thread opens its end, and no role check per operation */
static inline void o_spsc_setup(ap_u64 cap)
{
	o_create(DS_TYPE_spsc, cap);
}

static inline void o_spsc_tinit(struct tctx *t, int role)
{
	if (ds_user_attach(o_sp, &t->c) != DS_OK)
		race_die("attach");
	if ((role & DS_HELD_PRODUCER) && ds_spsc_open_producer(&t->c, o_d, &t->prod) != DS_OK)
		race_die("producer role");
	if ((role & DS_HELD_CONSUMER) && ds_spsc_open_consumer(&t->c, o_d, &t->cons) != DS_OK)
		race_die("consumer role");
}

static inline int o_spsc_push(struct tctx *t, ap_u64 k, ap_u64 v)
{
	int r = ds_spsc_put(&t->prod, k, v);

	if (r == DS_OK)
		return 1;
	if (r != DS_FULL)
		race_die("spsc push failed");
	return 0;
}

static inline int o_spsc_pop(struct tctx *t, ap_u64 *k, ap_u64 *v)
{
	int r = ds_spsc_take(&t->cons, k, v);

	if (r == DS_OK)
		return 1;
	if (r != DS_NOT_FOUND)
		race_die("spsc pop failed");
	return 0;
}

#define OURS_KEYED(name)                                                                              \
	static inline void o_##name##_setup(ap_u64 cap)                                               \
	{                                                                                             \
		o_create(DS_TYPE_##name, cap);                                                        \
	}                                                                                             \
	static inline void o_##name##_tinit(struct tctx *t, int role)                                 \
	{                                                                                             \
		o_tinit_type(t, DS_TYPE_##name, role);                                                \
	}                                                                                             \
	static inline int o_##name##_insert(struct tctx *t, ap_u64 k, ap_u64 v)                       \
	{                                                                                             \
		int r = ds_##name##_insert(&t->c, (struct ds_##name *)o_d, k, v);                     \
		return r == DS_OK ? 1 : r == DS_EXISTS ? 0 : -1;                                      \
	}                                                                                             \
	static inline int o_##name##_search(struct tctx *t, ap_u64 k, ap_u64 *v)                      \
	{                                                                                             \
		int r = ds_##name##_search(&t->c, (struct ds_##name *)o_d, k, v);                     \
		return r == DS_OK ? 1 : r == DS_NOT_FOUND ? 0 : -1;                                   \
	}                                                                                             \
	static inline int o_##name##_del(struct tctx *t, ap_u64 k, ap_u64 *v)                         \
	{                                                                                             \
		int r = ds_##name##_delete(&t->c, (struct ds_##name *)o_d, k, v);                     \
		return r == DS_OK ? 1 : r == DS_NOT_FOUND ? 0 : -1;                                   \
	}
OURS_KEYED(hash)
OURS_KEYED(skiplist)

/* ---- Concurrency Kit: reclamation by ck_epoch ---- */

static ck_epoch_t ck_ep;

static inline void ck_tinit(struct tctx *t, int role)
{
	(void)role;
	t->er = (ck_epoch_record_t *)calloc(1, sizeof(*t->er));
	if (!t->er)
		race_die("calloc");
	ck_epoch_register(&ck_ep, t->er, NULL);
	t->sections = 0;
}

static inline void ck_tfini(struct tctx *t)
{
	ck_epoch_barrier(t->er);
	ck_epoch_unregister(t->er);
}

static inline void ck_enter(struct tctx *t)
{
	ck_epoch_begin(t->er, NULL);
}

/* poll every 8 sections (256 operations): what is retired gets freed as the run goes */
static inline void ck_exit(struct tctx *t)
{
	ck_epoch_end(t->er, NULL);
	if (!(++t->sections & 7))
		ck_epoch_poll(t->er);
}

/* ck_ring with 16-byte slots, like ours */
struct rkv {
	ap_u64 k, v;
};
CK_RING_PROTOTYPE(rkv, rkv)

static struct ck_ring ckr;
static struct rkv *ckr_buf;

static inline void ckr_setup(ap_u64 cap)
{
	ckr_buf = (struct rkv *)aligned_alloc(64, cap * sizeof(struct rkv));
	if (!ckr_buf)
		race_die("alloc");
	ck_ring_init(&ckr, (unsigned int)cap);
}

static inline void ckr_tinit(struct tctx *t, int role)
{
	(void)t;
	(void)role;
}

static inline void ckr_nothing(struct tctx *t)
{
	(void)t;
}

static inline int ckrs_push(struct tctx *t, ap_u64 k, ap_u64 v)
{
	struct rkv e = {k, v};

	(void)t;
	return ck_ring_enqueue_spsc_rkv(&ckr, ckr_buf, &e);
}

static inline int ckrs_pop(struct tctx *t, ap_u64 *k, ap_u64 *v)
{
	struct rkv e;

	(void)t;
	if (!ck_ring_dequeue_spsc_rkv(&ckr, ckr_buf, &e))
		return 0;
	*k = e.k;
	*v = e.v;
	return 1;
}

static inline int ckrm_push(struct tctx *t, ap_u64 k, ap_u64 v)
{
	struct rkv e = {k, v};

	(void)t;
	return ck_ring_enqueue_mpmc_rkv(&ckr, ckr_buf, &e);
}

static inline int ckrm_pop(struct tctx *t, ap_u64 *k, ap_u64 *v)
{
	struct rkv e;

	(void)t;
	if (!ck_ring_dequeue_mpmc_rkv(&ckr, ckr_buf, &e))
		return 0;
	*k = e.k;
	*v = e.v;
	return 1;
}

/* ck_fifo_mpmc: a node carries its (key, value); the dequeued entry is the
 * new stub, the old stub is garbage for ck_epoch */
struct ckf_node {
	ck_fifo_mpmc_entry_t e;
	ap_u64 k, v;
	ck_epoch_entry_t ee;
};
static ck_fifo_mpmc_t ckf;

static inline void ckf_setup(ap_u64 cap)
{
	struct ckf_node *stub = (struct ckf_node *)calloc(1, sizeof(*stub));

	(void)cap;
	if (!stub)
		race_die("calloc");
	ck_epoch_init(&ck_ep);
	ck_fifo_mpmc_init(&ckf, &stub->e);
}

static void ckf_free(ck_epoch_entry_t *ee)
{
	free((char *)ee - offsetof(struct ckf_node, ee));
}

static inline int ckf_push(struct tctx *t, ap_u64 k, ap_u64 v)
{
	struct ckf_node *n = (struct ckf_node *)malloc(sizeof(*n));

	(void)t;
	if (!n)
		race_die("malloc");
	n->k = k;
	n->v = v;
	ck_fifo_mpmc_enqueue(&ckf, &n->e, n);
	return 1;
}

static inline int ckf_pop(struct tctx *t, ap_u64 *k, ap_u64 *v)
{
	struct ckf_node *n;
	ck_fifo_mpmc_entry_t *garbage;

	if (!ck_fifo_mpmc_dequeue(&ckf, &n, &garbage))
		return 0;
	*k = n->k;
	*v = n->v;
	ck_epoch_call(t->er, &((struct ckf_node *)garbage)->ee, ckf_free);
	return 1;
}

/* ck_stack, upmc (Treiber) */
struct cks_node {
	ck_stack_entry_t e;
	ap_u64 k, v;
	ck_epoch_entry_t ee;
};
static ck_stack_t cks;

static inline void cks_setup(ap_u64 cap)
{
	(void)cap;
	ck_epoch_init(&ck_ep);
	ck_stack_init(&cks);
}

static void cks_free(ck_epoch_entry_t *ee)
{
	free((char *)ee - offsetof(struct cks_node, ee));
}

static inline int cks_push(struct tctx *t, ap_u64 k, ap_u64 v)
{
	struct cks_node *n = (struct cks_node *)malloc(sizeof(*n));

	(void)t;
	if (!n)
		race_die("malloc");
	n->k = k;
	n->v = v;
	ck_stack_push_upmc(&cks, &n->e);
	return 1;
}

static inline int cks_pop(struct tctx *t, ap_u64 *k, ap_u64 *v)
{
	ck_stack_entry_t *e = ck_stack_pop_upmc(&cks);
	struct cks_node *n;

	if (!e)
		return 0;
	n = (struct cks_node *)e;
	*k = n->k;
	*v = n->v;
	ck_epoch_call(t->er, &n->ee, cks_free);
	return 1;
}

/* ck_hs, object mode: a set of pointers to (key, value) objects, removed
 * objects freed through ck_epoch. SPMC: with more than one writer, writes
 * go behind a spinlock. Tables replaced by a grow are kept until exit
 * (readers may hold them). */
struct chs_obj {
	ap_u64 k, v;
	ck_epoch_entry_t ee;
};
static ck_hs_t chs;
static ck_spinlock_fas_t chs_lock = CK_SPINLOCK_FAS_INITIALIZER;
static int chs_writers_lock;

static void *chs_malloc(size_t n)
{
	return malloc(n);
}

static void chs_free(void *p, size_t n, bool defer)
{
	(void)n;
	if (!defer)
		free(p);
}

static struct ck_malloc chs_alloc = {.malloc = chs_malloc, .free = chs_free};

static unsigned long chs_hash(const void *obj, unsigned long seed)
{
	return (unsigned long)arena_hash64(((const struct chs_obj *)obj)->k ^ seed);
}

static bool chs_same(const void *a, const void *b)
{
	return ((const struct chs_obj *)a)->k == ((const struct chs_obj *)b)->k;
}

static void chs_obj_free(ck_epoch_entry_t *ee)
{
	free((char *)ee - offsetof(struct chs_obj, ee));
}

static inline void chs_setup(ap_u64 cap)
{
	ck_epoch_init(&ck_ep);
	if (!ck_hs_init(&chs, CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT | CK_HS_MODE_DELETE, chs_hash, chs_same,
			&chs_alloc, (unsigned long)cap * 2, 0x9e3779b97f4a7c15ULL))
		race_die("ck_hs_init");
}

static inline int chs_insert(struct tctx *t, ap_u64 k, ap_u64 v)
{
	struct chs_obj *o = (struct chs_obj *)malloc(sizeof(*o));
	bool ok;

	(void)t;
	if (!o)
		return -1;
	o->k = k;
	o->v = v;
	if (chs_writers_lock)
		ck_spinlock_fas_lock(&chs_lock);
	ok = ck_hs_put(&chs, CK_HS_HASH(&chs, chs_hash, o), o);
	if (chs_writers_lock)
		ck_spinlock_fas_unlock(&chs_lock);
	if (!ok)
		free(o); /* never published */
	return ok ? 1 : 0;
}

static inline int chs_search(struct tctx *t, ap_u64 k, ap_u64 *v)
{
	struct chs_obj probe = {.k = k}, *o;

	(void)t;
	o = (struct chs_obj *)ck_hs_get(&chs, CK_HS_HASH(&chs, chs_hash, &probe), &probe);
	if (!o)
		return 0;
	*v = o->v;
	return 1;
}

static inline int chs_del(struct tctx *t, ap_u64 k, ap_u64 *v)
{
	struct chs_obj probe = {.k = k}, *o;

	if (chs_writers_lock)
		ck_spinlock_fas_lock(&chs_lock);
	o = (struct chs_obj *)ck_hs_remove(&chs, CK_HS_HASH(&chs, chs_hash, &probe), &probe);
	if (chs_writers_lock)
		ck_spinlock_fas_unlock(&chs_lock);
	if (!o)
		return 0;
	*v = o->v;
	ck_epoch_call(t->er, &o->ee, chs_obj_free);
	return 1;
}

/* ---- liburcu: the default flavour (urcu-memb), frees through call_rcu ---- */

static inline void u_tinit(struct tctx *t, int role)
{
	(void)t;
	(void)role;
	rcu_register_thread();
}

static inline void u_tfini(struct tctx *t)
{
	(void)t;
	rcu_barrier();
	rcu_unregister_thread();
}

static inline void u_enter(struct tctx *t)
{
	(void)t;
	rcu_read_lock();
}

static inline void u_exit(struct tctx *t)
{
	(void)t;
	rcu_read_unlock();
}

/* wfcqueue: wait-free enqueue (one exchange on the tail); a dequeue waits
 * for a producer between its exchange and its link. A dequeued node is the
 * caller's at once (dequeuers are mutually excluded, and no producer writes
 * a node once its successor is linked): no reclamation needed. Head (the
 * dequeuers' side) and tail (the producers') on cache lines of their own,
 * as wfcqueue.h advises for enqueue and dequeue on different CPUs. Two
 * configurations:
 *   uwq:  any number of dequeuers, cds_wfcq_dequeue_blocking, which takes
 *         the head's pthread mutex around each dequeue (msqueue's rival);
 *   uwqs: one dequeuer at a time, the caller's guarantee, not checked:
 *         __cds_wfcq_dequeue_blocking on a head without a mutex (mpsc's). */
struct uwq_node {
	struct cds_wfcq_node n;
	ap_u64 k, v;
};
static struct cds_wfcq_head uwq_head __attribute__((aligned(128)));
static struct cds_wfcq_tail uwq_tail __attribute__((aligned(128)));
static struct __cds_wfcq_head uwqs_head __attribute__((aligned(128)));
static struct cds_wfcq_tail uwqs_tail __attribute__((aligned(128)));

static inline struct uwq_node *uwq_node(ap_u64 k, ap_u64 v)
{
	struct uwq_node *n = (struct uwq_node *)malloc(sizeof(*n));

	if (!n)
		race_die("malloc");
	cds_wfcq_node_init(&n->n);
	n->k = k;
	n->v = v;
	return n;
}

static inline int uwq_take(struct cds_wfcq_node *p, ap_u64 *k, ap_u64 *v)
{
	struct uwq_node *n;

	if (!p)
		return 0;
	n = caa_container_of(p, struct uwq_node, n);
	*k = n->k;
	*v = n->v;
	free(n);
	return 1;
}

static inline void uwq_setup(ap_u64 cap)
{
	(void)cap;
	cds_wfcq_init(&uwq_head, &uwq_tail);
}

static inline int uwq_push(struct tctx *t, ap_u64 k, ap_u64 v)
{
	(void)t;
	cds_wfcq_enqueue(&uwq_head, &uwq_tail, &uwq_node(k, v)->n);
	return 1;
}

static inline int uwq_pop(struct tctx *t, ap_u64 *k, ap_u64 *v)
{
	(void)t;
	return uwq_take(cds_wfcq_dequeue_blocking(&uwq_head, &uwq_tail), k, v);
}

static inline void uwqs_setup(ap_u64 cap)
{
	(void)cap;
	__cds_wfcq_init(&uwqs_head, &uwqs_tail);
}

static inline int uwqs_push(struct tctx *t, ap_u64 k, ap_u64 v)
{
	(void)t;
	cds_wfcq_enqueue(&uwqs_head, &uwqs_tail, &uwq_node(k, v)->n);
	return 1;
}

static inline int uwqs_pop(struct tctx *t, ap_u64 *k, ap_u64 *v)
{
	(void)t;
	return uwq_take(__cds_wfcq_dequeue_blocking(&uwqs_head, &uwqs_tail), k, v);
}

/* rculfqueue: enqueue and dequeue under the RCU read lock, nodes freed by call_rcu */
struct ulq_node {
	struct cds_lfq_node_rcu n;
	ap_u64 k, v;
	struct rcu_head rh;
};
static struct cds_lfq_queue_rcu ulq;

static inline void ulq_setup(ap_u64 cap)
{
	(void)cap;
	cds_lfq_init_rcu(&ulq, call_rcu);
}

static void ulq_free(struct rcu_head *rh)
{
	free(caa_container_of(rh, struct ulq_node, rh));
}

static inline int ulq_push(struct tctx *t, ap_u64 k, ap_u64 v)
{
	struct ulq_node *n = (struct ulq_node *)malloc(sizeof(*n));

	(void)t;
	if (!n)
		race_die("malloc");
	cds_lfq_node_init_rcu(&n->n);
	n->k = k;
	n->v = v;
	cds_lfq_enqueue_rcu(&ulq, &n->n);
	return 1;
}

static inline int ulq_pop(struct tctx *t, ap_u64 *k, ap_u64 *v)
{
	struct cds_lfq_node_rcu *p = cds_lfq_dequeue_rcu(&ulq);
	struct ulq_node *n;

	(void)t;
	if (!p)
		return 0;
	n = caa_container_of(p, struct ulq_node, n);
	*k = n->k;
	*v = n->v;
	call_rcu(&n->rh, ulq_free);
	return 1;
}

/* lfstack: __cds_lfs_pop under the RCU read lock, nodes freed by call_rcu */
struct uls_node {
	struct cds_lfs_node n;
	ap_u64 k, v;
	struct rcu_head rh;
};
static struct __cds_lfs_stack uls;

static inline void uls_setup(ap_u64 cap)
{
	(void)cap;
	__cds_lfs_init(&uls);
}

static void uls_free(struct rcu_head *rh)
{
	free(caa_container_of(rh, struct uls_node, rh));
}

static inline int uls_push(struct tctx *t, ap_u64 k, ap_u64 v)
{
	struct uls_node *n = (struct uls_node *)malloc(sizeof(*n));

	(void)t;
	if (!n)
		race_die("malloc");
	cds_lfs_node_init(&n->n);
	n->k = k;
	n->v = v;
	cds_lfs_push(&uls, &n->n);
	return 1;
}

static inline int uls_pop(struct tctx *t, ap_u64 *k, ap_u64 *v)
{
	struct cds_lfs_node *p = __cds_lfs_pop(&uls);
	struct uls_node *n;

	(void)t;
	if (!p)
		return 0;
	n = caa_container_of(p, struct uls_node, n);
	*k = n->k;
	*v = n->v;
	call_rcu(&n->rh, uls_free);
	return 1;
}

/* rculfhash: fixed bucket count (no resize), nodes freed by call_rcu */
struct uht_node {
	struct cds_lfht_node n;
	ap_u64 k, v;
	struct rcu_head rh;
};
static struct cds_lfht *uht;

static inline void uht_setup(ap_u64 cap)
{
	uht = cds_lfht_new(cap, cap, cap, 0, NULL);
	if (!uht)
		race_die("cds_lfht_new");
}

static int uht_match(struct cds_lfht_node *n, const void *key)
{
	return caa_container_of(n, struct uht_node, n)->k == *(const ap_u64 *)key;
}

static void uht_free(struct rcu_head *rh)
{
	free(caa_container_of(rh, struct uht_node, rh));
}

static inline int uht_insert(struct tctx *t, ap_u64 k, ap_u64 v)
{
	struct uht_node *n = (struct uht_node *)malloc(sizeof(*n));
	struct cds_lfht_node *got;

	(void)t;
	if (!n)
		return -1;
	cds_lfht_node_init(&n->n);
	n->k = k;
	n->v = v;
	got = cds_lfht_add_unique(uht, arena_hash64(k), uht_match, &k, &n->n);
	if (got != &n->n) {
		free(n); /* never published */
		return 0;
	}
	return 1;
}

static inline int uht_search(struct tctx *t, ap_u64 k, ap_u64 *v)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;

	(void)t;
	cds_lfht_lookup(uht, arena_hash64(k), uht_match, &k, &it);
	n = cds_lfht_iter_get_node(&it);
	if (!n)
		return 0;
	*v = caa_container_of(n, struct uht_node, n)->v;
	return 1;
}

static inline int uht_del(struct tctx *t, ap_u64 k, ap_u64 *v)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;
	struct uht_node *u;

	(void)t;
	cds_lfht_lookup(uht, arena_hash64(k), uht_match, &k, &it);
	n = cds_lfht_iter_get_node(&it);
	if (!n || cds_lfht_del(uht, n))
		return 0;
	u = caa_container_of(n, struct uht_node, n);
	*v = u->v;
	call_rcu(&u->rh, uht_free);
	return 1;
}

#endif /* RACE_CONTENDERS_H */
