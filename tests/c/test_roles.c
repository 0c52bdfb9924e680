/* SPDX-License-Identifier: MIT */
/*
 * The producer and consumer roles of spsc, mpsc and evq (include/ds/role.h):
 *   - a role held by one context (attached, or kept by a batch) refuses a
 *     second producer or consumer, by a bare operation and by a batch,
 *     until it is given back; a batch gives back what it claimed;
 *   - holding a role lets a context's operations through for that role of
 *     that instance only: not for the other role, nor for the same role of
 *     another instance, attached or inside a batch;
 *   - an spsc end (spsc_end.h) holds its role while it is open: a second
 *     producer or consumer is refused when it opens its end, and by its
 *     bare operations and batches; elements go through the ends in order;
 *     closing one end gives back that role only;
 *   - a role held by a process killed with SIGKILL is reported dead and
 *     taken over by the next claim, which counts it; a live holder, even
 *     a stopped one, never is;
 *   - a batch (ds_exec, or ds_batch_user) claims the roles its operations
 *     need at its start and holds them to its end: a second producer's or consumer's batch that runs
 *     while the first is in the middle of its operations is refused in
 *     every operation and changes nothing; a batch that needs both roles of
 *     an spsc, one of them taken, runs the operations of the other role
 *     and gives it back.
 * Usage: test_roles
 */
#include "tcommon.h"
#include "ds/roles.h"
#include "ds/spsc_end.h"

#include <signal.h>
#include <sys/wait.h>

static struct ds_space *sp;

static ap_u64 create(struct ds_ctx *c, ap_u32 type)
{
	struct ds_config cfg = {.capacity = 64};
	int err;
	ap_u64 d = ds_create(sp, c, type, &cfg, NULL, &err);

	REQUIRE(d, "create %u: %d", type, err);
	return d;
}

/* A batch of n uniform operations through ds_exec; returns the first result. */
static int batch(struct ds_ctx *c, ap_u32 type, ap_u64 d, ap_u32 o, ap_u64 n, ap_u64 *done)
{
	ap_u64 keys[8] = {1, 2, 3, 4, 5, 6, 7, 8}, vals[8] = {10, 20, 30, 40, 50, 60, 70, 80};
	ap_u8 res[8] = {0};
	struct ds_exec_args a = {0};

	REQUIRE(n <= 8, "batch of %llu", (unsigned long long)n);
	a.ds = d;
	a.type = type;
	a.op = (ap_s32)o;
	a.n = n;
	a.keys = keys;
	a.vals = vals;
	a.results = res;
	ds_exec(c, &a);
	*done = a.done;
	return res[0];
}

static ap_u64 owner_of(ap_u32 type, ap_u64 d, ap_u32 which)
{
	struct ds_role_state st;

	REQUIRE(ds_role_read(type, d, which, &st) == DS_OK, "role read");
	return st.owner;
}

