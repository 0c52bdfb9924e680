// SPDX-License-Identifier: MIT
/*
 * Loading, attaching and tearing down the BPF side of a capture session.
 */
#include "session.h"

#include "coreutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "burst.h"
#include "dsops.h"
#include "lsm.skel.h"
#include "producer.skel.h"
#include "proctab.skel.h"

/* Pages a session's data-structure space needs at least: its header, the
 * kernel CPUs' page pools and room to work. */
#define AP_SESSION_DS_MIN_PAGES (DS_SPACE_HDR_PAGES + 16)
/* Pages each kernel CPU keeps in its pool for non-sleepable allocations: a
 * process-table entry (include/proc.h) with its path takes ~600 bytes, so
 * ~90 forks per CPU between two refills. */
#define AP_SESSION_DS_POOL_PAGES 16

/* ---- open: load the producer object, map the arena, lay out the root ---- */

static uint64_t pages_for(uint64_t bytes)
{
	return (bytes + ARENA_PAGE_SIZE - 1) / ARENA_PAGE_SIZE;
}

static int map_arena(struct ap_session *s, char *err, size_t errlen)
{
	size_t sz = 0;
	void *base = bpf_map__initial_value(s->prod->maps.arena, &sz);

	/* libbpf >= 1.4 maps an arena with map_extra at that address on load */
	if (base == NULL) {
		base = mmap((void *)ARENA_BASE, s->arena_pages * ARENA_PAGE_SIZE,
			    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE,
			    bpf_map__fd(s->prod->maps.arena), 0);
		if (base == MAP_FAILED)
			return ap_fail(err, errlen, errno, "cannot map the BPF arena at %#llx: %s",
				    (unsigned long long)ARENA_BASE, strerror(errno));
		s->mapped_here = 1;
	}
	if ((uint64_t)(uintptr_t)base != ARENA_BASE)
		return ap_fail(err, errlen, EFAULT, "the BPF arena is mapped at %p, not at %#llx",
			    base, (unsigned long long)ARENA_BASE);
	return 0;
}

/* The space over every page after the queue's slots; the kernel CPUs' page
 * pools are filled now, from userspace. */
static int layout_ds(struct ap_session *s, char *err, size_t errlen)
{
	int cpus = libbpf_num_possible_cpus();
	uint64_t npages = s->arena_pages - s->ds_first_page;

	s->sp = ds_space_init(s->ds_first_page, npages, cpus > 0 ? (ap_u32)cpus : 1,
			      AP_SESSION_DS_POOL_PAGES, 0);
	if (!s->sp)
		return ap_fail(err, errlen, EINVAL,
			    "cannot lay out the data-structure space over pages %llu..%llu of the arena",
			    (unsigned long long)s->ds_first_page, (unsigned long long)s->arena_pages);
	s->root->ds_first_page = s->ds_first_page;
	s->root->ds_pages = npages;
	s->root->creator_pid = (ap_u64)getpid();
	s->share.version = AP_DS_SHARE_VERSION;
	s->share.pages = s->arena_pages;
	s->share.sp = s->sp;
	s->share.creator_pid = (uint64_t)getpid();
	s->share.trim_fd = -1;
	for (int t = 0; t < DS_TYPES_END; t++)
		s->share.prog_fd[t] = -1;
	return 0;
}

/* The ds_ops programs into the session's arena map (a thread of its own:
 * their verification takes about as long as the producer's). */
static void *load_ds_ops(void *arg)
{
	struct ap_session *s = arg;

	s->ds_ret = ap_ds_ops_load_shared(&s->ds, s->arena_fd, s->ds_err, sizeof(s->ds_err));
	return NULL;
}

/* Making the arena map or loading the producer failed (ret: -errno): undo
 * and say why in the terms the user can act on. */
static int load_failed(struct ap_session *s, int ret, char *err, size_t errlen)
{
	ap_session_close(s);
	if (ret == -ENOSYS)
		return ap_fail(err, errlen, ret,
			    "this kernel has no bpf() system call (CONFIG_BPF_SYSCALL is off, or a seccomp policy blocks it): BPF is unavailable here");
	if (ret == -EPERM || ret == -EACCES)
		return ap_fail(err, errlen, ret,
			    "loading BPF programs was refused (%s): run as root or with CAP_BPF and CAP_PERFMON",
			    strerror(-ret));
	return ap_fail(err, errlen, ret,
		    "loading the BPF programs failed (%s): this kernel needs BPF arena support (Linux >= 6.9, BPF_MAP_TYPE_ARENA)",
		    strerror(-ret));
}

