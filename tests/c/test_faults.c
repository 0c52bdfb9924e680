/* SPDX-License-Identifier: MIT */
/*
 * Queues whose users are killed at chosen steps of an operation (the
 * ds_test_step points of a DS_TEST_STEPS build) and at random moments.
 *
 * mpsc: a consumer killed anywhere in a pop: the next consumer takes its
 * role over and goes on, every element comes out once and in order, the
 * dead consumer's unreturned element at most lost (include/ds/ds_mpsc.h).
 *   - stub_window: a consumer stopped at each step of putting the stub back
 *     behind the last node (ds_test_step 1: recorded, 2: swapped, 3:
 *     linked) and killed there; then the next consumer pops with nothing
 *     pushed, after a push, and beside a producer stopped between its
 *     exchange and its link (step 4), where it must say BUSY rather than
 *     guess; a verify of the dead consumer's queue follows the missing link;
 *     a node at the recorded node's address later is not taken for it.
 *   - random_kills: one producer pushing 1, 2, 3, ... while consumers, one
 *     after another, pop and are killed at random moments (each step of the
 *     stub's insertion yields, to widen its windows); the last consumer
 *     drains: nothing twice, in order, at most one element lost per kill;
 *     every consumer killed holding the role was taken over.
 *   - mpsc_empty_behind_producer: a producer stopped mid-push on an empty
 *     queue while a later push completes: BUSY, not NOT_FOUND.
 * msqueue: a producer killed between its link and its tail swing (step 5);
 *   pops, pushes and the dead producer's expired epoch record after it.
 * Usage: test_faults [kills]
 */
#define DS_TEST_STEPS
#include "tcommon.h"
#include "ds/roles.h"

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define MAX_VALUES (1ULL << 22)
#define BACKLOG 4096

struct ctl {
	volatile int stopped_at;  /* the step a stopped process waits at */
	volatile int release;     /* a stopped producer goes on */
	volatile int cstep;       /* the step the current consumer is in, 0: none */
	volatile int stop_pushing;
	volatile ap_u64 last;     /* the last key a consumer popped */
	volatile ap_u64 produced; /* keys 1..produced were pushed */
	volatile ap_u64 order_errors;
	volatile ap_u64 holders;  /* consumers that attached the role */
	volatile ap_u64 got[8];   /* a stub_window consumer's pops */
	volatile ap_u64 ngot;
	unsigned char seen[MAX_VALUES + 1];
};

static struct ds_space *sp;
static struct ctl *ctl;
/* this process stops at its stop_count-th ds_test_step(stop_step) */
static int stop_step;
static long stop_count;
static int yield_steps;

void ds_test_step(int where)
{
	if (where != 4)
		ctl->cstep = where;
	if (yield_steps)
		sched_yield();
	if (where == stop_step && --stop_count == 0) {
		ctl->stopped_at = where;
		while (!ctl->release)
			usleep(100);
	}
}

/* fork, the child dying with the test: a failed check must not leave a
 * producer spinning behind it */