/* One enforced role of one structure, held by a: b is refused. */
static void second_refused(ap_u32 type, ap_u32 which)
{
	const char *name = ds_meta_of(type)->name, *role = which == DS_ROLE_PRODUCER ? "producer" : "consumer";
	ap_u32 o = which == DS_ROLE_PRODUCER ? DS_OP_INSERT : DS_OP_POP;
	struct ds_ctx a, b;
	struct ds_verify v = {0};
	ap_u64 d, done, k, val, i;

	REQUIRE(ds_user_attach(sp, &a) == DS_OK && ds_user_attach(sp, &b) == DS_OK, "attach");
	d = create(&a, type);
	for (i = 0; i < 4; i++)
		CHECK(t_op1(&a, type, d, DS_OP_INSERT, 100 + i, NULL, NULL) == DS_OK, "%s: fill", name);
	CHECK(owner_of(type, d, which) == 0, "%s %s: held after bare operations", name, role);

	CHECK(ds_role_attach(&a, type, d, which) == DS_OK, "%s: attach %s", name, role);
	CHECK(owner_of(type, d, which) == a.owner, "%s %s: holder %#llx, not the attached context", name, role,
	      (unsigned long long)owner_of(type, d, which));
	CHECK(ds_role_attach(&b, type, d, which) == DS_BUSY, "%s: second %s attached", name, role);
	CHECK(t_op1(&b, type, d, o, 7, &k, &val) == DS_BUSY, "%s: second %s's bare operation not refused", name, role);
	CHECK(batch(&b, type, d, o, 4, &done) == DS_BUSY && done == 4, "%s: second %s's batch not refused", name,
	      role);
	CHECK(ds_verify_type(&a, type, d, &v) == DS_BUSY, "%s: verify while a %s is attached", name, role);
	/* the holder's own operations run */
	if (o == DS_OP_POP) {
		CHECK(t_op1(&a, type, d, DS_OP_POP, 0, &k, &val) == DS_OK && k == 100 && val == 1000,
		      "%s: holder's pop -> key %llu", name, (unsigned long long)k);
		CHECK(batch(&a, type, d, DS_OP_POP, 2, &done) == DS_OK && done == 2, "%s: holder's pop batch", name);
	} else {
		CHECK(t_op1(&a, type, d, DS_OP_INSERT, 200, NULL, NULL) == DS_OK, "%s: holder's push", name);
		CHECK(batch(&a, type, d, DS_OP_INSERT, 2, &done) == DS_OK && done == 2, "%s: holder's push batch",
		      name);
	}
	CHECK(owner_of(type, d, which) == a.owner, "%s %s: a batch gave back an attached role", name, role);
	ds_role_detach(&a);
	CHECK(owner_of(type, d, which) == 0, "%s %s: held after detach", name, role);

	/* a batch holds it for its length only */
	CHECK(batch(&b, type, d, o, 1, &done) == DS_OK && done == 1, "%s: %s batch after detach", name, role);
	CHECK(owner_of(type, d, which) == 0, "%s %s: held after a batch", name, role);
	CHECK(b.held == 0, "%s: context keeps %#llx after its batch", name, (unsigned long long)b.held);
	CHECK(ds_verify_type(&a, type, d, &v) == DS_OK, "%s: verify after detach -> where %llu", name,
	      (unsigned long long)v.where);
	ds_user_detach(&a);
	ds_user_detach(&b);
}

/*
 * What a held role lets through (ds_role_held): a holds spsc d1's producer
 * role; b holds d1's consumer role and d2's producer role is held by c. a's
 * pop on d1 and push on d2 must claim, and are refused; a's push on d1 runs.
 * The same inside a batch, whose held word also carries DS_HELD_KEEP.
 */
static void held_is_exact(void)
{
	struct ds_ctx a, b, c;
	ap_u64 d1, d2, k, v, done;

	REQUIRE(ds_user_attach(sp, &a) == DS_OK && ds_user_attach(sp, &b) == DS_OK &&
		ds_user_attach(sp, &c) == DS_OK, "attach");
	d1 = create(&a, DS_TYPE_spsc);
	d2 = create(&a, DS_TYPE_spsc);
	CHECK(t_op1(&a, DS_TYPE_spsc, d1, DS_OP_INSERT, 5, NULL, NULL) == DS_OK, "fill d1");
	CHECK(ds_role_attach(&a, DS_TYPE_spsc, d1, DS_ROLE_PRODUCER) == DS_OK, "a: d1 producer");
	CHECK(ds_role_attach(&b, DS_TYPE_spsc, d1, DS_ROLE_CONSUMER) == DS_OK, "b: d1 consumer");
	CHECK(ds_role_attach(&c, DS_TYPE_spsc, d2, DS_ROLE_PRODUCER) == DS_OK, "c: d2 producer");

	CHECK(t_op1(&a, DS_TYPE_spsc, d1, DS_OP_POP, 0, &k, &v) == DS_BUSY,
	      "the producer's pop went past the consumer's role");
	CHECK(t_op1(&a, DS_TYPE_spsc, d2, DS_OP_INSERT, 6, NULL, NULL) == DS_BUSY,
	      "d1's producer pushed into d2, whose producer role is held");
	CHECK(t_op1(&a, DS_TYPE_spsc, d1, DS_OP_INSERT, 7, NULL, NULL) == DS_OK, "a's own push");
	CHECK(batch(&a, DS_TYPE_spsc, d1, DS_OP_POP, 2, &done) == DS_BUSY,
	      "the producer's pop batch went past the consumer's role");
	CHECK(batch(&a, DS_TYPE_spsc, d2, DS_OP_INSERT, 2, &done) == DS_BUSY,
	      "d1's producer's batch pushed into d2");
	/* b, attached to d1's consumer role only, takes d2's consumer role for
	 * a batch: its held word points at d1, so d2 needs a claim of its own */
	CHECK(batch(&b, DS_TYPE_spsc, d2, DS_OP_POP, 1, &done) == DS_NOT_FOUND && done == 1,
	      "b's pop batch on empty d2");
	CHECK(owner_of(DS_TYPE_spsc, d2, DS_ROLE_CONSUMER) == 0, "d2's consumer role kept after b's batch");
	CHECK(t_op1(&b, DS_TYPE_spsc, d1, DS_OP_POP, 0, &k, &v) == DS_OK && k == 5, "b's pop -> key %llu",
	      (unsigned long long)k);
	ds_role_detach(&a);
	ds_role_detach(&b);
	ds_role_detach(&c);
	ds_user_detach(&a);
	ds_user_detach(&b);
	ds_user_detach(&c);
}