static void join_ds_loader(struct ap_session *s)
{
	if (!s->ds_loading)
		return;
	pthread_join(s->ds_loader, NULL);
	s->ds_loading = 0;
	if (s->ds_ret || !s->sp)
		return;
	for (int t = 0; t < DS_TYPES_END; t++)
		s->share.prog_fd[t] = ap_ds_ops_prog_fd(s->ds, (uint32_t)t);
	s->share.trim_fd = bpf_program__fd(s->ds->progs.ds_trim);
	s->share.kernel_ops = &s->ds->bss->kernel_ops;
	s->share.kernel_fails = &s->ds->bss->kernel_fails;
	s->share.kernel_batches = &s->ds->bss->kernel_batches;
	s->share.alive = 1;
}

int ap_session_ds(struct ap_session *s, char *err, size_t errlen)
{
	join_ds_loader(s);
	if (s->ds_ret)
		return ap_fail(err, errlen, s->ds_ret, "%s", s->ds_err);
	if (!s->share.alive)
		return ap_fail(err, errlen, ENOENT, "the session has no data-structure space");
	return 0;
}

/* The doorbell's records carry nothing: being woken is the message. */
static int bell_record(void *ctx, void *data, size_t size)
{
	(void)ctx;
	(void)data;
	(void)size;
	return 0;
}