static pid_t t_fork(void)
{
	pid_t pid = fork();

	REQUIRE(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0 && prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
		_exit(4);
	return pid;
}

static int op1(struct ds_ctx *c, ap_u64 d, ap_u32 o, ap_u64 key, ap_u64 *okey, ap_u64 *oval)
{
	return t_op1(c, DS_TYPE_mpsc, d, o, key, okey, oval);
}

static void push(struct ds_ctx *c, ap_u64 d, ap_u64 key)
{
	ap_u64 k, v;

	REQUIRE(op1(c, d, DS_OP_INSERT, key, &k, &v) == DS_OK, "push %llu", (unsigned long long)key);
}

/* Wait until the child stops at step (it must not exit meanwhile). */
static void wait_stopped(pid_t pid, int step)
{
	int status, k;

	for (k = 0; ctl->stopped_at != step; k++) {
		REQUIRE(k < 20000 && waitpid(pid, &status, WNOHANG) == 0, "the child did not reach step %d", step);
		usleep(1000);
	}
}

static void kill_child(pid_t pid)
{
	int status;

	kill(pid, SIGKILL);
	REQUIRE(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		"child status %#x", status);
}

/* Attach c and create a queue of type (64 places) for one case. */
static ap_u64 new_queue(struct ds_ctx *c, ap_u32 type)
{
	struct ds_config cfg = {.capacity = 64};
	ap_u64 d;
	int err;

	REQUIRE(ds_user_attach(sp, c) == DS_OK, "attach");
	d = ds_create(sp, c, type, &cfg, NULL, &err);
	REQUIRE(d, "create: %d", err);
	return d;
}

/* A child that pushes key (value key * 10) into a queue of type and stops
 * at ds_test_step(step) of that push: mpsc's 4 (between its exchange and
 * its link), msqueue's 5 (between its link and its tail swing). */
static pid_t stalled_producer(ap_u32 type, ap_u64 d, ap_u64 key, int step)
{
	pid_t pid;

	ctl->stopped_at = 0;
	ctl->release = 0;
	pid = t_fork();
	if (pid == 0) {
		struct ds_ctx cc;
		ap_u64 k, v;

		if (ds_user_attach(sp, &cc) != DS_OK)
			_exit(2);
		stop_step = step;
		stop_count = 1;
		_exit(t_op1(&cc, type, d, DS_OP_INSERT, key, &k, &v) == DS_OK ? 0 : 5);
	}
	wait_stopped(pid, step);
	return pid;
}

static void release_producer(pid_t pid)
{
	int status;

	ctl->release = 1;
	REQUIRE(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"producer status %#x", status);
	ctl->stopped_at = 0;
}

/* Pop until NOT_FOUND, appending keys to out; a BUSY is a failure here. */
static void drain(struct ds_ctx *c, ap_u64 d, ap_u64 *out, ap_u64 *n, const char *what)
{
	ap_u64 k, v;
	int r;

	while ((r = op1(c, d, DS_OP_POP, 0, &k, &v)) == DS_OK) {
		CHECK(v == k * 10, "%s: popped (%llu, %llu)", what, (unsigned long long)k, (unsigned long long)v);
		REQUIRE(*n < 16, "%s: too many pops", what);
		out[(*n)++] = k;
	}
	CHECK(r == DS_NOT_FOUND, "%s: pop -> %d", what, r);
}

/*
 * mode 0: nothing pushed after the kill; 1: one push before the next pop;
 * 2: a producer stopped between its exchange and its link during the next
 * pop. Keys 1..3 pushed; the child pops 1 and 2 and stops in the pop of 3.
 */
static void stub_window(int step, int mode)
{
	struct ds_ctx c;
	struct ds_role_state st;
	struct ds_verify vf;
	struct ds_kv __arena *kv;
	ap_u64 d, k, v, popped[16], n = 0, i, want, it;
	char what[64];
	pid_t pid, prod;
	int r;

	snprintf(what, sizeof(what), "stub window step %d, mode %d", step, mode);
	d = new_queue(&c, DS_TYPE_mpsc);
	for (k = 1; k <= 3; k++)
		push(&c, d, k);
	ctl->stopped_at = 0;
	ctl->release = 0;
	ctl->ngot = 0;
	pid = t_fork();
	if (pid == 0) {
		struct ds_ctx cc;

		if (ds_user_attach(sp, &cc) != DS_OK)
			_exit(2);
		stop_step = step;
		stop_count = 1;
		for (;;) {
			if (op1(&cc, d, DS_OP_POP, 0, &k, &v) == DS_OK)
				ctl->got[ctl->ngot++] = k;
		}
	}
	wait_stopped(pid, step);
	kill_child(pid);
	CHECK(ctl->ngot == 2 && ctl->got[0] == 1 && ctl->got[1] == 2, "%s: the child popped %llu keys",
	      what, (unsigned long long)ctl->ngot);

	if (mode == 0) {
		/* quiescent, role free: the walks follow the dead consumer's
		 * missing link to the stub */
		CHECK(ds_role_attach(&c, DS_TYPE_mpsc, d, DS_ROLE_CONSUMER) == DS_OK, "%s: takeover", what);
		ds_role_detach(&c);
		r = ds_verify_type(&c, DS_TYPE_mpsc, d, &vf);
		CHECK(r == DS_OK && vf.count == 1 && vf.keysum == 3, "%s: verify -> %d where %llu count %llu", what,
		      r, (unsigned long long)vf.where, (unsigned long long)vf.count);
		kv = (struct ds_kv __arena *)ds_alloc(&c, 4 * sizeof(*kv));
		REQUIRE(kv, "alloc");
		r = ds_mpsc_iterate(&c, ARENA_PTR(struct ds_mpsc, d), 0, ~0ULL, kv, 4, &it);
		CHECK(r == DS_OK && it == 1 && kv[0].key == 3, "%s: iterate -> %d, %llu", what, r,
		      (unsigned long long)it);
		ds_free(&c, kv);
	} else if (mode == 1) {
		push(&c, d, 4);
	} else {
		prod = stalled_producer(DS_TYPE_mpsc, d, 4, 4);
		r = op1(&c, d, DS_OP_POP, 0, &k, &v);
		if (step == 3) {
			/* the link is in: 3 comes out; 4 is not linked yet,
			 * and a queue with a push under way is not empty */
			CHECK(r == DS_OK && k == 3, "%s: pop -> %d key %llu", what, r, (unsigned long long)k);
			if (r == DS_OK)
				popped[n++] = k;
			r = op1(&c, d, DS_OP_POP, 0, &k, &v);
			CHECK(r == DS_BUSY, "%s: second pop -> %d", what, r);
		} else {
			/* the swap may or may not have happened: not known
			 * until the producer links, so BUSY, never a guess */
			CHECK(r == DS_BUSY, "%s: pop beside the stopped producer -> %d key %llu", what, r,
			      (unsigned long long)k);
		}
		release_producer(prod);
	}
	drain(&c, d, popped, &n, what);
	want = mode == 0 ? 1 : 2;
	CHECK(n == want, "%s: %llu popped after the kill", what, (unsigned long long)n);
	for (i = 0; i < n && i < want; i++)
		CHECK(popped[i] == 3 + i, "%s: pop %llu gave %llu", what, (unsigned long long)i,
		      (unsigned long long)popped[i]);

	/* The queue ends on the stub. A node pushed now can be allocated at
	 * the address of a node the dead consumer recorded (step 3 leaves its
	 * record behind: this thread's pop of that node went the plain way);
	 * the record is pointed at the new node to stand for that reuse. With
	 * a producer stopped behind the node, the next pop must wait for the
	 * producer, not link the node to the stub (the stub's old link would
	 * hand the node out twice). */
	push(&c, d, 7);
	if (step == 3 && mode == 0) {
		struct ds_mpsc *m = ARENA_PTR(struct ds_mpsc, d);

		CHECK(m->relink != 0, "%s: the dead consumer's record is gone", what);
		m->relink = arena_atomic_load(&m->qhead, ARENA_ACQUIRE);
	}
	prod = stalled_producer(DS_TYPE_mpsc, d, 8, 4);
	r = op1(&c, d, DS_OP_POP, 0, &k, &v);
	CHECK(r == DS_BUSY, "%s: pop before the producer's link -> %d key %llu", what, r, (unsigned long long)k);
	release_producer(prod);
	n = 0;
	drain(&c, d, popped, &n, what);
	CHECK(n == 2 && popped[0] == 7 && popped[1] == 8, "%s: after the reuse: %llu popped, first %llu", what,
	      (unsigned long long)n, (unsigned long long)popped[0]);

	REQUIRE(ds_role_read(DS_TYPE_mpsc, d, DS_ROLE_CONSUMER, &st) == DS_OK, "read");
	CHECK(st.owner == 0 && st.takeovers == 1, "%s: owner %#llx takeovers %llu", what,
	      (unsigned long long)st.owner, (unsigned long long)st.takeovers);
	r = ds_verify_type(&c, DS_TYPE_mpsc, d, &vf);
	CHECK(r == DS_OK && vf.count == 0, "%s: final verify -> %d where %llu", what, r,
	      (unsigned long long)vf.where);
	ds_user_detach(&c);
}

/*
 * A producer stopped between its exchange and its link on an empty mpsc
 * (its predecessor is the stub) while a later push completes: the queue is
 * not empty (that push is done), so a pop must say BUSY, not NOT_FOUND.
 * Then both come out in push order.
 */
static void mpsc_empty_behind_producer(void)
{
	struct ds_ctx c;
	struct ds_verify vf;
	ap_u64 d, k = 0, v = 0, got[16], n = 0;
	pid_t pid;
	int r;

	d = new_queue(&c, DS_TYPE_mpsc);
	pid = stalled_producer(DS_TYPE_mpsc, d, 1, 4);
	push(&c, d, 2);
	r = op1(&c, d, DS_OP_POP, 0, &k, &v);
	CHECK(r == DS_BUSY, "mpsc: pop behind a producer mid-push on the stub -> %d (key %llu)", r,
	      (unsigned long long)k);
	release_producer(pid);
	drain(&c, d, got, &n, "mpsc behind a producer on the stub");
	CHECK(n == 2 && got[0] == 1 && got[1] == 2, "mpsc: %llu popped after the producer's link",
	      (unsigned long long)n);
	r = ds_verify_type(&c, DS_TYPE_mpsc, d, &vf);
	CHECK(r == DS_OK && vf.count == 0, "mpsc: verify -> %d where %llu", r, (unsigned long long)vf.where);
	ds_user_detach(&c);
}

/*
 * An msqueue producer killed between linking its node and swinging qtail
 * leaves qtail on the node before, the dummy. A pop of the new node must
 * move qtail on before it moves qhead past it: the dummy it retires is
 * freed once the dead producer's epoch record expires, and the next push
 * reads qtail.
 */
static void msqueue_dead_producer(void)
{
	struct ds_ctx c;
	struct ds_verify vf;
	ap_u64 d, k = 0, v = 0;
	pid_t pid;
	int r;

	d = new_queue(&c, DS_TYPE_msqueue);
	pid = stalled_producer(DS_TYPE_msqueue, d, 1, 5);
	kill_child(pid);
	r = t_op1(&c, DS_TYPE_msqueue, d, DS_OP_POP, 0, &k, &v);
	CHECK(r == DS_OK && k == 1 && v == 10, "msqueue: pop after the dead producer -> %d key %llu", r,
	      (unsigned long long)k);
	/* the dead producer's record expires; what was retired is freed */
	CHECK(ebr_synchronize(&sp->ebr, c.rec, 100000) == 0, "msqueue: synchronize");
	for (k = 2; k <= 4; k++) {
		r = t_op1(&c, DS_TYPE_msqueue, d, DS_OP_INSERT, k, &v, &v);
		CHECK(r == DS_OK, "msqueue: push %llu after the dead producer -> %d", (unsigned long long)k, r);
	}
	for (k = 2; k <= 5; k++) {
		ap_u64 ok, ov;

		r = t_op1(&c, DS_TYPE_msqueue, d, DS_OP_POP, 0, &ok, &ov);
		if (k <= 4)
			CHECK(r == DS_OK && ok == k && ov == k * 10, "msqueue: pop %llu -> %d key %llu",
			      (unsigned long long)k, r, (unsigned long long)ok);
		else
			CHECK(r == DS_NOT_FOUND, "msqueue: pop of an empty queue -> %d", r);
	}
	r = ds_verify_type(&c, DS_TYPE_msqueue, d, &vf);
	CHECK(r == DS_OK && vf.count == 0, "msqueue: verify -> %d where %llu", r, (unsigned long long)vf.where);
	ds_user_detach(&c);
}

/* A random-kill consumer's pop of (k, v): in order after every earlier
 * pop, and counted. */
static void note_pop(ap_u64 k, ap_u64 v)
{
	if (k <= ctl->last || v != k * 10 || k > MAX_VALUES)
		ctl->order_errors++;
	else
		ctl->seen[k]++;
	ctl->last = k;
}

static void consumer_loop(ap_u64 d, int attached)
{
	struct ds_ctx cc;
	ap_u64 k, v;

	if (ds_user_attach(sp, &cc) != DS_OK)
		_exit(2);
	if (attached) {
		if (ds_role_attach(&cc, DS_TYPE_mpsc, d, DS_ROLE_CONSUMER) != DS_OK)
			_exit(3);
		ctl->holders++;
	}
	yield_steps = 1;
	for (;;) {
		if (op1(&cc, d, DS_OP_POP, 0, &k, &v) == DS_OK)
			note_pop(k, v);
		ctl->cstep = 0;
	}
}

static void random_kills(int kills)
{
	struct ds_ctx c;
	struct ds_role_state st;
	struct ds_verify vf;
	struct t_stall stall = {0};
	ap_u64 d, k, v, seed = 0x9e3779b97f4a7c15ULL, lost = 0, twice = 0, at[4] = {0};
	int i, r, status;
	pid_t prod, pid;

	d = new_queue(&c, DS_TYPE_mpsc);
	ctl->last = 0;
	ctl->holders = 0;
	ctl->produced = 0;
	ctl->stop_pushing = 0;
	prod = t_fork();
	if (prod == 0) {
		struct ds_ctx cc;
		ap_u64 key = 0;

		if (ds_user_attach(sp, &cc) != DS_OK)
			_exit(2);
		/* bursts of 1..8, so that the queue often runs empty and pops
		 * put the stub back; never more than BACKLOG ahead */
		while (!ctl->stop_pushing && key < MAX_VALUES) {
			ap_u64 burst = key % 8 + 1;

			while (burst-- && key < MAX_VALUES && key - ctl->last < BACKLOG)
				push(&cc, d, ++key);
			ctl->produced = key;
			sched_yield();
		}
		_exit(0);
	}
	for (i = 0; i < kills; i++) {
		ctl->cstep = 0;
		pid = t_fork();
		if (pid == 0)
			consumer_loop(d, i & 1);
		usleep(100 + t_rand(&seed) % 2000);
		kill_child(pid);
		at[ctl->cstep & 3]++;
	}
	ctl->stop_pushing = 1;
	REQUIRE(waitpid(prod, &status, 0) == prod && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"producer status %#x", status);
	/* the last consumer: everything left, in order */
	for (;;) {
		r = op1(&c, d, DS_OP_POP, 0, &k, &v);
		if (r == DS_NOT_FOUND)
			break;
		if (r == DS_OK)
			note_pop(k, v);
		REQUIRE(!t_stalled(&stall, ctl->last), "the queue is stuck after key %llu (pop -> %d)",
			(unsigned long long)ctl->last, r);
	}
	for (k = 1; k <= ctl->produced; k++) {
		lost += ctl->seen[k] == 0;
		twice += ctl->seen[k] > 1;
	}
	CHECK(ctl->order_errors == 0 && twice == 0, "random kills: %llu out of order, %llu twice",
	      (unsigned long long)ctl->order_errors, (unsigned long long)twice);
	CHECK(lost <= (ap_u64)kills, "random kills: %llu lost in %d kills", (unsigned long long)lost, kills);
	CHECK(ctl->last == ctl->produced, "random kills: the last key %llu of %llu", (unsigned long long)ctl->last,
	      (unsigned long long)ctl->produced);
	REQUIRE(ds_role_read(DS_TYPE_mpsc, d, DS_ROLE_CONSUMER, &st) == DS_OK, "read");
	/* every consumer killed after attaching died holding the role */
	CHECK(st.owner == 0 && st.takeovers >= ctl->holders && st.takeovers <= (ap_u64)kills,
	      "random kills: owner %#llx, %llu takeovers, %llu consumers killed holding the role",
	      (unsigned long long)st.owner, (unsigned long long)st.takeovers, (unsigned long long)ctl->holders);
	r = ds_verify_type(&c, DS_TYPE_mpsc, d, &vf);
	CHECK(r == DS_OK && vf.count == 0, "random kills: verify -> %d where %llu", r, (unsigned long long)vf.where);
	printf("random kills: %d kills, %llu keys, %llu lost, %llu takeovers; killed while putting the stub back: "
	       "recorded %llu, swapped %llu, linked %llu\n",
	       kills, (unsigned long long)ctl->produced, (unsigned long long)lost, (unsigned long long)st.takeovers,
	       (unsigned long long)at[1], (unsigned long long)at[2], (unsigned long long)at[3]);
	ds_user_detach(&c);
}

int main(int argc, char **argv)
{
	int step, mode, kills = argc > 1 ? atoi(argv[1]) : 200;

	ctl = mmap(NULL, sizeof(*ctl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	REQUIRE(ctl != MAP_FAILED, "mmap: %s", strerror(errno));
	t_map_arena();
	sp = t_space(16, 20000, ARENA_HEAP_POISON);
	for (step = 1; step <= 3; step++)
		for (mode = 0; mode <= 2; mode++)
			stub_window(step, mode);
	mpsc_empty_behind_producer();
	msqueue_dead_producer();
#ifdef __SANITIZE_ADDRESS__
	/* AddressSanitizer keeps freed-object poison per process: a consumer
	 * forked before the producer allocated a node reads it as poisoned */
	printf("random kills: skipped under AddressSanitizer (nodes cross processes after the fork)\n");
	(void)kills;
	(void)random_kills;
#else
	random_kills(kills);
#endif
	return t_done("test_faults");
}