static void spsc_ends(void)
{
	struct ds_ctx a, b, c;
	struct ds_spsc_producer p, p2;
	struct ds_spsc_consumer q, q2;
	ap_u64 d, m, k, v, done, i;

	REQUIRE(ds_user_attach(sp, &a) == DS_OK && ds_user_attach(sp, &b) == DS_OK &&
		ds_user_attach(sp, &c) == DS_OK, "attach");
	d = create(&a, DS_TYPE_spsc);
	m = create(&a, DS_TYPE_mpmc);
	CHECK(ds_spsc_open_producer(&a, m, &p) == DS_INVALID && !p.d, "a producer end opened on an mpmc");
	CHECK(ds_spsc_open_producer(&a, d, &p) == DS_OK && p.d, "a: producer end");
	CHECK(owner_of(DS_TYPE_spsc, d, DS_ROLE_PRODUCER) == a.owner, "producer end: role not held by a");
	CHECK(ds_spsc_open_producer(&b, d, &p2) == DS_BUSY && !p2.d, "b: a second producer end opened");
	CHECK(t_op1(&b, DS_TYPE_spsc, d, DS_OP_INSERT, 9, NULL, NULL) == DS_BUSY, "b: second producer's push ran");
	CHECK(batch(&b, DS_TYPE_spsc, d, DS_OP_INSERT, 2, &done) == DS_BUSY, "b: second producer's batch ran");
	CHECK(ds_spsc_open_consumer(&c, d, &q) == DS_OK && q.d, "c: consumer end");
	CHECK(ds_spsc_open_consumer(&b, d, &q2) == DS_BUSY && !q2.d, "b: a second consumer end opened");
	CHECK(t_op1(&b, DS_TYPE_spsc, d, DS_OP_POP, 0, &k, &v) == DS_BUSY, "b: second consumer's pop ran");
	/* fill the ring (64 slots) and one more: refused, nothing overwritten */
	for (i = 0; i < 64; i++)
		CHECK(ds_spsc_put(&p, 1000 + i, 2000 + i) == DS_OK, "put %llu", (unsigned long long)i);
	CHECK(ds_spsc_put(&p, 1, 1) == DS_FULL, "put into a full ring");
	for (i = 0; i < 64; i++)
		CHECK(ds_spsc_take(&q, &k, &v) == DS_OK && k == 1000 + i && v == 2000 + i,
		      "take %llu -> (%llu, %llu)", (unsigned long long)i, (unsigned long long)k,
		      (unsigned long long)v);
	CHECK(ds_spsc_take(&q, &k, &v) == DS_NOT_FOUND, "take from an empty ring");
	/* around the ring once more: the producer's cached limit moves on */
	for (i = 0; i < 100; i++) {
		CHECK(ds_spsc_put(&p, i, i + 1) == DS_OK, "put %llu after the wrap", (unsigned long long)i);
		CHECK(ds_spsc_take(&q, &k, &v) == DS_OK && k == i && v == i + 1, "take %llu after the wrap",
		      (unsigned long long)i);
	}
	ds_spsc_close_producer(&p);
	CHECK(owner_of(DS_TYPE_spsc, d, DS_ROLE_PRODUCER) == 0 && a.held == 0, "producer role kept after close");
	CHECK(owner_of(DS_TYPE_spsc, d, DS_ROLE_CONSUMER) == c.owner, "closing the producer gave back the consumer");
	CHECK(ds_spsc_open_producer(&b, d, &p2) == DS_OK, "b: producer end after a closed its own");
	CHECK(ds_spsc_put(&p2, 77, 78) == DS_OK, "b: put");
	CHECK(ds_spsc_take(&q, &k, &v) == DS_OK && k == 77 && v == 78, "take b's element");
	ds_spsc_close_consumer(&q);
	CHECK(owner_of(DS_TYPE_spsc, d, DS_ROLE_CONSUMER) == 0 && c.held == 0, "consumer role kept after close");
	ds_spsc_close_producer(&p2);
	ds_user_detach(&a);
	ds_user_detach(&b);
	ds_user_detach(&c);
}