int ap_session_open(struct ap_session *s, uint64_t arena_pages, uint64_t queue_capacity,
		    char *err, size_t errlen)
{
	uint64_t slot_pages;
	struct evq_slot *slots;
	int ret;

	memset(s, 0, sizeof(*s));
	s->arena_fd = -1;
	if (queue_capacity < 2 || (queue_capacity & (queue_capacity - 1)))
		return ap_fail(err, errlen, EINVAL, "queue capacity %llu is not a power of two >= 2",
			    (unsigned long long)queue_capacity);
	slot_pages = pages_for(queue_capacity * sizeof(struct evq_slot));
	s->queue_pages = 1 + slot_pages + AP_FILTER_PAGES;
	/* page 0 the NULL guard, page 1 the root, the slots, the two filter
	 * tables (include/filter.h), then the space */
	s->ds_first_page = 2 + slot_pages + AP_FILTER_PAGES;
	if (arena_pages < s->ds_first_page + AP_SESSION_DS_MIN_PAGES)
		return ap_fail(err, errlen, EINVAL,
			    "arena of %llu pages is too small for a queue of %llu events and the data-structure space (needs %llu): raise --arena-pages or lower --queue-capacity",
			    (unsigned long long)arena_pages, (unsigned long long)queue_capacity,
			    (unsigned long long)(s->ds_first_page + AP_SESSION_DS_MIN_PAGES));
	s->arena_pages = arena_pages;
	/* libbpf maps an arena at its map_extra with MAP_FIXED, which would
	 * silently replace another arena this process has there */
	if (ap_arena_base_free(arena_pages))
		return ap_fail(err, errlen, EBUSY,
			    "address %#llx is already mapped in this process (a pipeline.ds Arena of its own?): one arena per process; use the session's (pipeline.ds.Arena.of_session)",
			    (unsigned long long)ARENA_BASE);

	/* The arena map is made first, so the producer and the ds_ops programs
	 * can load into it at the same time (each takes about as long to
	 * verify): the data-structure programs load on a thread of their own
	 * while the producer loads and the session lays out the arena. */
	{
		LIBBPF_OPTS(bpf_map_create_opts, mo, .map_flags = BPF_F_MMAPABLE, .map_extra = ARENA_BASE);

		s->arena_fd = bpf_map_create(BPF_MAP_TYPE_ARENA, "arena", 0, 0, (uint32_t)arena_pages, &mo);
	}
	if (s->arena_fd < 0)
		return load_failed(s, -errno, err, errlen);
	s->ds_ret = pthread_create(&s->ds_loader, NULL, load_ds_ops, s);
	if (s->ds_ret) {
		s->ds_ret = -s->ds_ret;
		snprintf(s->ds_err, sizeof(s->ds_err), "cannot start loading the ds_ops programs: %s",
			 strerror(-s->ds_ret));
	} else {
		s->ds_loading = 1;
	}

	s->prod = producer_bpf__open();
	if (!s->prod) {
		ret = -errno;
		ap_session_close(s);
		return ap_fail(err, errlen, ret, "cannot open the BPF object: %s", strerror(-ret));
	}
	/* the benchmark's load source is attached only when asked for */
	bpf_program__set_autoattach(s->prod->progs.bench_getppid, false);
	s->prod->rodata->bench_syscall_nr = SYS_getppid;
	ret = bpf_map__reuse_fd(s->prod->maps.arena, s->arena_fd);
	if (!ret)
		ret = producer_bpf__load(s->prod);
	if (ret)
		return load_failed(s, -errno, err, errlen);
	ret = map_arena(s, err, errlen);
	if (ret) {
		ap_session_close(s);
		return ret;
	}

	/* The root and the slots are written here first, so userspace faults
	 * their pages in; the kernel side then finds them present. */
	s->root = (struct ap_root *)(uintptr_t)(ARENA_BASE + ARENA_ROOT_OFFSET);
	slots = (struct evq_slot *)(uintptr_t)(ARENA_BASE + 2 * ARENA_PAGE_SIZE);
	memset(s->root, 0, sizeof(*s->root));
	s->root->version = AP_ROOT_VERSION;
	s->root->arena_pages = arena_pages;
	s->q = &s->root->evq;
	evq_init(s->q, slots, queue_capacity);
	/* filter_seq 0: no filter table is read until one is published; the
	 * tables' pages are backed when first written */
	s->root->filter_tabs = ARENA_BASE + (2 + slot_pages) * ARENA_PAGE_SIZE;
	if (getrandom(&s->root->filter_seed, sizeof(s->root->filter_seed), 0) !=
	    (ssize_t)sizeof(s->root->filter_seed)) {
		ret = -errno;
		ap_session_close(s);
		return ap_fail(err, errlen, ret, "cannot seed the filters' hash: %s", strerror(-ret));
	}
	ret = layout_ds(s, err, errlen);
	if (ret) {
		ap_session_close(s);
		return ret;
	}
	arena_atomic_store(&s->root->magic, AP_ROOT_MAGIC, ARENA_RELEASE);

	s->bell = ring_buffer__new(bpf_map__fd(s->prod->maps.doorbell), bell_record, NULL, NULL);
	if (!s->bell) {
		ret = -errno;
		ap_session_close(s);
		return ap_fail(err, errlen, ret, "cannot open the doorbell ring buffer: %s",
			    strerror(-ret));
	}
	return 0;
}

int ap_session_doorbell_fd(struct ap_session *s)
{
	return ring_buffer__epoll_fd(s->bell);
}

int ap_session_consume_doorbell(struct ap_session *s)
{
	return ring_buffer__consume(s->bell);
}

/* ---- attach ---- */

int ap_session_attach_lsm(struct ap_session *s, char *err, size_t errlen)
{
	int ret;

	s->lsm = lsm_bpf__open();
	if (!s->lsm)
		return ap_fail(err, errlen, errno, "cannot open the LSM BPF object: %s", strerror(errno));
	/* share the producer object's arena and doorbell */
	ret = bpf_map__reuse_fd(s->lsm->maps.arena, bpf_map__fd(s->prod->maps.arena));
	if (!ret)
		ret = bpf_map__reuse_fd(s->lsm->maps.doorbell, bpf_map__fd(s->prod->maps.doorbell));
	if (!ret)
		ret = lsm_bpf__load(s->lsm);
	if (ret) {
		ret = -errno;
		lsm_bpf__destroy(s->lsm);
		s->lsm = NULL;
		return ap_fail(err, errlen, ret,
			    "BPF LSM programs cannot be loaded on this kernel (%s from the BPF trampoline)",
			    strerror(-ret));
	}
	ret = lsm_bpf__attach(s->lsm);
	if (ret) {
		ret = -errno;
		lsm_bpf__destroy(s->lsm);
		s->lsm = NULL;
		return ap_fail(err, errlen, ret,
			    "BPF LSM programs cannot attach (%s): is 'bpf' in the kernel's lsm= list?",
			    strerror(-ret));
	}
	s->active = AP_ACTIVE_LSM;
	return 0;
}

