// SPDX-License-Identifier: MIT
/*
 * The stress driver's timed loop (runloop.h). One function per registered
 * type (the type a constant in each, as in ds_exec), so the structure's
 * operations are inlined into the loop.
 */
#include "runloop.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* This thread's CPU time in ns: against the loop's wall time it says how much
 * of a CPU the loop had, which a loaded machine (or a driver sharing its CPUs)
 * takes away without the structure being any slower. */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts))
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline uint64_t ctl_load(uint64_t *w)
{
	return __atomic_load_n(w, __ATOMIC_ACQUIRE);
}

static inline void ctl_store(uint64_t *w, uint64_t v)
{
	__atomic_store_n(w, v, __ATOMIC_RELEASE);
}

static inline uint64_t *slot_word(struct ap_runloop *r, unsigned int w)
{
	return &r->control[AP_CTL_SLOT0 + (uint64_t)r->slot * AP_CTL_SLOT_WORDS + w];
}

static inline uint64_t next_rand(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* Gray et al.'s zipf generator ("Quickly generating billion-record
 * synthetic databases"), as YCSB uses it: constant time per draw after one
 * pass over the ranks. */
struct zipf {
	double theta, zetan, alpha, eta, half_pow;
	uint64_t n;
};

static void zipf_init(struct zipf *z, uint64_t n, double theta)
{
	double zeta2 = 1.0 + pow(0.5, theta), s = 0;
	uint64_t i;

	for (i = 1; i <= n; i++)
		s += 1.0 / pow((double)i, theta);
	z->n = n;
	z->theta = theta;
	z->zetan = s;
	z->alpha = 1.0 / (1.0 - theta);
	z->eta = (1.0 - pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - zeta2 / s);
	z->half_pow = pow(0.5, theta);
}

static inline uint64_t zipf_next(const struct zipf *z, uint64_t x)
{
	double u = (double)(x >> 11) * (1.0 / 9007199254740992.0), uz = u * z->zetan;
	uint64_t r;

	if (uz < 1.0)
		return 0;
	if (uz < 1.0 + z->half_pow)
		return 1 < z->n ? 1 : 0;
	r = (uint64_t)((double)z->n * pow(z->eta * u - z->eta + 1.0, z->alpha));
	return r < z->n ? r : z->n - 1;
}

static inline unsigned int kind_of(uint32_t op)
{
	return op == DS_OP_INSERT ? 0 : op == DS_OP_DELETE ? 1 : op == DS_OP_SEARCH ? 2 : 3;
}

/* Waits for the start flag; 0, or -1 if told to stop first. */
static int wait_go(struct ap_runloop *r)
{
	while (!ctl_load(&r->control[AP_CTL_GO])) {
		if (ctl_load(&r->control[AP_CTL_STOP]))
			return -1;
		usleep(100);
	}
	return 0;
}

/* One timed operation's bookkeeping: the latency sample and the history record. */
static inline void record(struct ap_runloop *r, uint32_t op, int res, uint64_t key, uint64_t val, uint64_t t_inv,
			  uint64_t t_resp, int sample)
{
	if (sample && r->n_samples < r->sample_cap) {
		uint64_t d = t_resp - t_inv;

		r->samples[r->n_samples++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
	}
	if (r->hist) {
		struct ds_hist_rec *h = &r->hist[r->n_hist++];

		h->t_inv = t_inv;
		h->t_resp = t_resp;
		h->key = key;
		h->value = val;
		h->agent = r->agent;
		h->op = (ap_u8)op;
		h->result = (ap_u8)res;
		h->flags = 0;
	}
}

/*
 * A key's counter += d. A counter array of the thread's own takes a plain
 * load and store (one writer; the driver reads it after the run, or after
 * the thread died); a shared one an atomic add, a LOCKed instruction on a
 * line the other agents write too, which serializes the loop's loads around
 * it and moves the line between CPUs.
 */
static inline void net_add(int32_t *net, uint64_t i, int32_t d, int own)
{
	if (own)
		__atomic_store_n(&net[i], __atomic_load_n(&net[i], __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
	else
		__atomic_fetch_add(&net[i], d, __ATOMIC_RELAXED);
}

static int push_popped(struct ap_runloop *r, uint64_t v, uint64_t *cap)
{
	if (r->n_popped == *cap) {
		uint64_t ncap = *cap ? *cap * 2 : 65536;
		uint64_t *p = realloc(r->popped, ncap * sizeof(*p));

		if (!p)
			return -1;
		r->popped = p;
		*cap = ncap;
	}
	r->popped[r->n_popped++] = v;
	return 0;
}

static __always_inline void loop_typed(struct ds_ctx *c, struct ap_runloop *r, const ap_u32 type)
{
	const uint64_t ds = r->ds, bound = r->ops, keys = r->keys ? r->keys : 1, key_lo = r->key_lo;
	const uint64_t sample_mask = (1ULL << r->sample_shift) - 1;
	const int timed_all = r->hist != NULL;
	uint64_t *progress = slot_word(r, AP_SLOT_PROGRESS), *inflight = slot_word(r, AP_SLOT_INFLIGHT);
	uint64_t deadline, rng = r->seed ? r->seed : 0x9e3779b97f4a7c15ULL, i = 0, popped_cap = 0, t0, cpu0;
	const uint64_t w_ins = r->mix[0], w_del = r->mix[0] + r->mix[1];
	uint64_t total = (uint64_t)r->mix[0] + r->mix[1] + r->mix[2];
	int32_t *net = r->net;
	const int net_own = r->net_own != 0;
	struct zipf z;
	int in_cs = 0, use_zipf = r->theta > 0, drain_seen = 0;
	unsigned int idle = 0;
	uint64_t busy_since = 0;

	if (!total)
		total = 1;
	if (use_zipf)
		zipf_init(&z, keys, r->theta);
	if (wait_go(r))
		return;
	deadline = ctl_load(&r->control[AP_CTL_DEADLINE]);
	ctl_store(slot_word(r, AP_SLOT_STATE), 1);
	cpu0 = thread_cpu_ns();
	t0 = arena_now_ns();
	for (;; i++) {
		uint64_t x, w, key, val = 0, okey = 0, oval = 0, t_inv = 0, t_resp;
		uint32_t op;
		int res, timed, mutating;

		if ((i & (AP_CHECK_EVERY - 1)) == 0) {
			ctl_store(progress, i);
			if (ctl_load(&r->control[AP_CTL_STOP]))
				break;
			if (r->role != AP_ROLE_CONSUMER && deadline && arena_now_ns() >= deadline)
				break;
		}
		if (r->role == AP_ROLE_KEYED) {
			if (bound && i >= bound)
				break;
			x = next_rand(&rng);
			/* a weight in [0, total) from the low 32 bits, the key from the high ones */
			w = ((x & 0xffffffffULL) * total) >> 32;
			op = w < w_ins ? DS_OP_INSERT : w < w_del ? DS_OP_DELETE : DS_OP_SEARCH;
			key = key_lo + (use_zipf ? zipf_next(&z, x) : ((x >> 32) * keys) >> 32);
			val = key;
		} else if (r->role == AP_ROLE_PRODUCER) {
			if (bound && r->pushed >= bound)
				break;
			op = DS_OP_INSERT;
			key = val = r->producer << AP_SEQ_BITS | r->pushed;
		} else {
			op = DS_OP_POP;
			key = 0;
			drain_seen = ctl_load(&r->control[AP_CTL_DRAIN]) != 0;
		}
		mutating = net && (op == DS_OP_INSERT || op == DS_OP_DELETE);
		/* a clock read costs more than a hash lookup here (about 40 ns in a
		 * VM, and it waits for the operations before it): none once the
		 * sample buffer is full */
		timed = timed_all || ((i & sample_mask) == 0 && r->n_samples < r->sample_cap);
		if (!in_cs) {
			if (ds_enter(c)) {
				r->err = EBUSY;
				break;
			}
			in_cs = 1;
		}
		if (mutating) {
			/* the driver reads this after a kill: this key's counter may
			 * or may not include the operation */
			__atomic_store_n(inflight, key - key_lo + 1, __ATOMIC_RELAXED);
			__atomic_signal_fence(__ATOMIC_SEQ_CST);
		}
		if (timed) {
			t_inv = arena_now_ns();
			/* A recorded interval must contain the operation's linearization
			 * point. The clock read is not ordered with memory accesses: a
			 * load could be served before t_inv, and a store (a ring's
			 * release of its tail) could still sit in this CPU's store
			 * buffer when t_resp is read, so another agent starting after
			 * t_resp would not see it yet. A full fence on each side closes
			 * both gaps; it is paid only while recording a history. */
			if (r->hist)
				__atomic_thread_fence(__ATOMIC_SEQ_CST);
		}
		res = ds_apply(c, type, ds, op, key, val, &okey, &oval);
		if (timed && r->hist)
			__atomic_thread_fence(__ATOMIC_SEQ_CST);
		t_resp = timed ? arena_now_ns() : 0;
		r->res[kind_of(op)][res & 7]++;
		if (res == DS_OK) {
			if (op == DS_OP_INSERT) {
				if (mutating)
					net_add(net, key - key_lo, 1, net_own);
				if (r->role == AP_ROLE_PRODUCER)
					r->pushed++;
			} else if (op == DS_OP_DELETE || op == DS_OP_SEARCH) {
				if (mutating)
					net_add(net, key - key_lo, -1, net_own);
				r->bad_values += oval != key;
				val = oval;
			} else {
				key = oval;
				val = 0;
				if (push_popped(r, oval, &popped_cap)) {
					r->err = ENOMEM;
					i++;
					break;
				}
			}
		} else if (op != DS_OP_INSERT) {
			val = 0;
		}
		if (r->role != AP_ROLE_KEYED && op == DS_OP_INSERT)
			val = 0; /* history.h: a queue's record carries the value as its key */
		if (mutating) {
			__atomic_signal_fence(__ATOMIC_SEQ_CST);
			__atomic_store_n(inflight, 0, __ATOMIC_RELAXED);
		}
		if ((i & (DS_BATCH_CS_OPS - 1)) == DS_BATCH_CS_OPS - 1) {
			ds_exit(c);
			in_cs = 0;
		}
		if (timed)
			record(r, op, res, key, val, t_inv, t_resp, (i & sample_mask) == 0);
		if (r->hist && r->n_hist == r->hist_cap) {
			i++;
			break;
		}
		if (res != DS_OK && r->role != AP_ROLE_KEYED) {
			/* a full or busy queue, or an empty one: let the other side in */
			if (r->role == AP_ROLE_CONSUMER && res == DS_NOT_FOUND && drain_seen) {
				i++;
				break;
			}
			if (in_cs) {
				ds_exit(c);
				in_cs = 0;
			}
			/* Once every producer is done, a pop that stays BUSY has
			 * nothing left to wait for: a killed producer's push that
			 * never linked its node (ds_mpsc.h) or never published its
			 * cell (ds_mpmc.h). Give up and say so. */
			if (r->role == AP_ROLE_CONSUMER && res == DS_BUSY && drain_seen) {
				uint64_t now = arena_now_ns();

				if (!busy_since)
					busy_since = now;
				else if (now - busy_since >= AP_DRAIN_STUCK_NS) {
					r->stuck = 1;
					i++;
					break;
				}
			} else {
				busy_since = 0;
			}
			if (++idle % 64 == 0)
				usleep(50);
			else
				arena_cpu_relax();
		} else {
			idle = 0;
			busy_since = 0;
		}
	}
	if (in_cs)
		ds_exit(c);
	r->ns = arena_now_ns() - t0;
	r->cpu_ns = thread_cpu_ns() - cpu0;
	r->done = i;
	ctl_store(progress, i);
	ctl_store(slot_word(r, AP_SLOT_STATE), 2);
}

void ap_runloop(struct ds_ctx *c, struct ap_runloop *r)
{
	switch (r->type) {
#define AP_RUNLOOP_CASE(id, name)    \
	case id:                     \
		loop_typed(c, r, id); \
		break;
		DS_REGISTRY(AP_RUNLOOP_CASE)
#undef AP_RUNLOOP_CASE
	default:
		r->err = EINVAL;
	}
}