/* A batch of n operations ops[] through ds_exec; results into res[]. */
static ap_u64 batch_ops(struct ds_ctx *c, ap_u32 type, ap_u64 d, const ap_u8 *ops, ap_u64 n, ap_u64 *okeys,
			ap_u8 *res)
{
	ap_u64 keys[8] = {1, 2, 3, 4, 5, 6, 7, 8}, vals[8] = {10, 20, 30, 40, 50, 60, 70, 80};
	struct ds_exec_args a = {0};

	REQUIRE(n <= 8, "batch of %llu", (unsigned long long)n);
	a.ds = d;
	a.type = type;
	a.op = -1;
	a.n = n;
	a.ops = ops;
	a.keys = keys;
	a.vals = vals;
	a.okeys = okeys;
	a.results = res;
	return ds_exec(c, &a);
}

/*
 * Role which of d held by another process's batch (ds_exec, or with
 * user_batch the kernel's batch format run by ds_batch_user), in the
 * middle of its operations: this process's batch of that role is refused in every
 * operation and changes nothing. The child's batch never ends by itself
 * (2^40 operations: inserts into a ring it has filled, each DS_FULL, or
 * pops from an empty queue, each DS_NOT_FOUND); the parent waits until the
 * role's holder is the child, runs its batch, kills the child and takes
 * the role over.
 */