int ap_session_attach_tracepoint(struct ap_session *s, char *err, size_t errlen)
{
	int ret = producer_bpf__attach(s->prod);

	if (ret) {
		ret = -errno;
		producer_bpf__detach(s->prod);
		/* libbpf reads each tracepoint's id from tracefs, which is root's
		 * alone by default: CAP_BPF and CAP_PERFMON do not open it */
		if (ret == -EACCES || ret == -EPERM)
			return ap_fail(err, errlen, ret,
				    "cannot attach the syscall tracepoints (%s): reading their ids in tracefs (/sys/kernel/tracing) was refused; run as root, mount tracefs with gid=GROUP,mode=0750 for a group of this user, or use --trigger none",
				    strerror(-ret));
		return ap_fail(err, errlen, ret,
			    "cannot attach the syscall tracepoints (%s): is tracefs available and CONFIG_FTRACE_SYSCALLS set?",
			    strerror(-ret));
	}
	s->active = AP_ACTIVE_TRACEPOINT;
	return 0;
}

/* Buckets of the process table's hash: a few thousand tasks fit with short chains. */
#define AP_PROCTAB_BUCKETS 8192

int ap_session_attach_proctab(struct ap_session *s, uint64_t *table, char *err, size_t errlen)
{
	struct ds_config cfg = { .capacity = AP_PROCTAB_BUCKETS };
	struct ds_ctx c;
	ap_u64 addr;
	int ret, r = DS_OK;

	if (s->proctab) {
		*table = s->root->proc.table;
		return 0;
	}
	ret = ap_session_ds(s, err, errlen);
	if (ret)
		return ret;
	if (ds_user_attach(s->sp, &c) != DS_OK)
		return ap_fail(err, errlen, EAGAIN, "no epoch record is free in the arena's space");
	addr = ds_create(s->sp, &c, DS_TYPE_hash, &cfg, "proc", &r);
	ds_user_detach(&c);
	if (!addr)
		return ap_fail(err, errlen, r == DS_NOMEM ? ENOMEM : EINVAL,
			    "cannot create the process table in the arena (%s): raise --arena-pages",
			    r == DS_NOMEM ? "out of pages" : "bad configuration");
	s->proctab = proctab_bpf__open();
	if (!s->proctab)
		return ap_fail(err, errlen, errno, "cannot open the process-table BPF object: %s",
			    strerror(errno));
	ret = bpf_map__reuse_fd(s->proctab->maps.arena, s->arena_fd);
	if (!ret)
		ret = proctab_bpf__load(s->proctab);
	if (!ret) {
		/* named before the programs can run */
		arena_atomic_store(&s->root->proc.table, addr, ARENA_RELEASE);
		ret = proctab_bpf__attach(s->proctab);
	}
	if (ret) {
		ret = -errno;
		proctab_bpf__destroy(s->proctab);
		s->proctab = NULL;
		return ap_fail(err, errlen, ret,
			    "cannot load or attach the scheduler's process tracepoints (%s)", strerror(-ret));
	}
	*table = addr;
	return 0;
}

int ap_session_attach_getppid(struct ap_session *s, char *err, size_t errlen)
{
	s->prod->links.bench_getppid = bpf_program__attach(s->prod->progs.bench_getppid);
	if (!s->prod->links.bench_getppid)
		return ap_fail(err, errlen, errno, "cannot attach the benchmark's sys_enter tracepoint: %s",
			    strerror(errno));
	s->active = AP_ACTIVE_GETPPID;
	return 0;
}

void ap_session_set_filter(struct ap_session *s, uint32_t pid, const char *comm,
			   uint32_t ignore_pid)
{
	struct ap_filter *f = &s->root->filter;

	f->pid = pid;
	f->ignore_pid = ignore_pid;
	memset(f->comm, 0, sizeof(f->comm));
	f->has_comm = comm && comm[0];
	if (f->has_comm)
		strncpy(f->comm, comm, sizeof(f->comm) - 1);
}