static void concurrent_batch_refused(ap_u32 type, ap_u32 which, int user_batch)
{
	const char *name = ds_meta_of(type)->name, *role = which == DS_ROLE_PRODUCER ? "producer" : "consumer";
	ap_u32 o = which == DS_ROLE_PRODUCER ? DS_OP_INSERT : DS_OP_POP;
	struct ds_role_state st;
	struct ds_verify v = {0};
	struct ds_ctx c;
	ap_u64 d, done, k, val, n = 0, last = 0;
	int status = 0, r;
	pid_t pid;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	d = create(&c, type);
	/* mpsc's elements are nodes of their own: pushed before the fork, so
	 * that the child's AddressSanitizer, whose poisoning of freed memory is
	 * per process, knows them as allocated (the ring structures' slots are
	 * one allocation) */
	if (type == DS_TYPE_mpsc && o == DS_OP_POP)
		for (k = 0; k < 4; k++)
			CHECK(t_op1(&c, type, d, DS_OP_INSERT, 100 + k, NULL, NULL) == DS_OK, "%s: push", name);
	pid = fork();
	REQUIRE(pid >= 0, "fork");
	if (pid == 0) {
		struct ds_ctx cc;
		struct ds_exec_args a = {0};
		struct ds_batch b = {0};

		if (ds_user_attach(sp, &cc) != DS_OK)
			_exit(2);
		if (user_batch) {
			/* the kernel's batch format run by this thread
			 * (ds_batch_user): 2^32 - 1 operations, inserts of
			 * key and value 0 */
			b.ds = d;
			b.type = type;
			b.cmd = DS_CMD_MIX;
			b.count = ~0U;
			b.keys = DS_KEYS_SEQ;
			b.mix[o == DS_OP_INSERT ? DS_MIX_INSERT : DS_MIX_POP] = 1;
			b.flags = DS_BATCH_VAL_KEY;
			ds_batch_user(&cc, &b);
			_exit(3);
		}
		a.ds = d;
		a.type = type;
		a.op = (ap_s32)o;
		a.n = 1ULL << 40;
		ds_exec(&cc, &a);
		_exit(3);
	}
	/* until the child's batch holds the role: a batch claims it at its
	 * start (the bound only keeps a broken claim from hanging the test) */
	for (k = 0;; k++) {
		REQUIRE(ds_role_read(type, d, which, &st) == DS_OK, "read");
		if (st.owner >> 32 == (ap_u64)pid)
			break;
		if (k == 20000 || waitpid(pid, &status, WNOHANG) != 0) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			REQUIRE(0, "%s: the child's %s batch does not hold the role", name, role);
		}
		usleep(1000);
	}
	if (o == DS_OP_INSERT) {
		/* the ring is full of the child's zeros, or filling with them */
		CHECK(batch(&c, type, d, DS_OP_INSERT, 8, &done) == DS_BUSY && done == 8,
		      "%s: a second producer's batch ran beside the first", name);
	} else {
		for (k = 0; k < 4 && type != DS_TYPE_mpsc; k++)
			CHECK(t_op1(&c, type, d, DS_OP_INSERT, 100 + k, NULL, NULL) == DS_OK, "%s: push", name);
		CHECK(batch(&c, type, d, DS_OP_POP, 8, &done) == DS_BUSY && done == 8,
		      "%s: a second consumer's batch ran beside the first", name);
	}
	CHECK(ds_role_read(type, d, which, &st) == DS_OK && st.owner >> 32 == (ap_u64)pid,
	      "%s %s: the refused batch changed the holder to %#llx", name, role, (unsigned long long)st.owner);
	kill(pid, SIGKILL);
	REQUIRE(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		"%s: child status %#x", name, status);
	/* what is left: the producer's case, only the child's zeros (at most
	 * the ring's 64); the consumer's, what the child did not pop of
	 * 100..103, in order */
	while ((r = t_op1(&c, type, d, DS_OP_POP, 0, &k, &val)) == DS_OK) {
		if (o == DS_OP_INSERT)
			CHECK(k == 0 && val == 0, "%s: the refused batch put in (%llu, %llu)", name,
			      (unsigned long long)k, (unsigned long long)val);
		else
			CHECK(k >= 100 && k < 104 && k > last && val == k * 10, "%s: popped (%llu, %llu) after %llu",
			      name, (unsigned long long)k, (unsigned long long)val, (unsigned long long)last);
		last = k;
		n++;
	}
	CHECK(r == DS_NOT_FOUND, "%s: pop after the child -> %d", name, r);
	CHECK(n <= (o == DS_OP_INSERT ? 64 : 4), "%s: %llu elements left", name, (unsigned long long)n);
	if (o == DS_OP_INSERT) {
		/* the next producer takes the dead child's role over */
		CHECK(t_op1(&c, type, d, DS_OP_INSERT, 500, NULL, NULL) == DS_OK, "%s: push after the child", name);
		CHECK(t_op1(&c, type, d, DS_OP_POP, 0, &k, &val) == DS_OK && k == 500 && val == 5000,
		      "%s: pop -> (%llu, %llu)", name, (unsigned long long)k, (unsigned long long)val);
	}
	REQUIRE(ds_role_read(type, d, which, &st) == DS_OK, "read");
	CHECK(st.owner == 0 && st.takeovers == 1, "%s %s: after the child: owner %#llx, takeovers %llu", name, role,
	      (unsigned long long)st.owner, (unsigned long long)st.takeovers);
	CHECK(ds_verify_type(&c, type, d, &v) == DS_OK, "%s: verify -> where %llu", name,
	      (unsigned long long)v.where);
	ds_user_detach(&c);
}

/*
 * A batch that needs both roles of an spsc while another context holds the
 * consumer's: its inserts run, its pops are refused, and it gives back the
 * producer's role it claimed. With both roles free, the same batch runs
 * every operation, in order, and gives both back.
 */
static void mixed_batch(void)
{
	static const ap_u8 ops[6] = {DS_OP_INSERT, DS_OP_POP, DS_OP_INSERT, DS_OP_INSERT, DS_OP_POP, DS_OP_POP};
	struct ds_ctx a, b;
	ap_u64 d, okeys[6], done, i;
	ap_u8 res[6];

	REQUIRE(ds_user_attach(sp, &a) == DS_OK && ds_user_attach(sp, &b) == DS_OK, "attach");
	d = create(&a, DS_TYPE_spsc);
	CHECK(ds_role_attach(&b, DS_TYPE_spsc, d, DS_ROLE_CONSUMER) == DS_OK, "b: consumer");
	done = batch_ops(&a, DS_TYPE_spsc, d, ops, 6, okeys, res);
	CHECK(done == 6, "mixed batch beside a consumer: %llu done", (unsigned long long)done);
	for (i = 0; i < 6; i++)
		CHECK(res[i] == (ops[i] == DS_OP_INSERT ? DS_OK : DS_BUSY), "mixed batch beside a consumer: op %llu -> %d",
		      (unsigned long long)i, res[i]);
	CHECK(owner_of(DS_TYPE_spsc, d, DS_ROLE_PRODUCER) == 0 && a.held == 0,
	      "mixed batch: producer role kept after the batch");
	CHECK(owner_of(DS_TYPE_spsc, d, DS_ROLE_CONSUMER) == b.owner, "mixed batch: the consumer's role changed hands");
	ds_role_detach(&b);
	/* the first batch left keys 1, 3, 4: the second batch's pops take
	 * them, in that order, ahead of its own inserts */
	done = batch_ops(&a, DS_TYPE_spsc, d, ops, 6, okeys, res);
	CHECK(done == 6, "mixed batch: %llu done", (unsigned long long)done);
	for (i = 0; i < 6; i++)
		CHECK(res[i] == DS_OK, "mixed batch: op %llu -> %d", (unsigned long long)i, res[i]);
	CHECK(okeys[1] == 1 && okeys[4] == 3 && okeys[5] == 4, "mixed batch popped %llu %llu %llu",
	      (unsigned long long)okeys[1], (unsigned long long)okeys[4], (unsigned long long)okeys[5]);
	CHECK(owner_of(DS_TYPE_spsc, d, DS_ROLE_PRODUCER) == 0 && owner_of(DS_TYPE_spsc, d, DS_ROLE_CONSUMER) == 0 &&
	      a.held == 0, "mixed batch: roles kept after the batch");
	ds_user_detach(&a);
	ds_user_detach(&b);
}

static void not_enforced(void)
{
	struct ds_ctx a;
	ap_u64 d;

	REQUIRE(ds_user_attach(sp, &a) == DS_OK, "attach");
	d = create(&a, DS_TYPE_mpsc);
	CHECK(ds_role_attach(&a, DS_TYPE_mpsc, d, DS_ROLE_PRODUCER) == DS_INVALID, "mpsc producer role attached");
	d = create(&a, DS_TYPE_mpmc);
	CHECK(ds_role_attach(&a, DS_TYPE_mpmc, d, DS_ROLE_CONSUMER) == DS_INVALID, "mpmc role attached");
	ds_user_detach(&a);
}

/*
 * A child process attaches to role which of d and waits; it is stopped,
 * then killed with SIGKILL while holding the role. The parent's claims are
 * refused while it lives, and take the role over once it is gone.
 */