void ap_session_enable(struct ap_session *s, int on)
{
	arena_atomic_store(&s->root->enabled, on ? 1u : 0u, ARENA_SEQ_CST);
}

/*
 * Destroying a tracepoint link waits for RCU grace periods in the kernel (about 70 ms
 * each on the project's VM): one link after the other, the 16 syscall tracepoints took
 * over a second to stop, and a run whose sinks have all gone must end within one.
 * Grace periods waited for at the same time are shared, so each link is destroyed from
 * a thread of its own (or here, when a thread cannot be had).
 */
static void *destroy_link(void *link)
{
	bpf_link__destroy(link);
	return NULL;
}

static void detach_skeleton(struct bpf_object_skeleton *skel)
{
	pthread_t threads[64];
	int started = 0;

	for (int i = 0; i < skel->prog_cnt; i++) {
		struct bpf_prog_skeleton *p =
			(void *)((char *)skel->progs + (size_t)i * (size_t)skel->prog_skel_sz);
		struct bpf_link *link = p->link ? *p->link : NULL;

		if (!link)
			continue;
		*p->link = NULL;
		if (started < (int)(sizeof(threads) / sizeof(threads[0])) &&
		    !pthread_create(&threads[started], NULL, destroy_link, link))
			started++;
		else
			bpf_link__destroy(link);
	}
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
}

void ap_session_detach(struct ap_session *s)
{
	if (s->proctab) {
		proctab_bpf__destroy(s->proctab);
		s->proctab = NULL;
	}
	if (s->lsm) {
		lsm_bpf__destroy(s->lsm);
		s->lsm = NULL;
	}
	if (s->prod)
		detach_skeleton(s->prod->skeleton);
	s->active = AP_ACTIVE_NONE;
}

/* ---- pins: the arena and the burst program, for other processes ---- */