static void dead_holder(ap_u32 type, ap_u32 which)
{
	const char *name = ds_meta_of(type)->name, *role = which == DS_ROLE_PRODUCER ? "producer" : "consumer";
	ap_u32 o = which == DS_ROLE_PRODUCER ? DS_OP_INSERT : DS_OP_POP;
	struct ds_role_state st;
	struct ds_ctx c;
	int ready[2], status;
	ap_u64 d, k, val, done;
	char ch;
	pid_t pid;

	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	d = create(&c, type);
	CHECK(t_op1(&c, type, d, DS_OP_INSERT, 5, NULL, NULL) == DS_OK, "%s: push", name);
	REQUIRE(pipe(ready) == 0, "pipe");
	pid = fork();
	REQUIRE(pid >= 0, "fork");
	if (pid == 0) {
		struct ds_ctx cc;

		if (ds_user_attach(sp, &cc) != DS_OK || ds_role_attach(&cc, type, d, which) != DS_OK)
			_exit(2);
		if (write(ready[1], "r", 1) != 1)
			_exit(3);
		for (;;)
			pause();
	}
	close(ready[1]);
	REQUIRE(read(ready[0], &ch, 1) == 1, "%s: the child did not take the %s role", name, role);
	close(ready[0]);

	REQUIRE(ds_role_read(type, d, which, &st) == DS_OK, "read");
	CHECK(st.owner >> 32 == (ap_u64)pid && !st.dead && st.takeovers == 0,
	      "%s %s: owner %#llx dead %d takeovers %llu with the child alive", name, role,
	      (unsigned long long)st.owner, st.dead, (unsigned long long)st.takeovers);
	CHECK(t_op1(&c, type, d, o, 6, &k, &val) == DS_BUSY, "%s: %s taken from a live holder", name, role);
	/* stopped is alive */
	kill(pid, SIGSTOP);
	waitpid(pid, &status, WUNTRACED);
	CHECK(t_op1(&c, type, d, o, 6, &k, &val) == DS_BUSY, "%s: %s taken from a stopped holder", name, role);
	kill(pid, SIGKILL);
	REQUIRE(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		"%s: child status %#x", name, status);

	REQUIRE(ds_role_read(type, d, which, &st) == DS_OK, "read");
	CHECK(st.owner >> 32 == (ap_u64)pid && st.dead && st.takeovers == 0,
	      "%s %s: dead holder not reported: owner %#llx dead %d", name, role, (unsigned long long)st.owner,
	      st.dead);
	if (o == DS_OP_POP) {
		/* a batch takes it over, pops, and gives it back */
		CHECK(batch(&c, type, d, DS_OP_POP, 1, &done) == DS_OK && done == 1, "%s: pop after the holder died",
		      name);
	} else {
		CHECK(t_op1(&c, type, d, DS_OP_INSERT, 6, NULL, NULL) == DS_OK, "%s: push after the holder died", name);
		CHECK(t_op1(&c, type, d, DS_OP_POP, 0, &k, &val) == DS_OK && k == 5, "%s: pop -> %llu", name,
		      (unsigned long long)k);
		CHECK(t_op1(&c, type, d, DS_OP_POP, 0, &k, &val) == DS_OK && k == 6 && val == 60, "%s: pop -> %llu",
		      name, (unsigned long long)k);
	}
	REQUIRE(ds_role_read(type, d, which, &st) == DS_OK, "read");
	CHECK(st.owner == 0 && st.takeovers == 1, "%s %s: after the takeover: owner %#llx, takeovers %llu", name,
	      role, (unsigned long long)st.owner, (unsigned long long)st.takeovers);
	ds_user_detach(&c);
}

int main(void)
{
	static const ap_u32 types[] = {DS_TYPE_spsc, DS_TYPE_mpsc, DS_TYPE_evq};
	ap_u32 t;

	t_map_arena();
	sp = t_space(16, 20000, ARENA_HEAP_POISON);
	for (t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		if (ds_role_enforced(types[t], DS_ROLE_PRODUCER)) {
			second_refused(types[t], DS_ROLE_PRODUCER);
			dead_holder(types[t], DS_ROLE_PRODUCER);
		}
		second_refused(types[t], DS_ROLE_CONSUMER);
		dead_holder(types[t], DS_ROLE_CONSUMER);
		concurrent_batch_refused(types[t], DS_ROLE_CONSUMER, 0);
		concurrent_batch_refused(types[t], DS_ROLE_CONSUMER, 1);
	}
	concurrent_batch_refused(DS_TYPE_spsc, DS_ROLE_PRODUCER, 0);
	concurrent_batch_refused(DS_TYPE_spsc, DS_ROLE_PRODUCER, 1);
	mixed_batch();
	held_is_exact();
	spsc_ends();
	not_enforced();
	return t_done("test_roles");
}