int ap_session_pin(struct ap_session *s, const char *dir, char *err, size_t errlen)
{
	char path[512];
	int ret;

	if (strlen(dir) >= sizeof(s->pin_dir))
		return ap_fail(err, errlen, ENAMETOOLONG, "pin directory name too long: %s", dir);
	/* the data-structure programs are pinned too, under the names a
	 * DsArena attaches by: wait for them first */
	ret = ap_session_ds(s, err, errlen);
	if (ret)
		return ret;
	if (mkdir(dir, 0700) && errno != EEXIST)
		return ap_fail(err, errlen, errno, "cannot create %s: %s", dir, strerror(errno));
	snprintf(s->pin_dir, sizeof(s->pin_dir), "%s", dir);
	s->pinned = 1;
	snprintf(path, sizeof(path), "%s/arena", dir);
	ret = bpf_map__pin(s->prod->maps.arena, path);
	if (!ret) {
		snprintf(path, sizeof(path), "%s/burst", dir);
		ret = bpf_program__pin(s->prod->progs.burst, path);
	}
#define PIN_DS(id, name)                                                       \
	if (!ret) {                                                            \
		snprintf(path, sizeof(path), "%s/ds_run_" #name, dir);         \
		ret = bpf_program__pin(s->ds->progs.ds_run_##name, path);      \
	}
	DS_REGISTRY(PIN_DS)
#undef PIN_DS
	if (!ret) {
		snprintf(path, sizeof(path), "%s/ds_trim", dir);
		ret = bpf_program__pin(s->ds->progs.ds_trim, path);
	}
	if (ret) {
		ret = -errno;
		ap_session_unpin(s);
		return ap_fail(err, errlen, ret, "cannot pin BPF objects under %s: %s", dir,
			    strerror(-ret));
	}
	return 0;
}

void ap_session_unpin(struct ap_session *s)
{
	char path[512];

	if (!s->pinned)
		return;
	snprintf(path, sizeof(path), "%s/arena", s->pin_dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/burst", s->pin_dir);
	unlink(path);
#define UNPIN_DS(id, name)                                                     \
	snprintf(path, sizeof(path), "%s/ds_run_" #name, s->pin_dir);          \
	unlink(path);
	DS_REGISTRY(UNPIN_DS)
#undef UNPIN_DS
	snprintf(path, sizeof(path), "%s/ds_trim", s->pin_dir);
	unlink(path);
	rmdir(s->pin_dir);
	s->pinned = 0;
}

void ap_session_close(struct ap_session *s)
{
	join_ds_loader(s);
	/* a bound DsArena checks this before it touches the arena again */
	s->share.alive = 0;
	ap_session_detach(s);
	ap_session_unpin(s);
	if (s->ds) {
		ds_ops_bpf__destroy(s->ds); /* a reused arena: left mapped */
		s->ds = NULL;
	}
	s->sp = NULL;
	if (s->bell) {
		ring_buffer__free(s->bell);
		s->bell = NULL;
	}
	if (s->prod) {
		producer_bpf__destroy(s->prod);
		s->prod = NULL;
	}
	if (s->mapped_here) {
		munmap((void *)ARENA_BASE, s->arena_pages * ARENA_PAGE_SIZE);
		s->mapped_here = 0;
	}
	if (s->arena_fd >= 0) {
		close(s->arena_fd);
		s->arena_fd = -1;
	}
	s->root = NULL;
	s->q = NULL;
}

/* Arena memory actually backed by pages, counted with mincore(). */
uint64_t ap_session_resident_bytes(struct ap_session *s)
{
	static unsigned char vec[1 << 20];
	uint64_t pages = s->arena_pages, n = 0, i;

	if (!s->root || pages > sizeof(vec))
		return 0;
	if (mincore((void *)ARENA_BASE, pages * ARENA_PAGE_SIZE, vec))
		return 0;
	for (i = 0; i < pages; i++)
		n += vec[i] & 1;
	return n * ARENA_PAGE_SIZE;
}

int ap_session_burst_fd(struct ap_session *s)
{
	return bpf_program__fd(s->prod->progs.burst);
}

int ap_run_burst(int prog_fd, uint64_t total, uint64_t per_call, uint64_t *published,
		 uint64_t *dropped, char *err, size_t errlen)
{
	if (per_call == 0 || per_call > AP_BURST_MAX_PER_CALL)
		per_call = AP_BURST_MAX_PER_CALL;
	while (total) {
		struct ap_burst_args args = { .count = total < per_call ? total : per_call };
		LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &args, .ctx_size_in = sizeof(args));
		int ret = bpf_prog_test_run_opts(prog_fd, &opts);

		if (ret || opts.retval != 0)
			return ap_fail(err, errlen, ret ? errno : EINVAL,
				    "running the burst program failed: %s",
				    ret ? strerror(errno) : "the arena root is not enabled");
		*published += args.published;
		*dropped += args.dropped;
		total -= args.count;
	}
	return 0;
}

/* ---- observation: read by the metrics endpoint, never on the event path ---- */

uint64_t ap_session_oldest_ts(struct ap_session *s)
{
	struct evq *q = s->q;
	struct ap_event *rec;
	uint64_t head, ts;

	if (!q)
		return 0;
	head = arena_atomic_load(&q->head, ARENA_ACQUIRE);
	rec = evq_peek(q, head);
	if (!rec)
		return 0;
	ts = arena_atomic_load(&rec->ts_ns, ARENA_RELAXED);
	/* A producer refills this slot only once head has moved past it, so an
	 * unchanged head after the read means ts belongs to the record peeked. */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	if (arena_atomic_load(&q->head, ARENA_RELAXED) != head)
		return 0;
	return ts;
}

int ap_session_prog_stats(struct ap_session *s, ap_prog_stat_fn fn, void *ctx)
{
	struct bpf_object *objs[2] = { s->prod ? s->prod->obj : NULL,
				       s->lsm ? s->lsm->obj : NULL };
	struct bpf_program *prog;
	size_t i;

	for (i = 0; i < sizeof(objs) / sizeof(objs[0]); i++) {
		if (!objs[i])
			continue;
		bpf_object__for_each_program(prog, objs[i]) {
			struct bpf_prog_info info;
			uint32_t len = sizeof(info);
			int fd = bpf_program__fd(prog), ret;

			if (fd < 0)
				continue;
			memset(&info, 0, sizeof(info));
			if (bpf_prog_get_info_by_fd(fd, &info, &len))
				continue;
			ret = fn(ctx, bpf_program__name(prog), info.id, info.run_time_ns,
				 info.run_cnt);
			if (ret)
				return ret;
		}
	}
	return 0;
}
