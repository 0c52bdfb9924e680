/* SPDX-License-Identifier: MIT */
/*
 * arena_alloc / arena_free: one heap in the arena for BPF programs (sleepable
 * or not) and for userspace threads and processes, all at once.
 *
 * The heap manages a page range [first_page, first_page + npages) that its
 * caller gives it; its state (struct arena_heap) lives in the arena too,
 * outside that range. Every managed page starts with a 48-byte header; small
 * objects are carved after it, each behind a 16-byte object header.
 *
 *   page:   | struct arena_page (48) | obj hdr | data ... | obj hdr | data ... |
 *   object: | tag: LIVE/DEAD magic << 32 | size | link (for retire lists) | data
 *
 * Small objects (up to ARENA_SMALL_MAX bytes). Each slot (a kernel CPU, a
 * user thread that claimed one, or the CPU of a user thread without one) has
 * a current page. Everything about a page
 * that allocation and freeing change is one 64-bit word, page->state:
 *
 *   bits  0..15  off    next free byte in the page
 *   bits 16..31  cnt    live objects carved from the page
 *   bit  59      RECORD the page lists pages given back to the kernel
 *   bit  60      LARGE  the page starts a multi-page object
 *   bit  61      FREE   the page is on a free stack (or a reserve pool)
 *   bit  62      ACTIVE objects may still be carved from the page
 *
 * and every transition is a compare-and-swap on it:
 *   carve    ACTIVE, off+need <= 4096:   off += need, cnt += 1
 *   full     ACTIVE, off+need  > 4096:   clear ACTIVE (and set FREE if cnt == 0)
 *   free     cnt -= 1; when that leaves cnt == 0 and ACTIVE clear: set FREE
 * so exactly one party sees the page become FREE and pushes it onto the free
 * stack: a page is handed out again only after its last object was freed, and
 * two carvers can never get the same bytes, whoever they are and however
 * they interleave. A slot's current-page pointer is only a hint: a task that
 * was preempted between reading it and carving works on whatever the page's
 * state says now, which is always consistent. Whoever replaces a slot's page
 * clears that page's ACTIVE bit, so no page stays carvable without a slot.
 *
 * Pages. The free-page stack and the per-slot reserve pools are Treiber
 * stacks whose top word carries a 32-bit tag next to the page number, so a
 * pop that raced with a pop and a push (ABA) fails its compare-and-swap.
 * Pages that were never used come from a bump counter; they must be backed
 * before use:
 *   - userspace: touching the page faults it in (the kernel's arena fault
 *     handler allocates it and marks it used for bpf_arena_alloc_pages too);
 *   - sleepable BPF: bpf_arena_alloc_pages at that exact address;
 *   - non-sleepable BPF (ARENA_NOSLEEP): never; it takes pages from the free
 *     stack, then from its slot's reserve pool (filled by arena_heap_refill
 *     from userspace or a sleepable program), and fails with NULL (NOMEM).
 * A page whose objects are all freed goes on the free stack and is reused
 * first, so a balanced alloc/free run stays within the pages it has
 * touched. Nobody else may call bpf_arena_alloc_pages with a NULL address
 * on this arena: the kernel would hand out pages of the heap's range.
 *
 * Giving pages back (arena_heap_trim: sleepable BPF, which calls
 * bpf_arena_free_pages; userspace cannot free arena pages). Hysteresis:
 * nothing happens while the free stack holds at most trim_high pages; above
 * that, a trim takes pages off the free stack down to trim_keep and gives
 * them back. A page is on the free stack only once its last object was
 * freed, and objects of lock-free structures are freed only by the epoch
 * reclamation, so no structure can still reach a page given back. What can
 * still reach it is the allocator itself: a task preempted in the middle of
 * a pop (it read the top page and is about to read its link) or holding a
 * slot's current-page hint. Those reads are made inside a heap section
 * (arena_heap_enter/exit: a count per slot, in one of two phases), and a
 * trim gives pages back only after a grace period:
 *   1. take the pages off the free stack (nobody can pop them any more);
 *   2. keep those that are some slot's current page (put them back);
 *   3. flip trim_phase; wait until no slot counts a section in the old one.
 * A task that enters after the flip can reach none of the pages taken. A
 * trim whose wait is not over leaves its pages in quarantine (still backed)
 * and the next trim finishes it. A slot owner's fast path (carving from its
 * own current page) needs no section: only the owner replaces that hint.
 * Pages given back are listed in record pages (one backed page listing up
 * to ARENA_REC_ENTRIES others) on the returned stack; an allocator that
 * finds the free stack empty takes a whole record, backs its pages again
 * (bpf_arena_alloc_pages, or the fault of the first touch in userspace),
 * keeps one and puts the others on the free stack: a page given back is
 * never handed out before the kernel has backed it again. Non-sleepable
 * programs cannot back pages and skip records, as they skip fresh pages.
 *
 * Large objects (more than ARENA_SMALL_MAX bytes) take a run of fresh,
 * contiguous pages (one page may come from the free stack); freeing one puts
 * each of its pages on the free stack. They are for long-lived tables (hash
 * buckets, ring slots).
 *
 * Either side may free what the other allocated: arena_free finds the page,
 * its heap and the object size from the headers. A second free of the same
 * object fails its compare-and-swap on the object tag and is counted in
 * bad_frees instead of corrupting the heap. An epoch drain, which holds the
 * objects it frees alone, checks the tag the same way and marks it with a
 * plain store (arena_free_mark).
 *
 * Statistics are per slot (summed when read), so that the hot path touches
 * only its own cache line: allocations, frees, bytes requested and freed,
 * failures; pages in use, populated, free, pooled, given back and taken
 * again are heap-wide.
 */
#ifndef ARENA_ALLOC_H
#define ARENA_ALLOC_H

#include "arena.h"
#include "atomics.h"
#include "shim.h"

/*
 * AddressSanitizer sees inside the heap in userspace builds compiled with
 * -fsanitize=address (never in BPF, and compiled out everywhere else):
 *   - a small page's bytes past what has been carved are poisoned when the
 *     page is put into use; carving an object unpoisons its header and its
 *     requested size, so the rounding to ARENA_OBJ_ALIGN stays poisoned and
 *     a write just past an object is reported;
 *   - freeing an object poisons its data (the header stays readable, so a
 *     double free is still refused and counted); allocating unpoisons it;
 *   - a large object's bytes past its size, to the end of its last page,
 *     are poisoned.
 * ASan keeps its shadow per process and poisons in 8-byte granules; objects
 * start 16-aligned, so no two objects share a granule, and a size that is
 * not a multiple of 8 leaves the granule it ends in partly addressable.
 * What another process or the kernel frees is not poisoned in this
 * process's shadow, and what they allocate in a page this process poisoned
 * earlier reads as poisoned here: an ASan build must be the only one
 * allocating from its heap (the userspace unit tests are).
 */
#if !ARENA_IS_BPF
# if defined(__SANITIZE_ADDRESS__)
#  define ARENA_ASAN 1
# elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#   define ARENA_ASAN 1
#  endif
# endif
#endif
#ifdef ARENA_ASAN
# include <sanitizer/asan_interface.h>
# define arena_asan_poison(addr, size) ASAN_POISON_MEMORY_REGION((void *)(addr), (size_t)(size))
# define arena_asan_unpoison(addr, size) ASAN_UNPOISON_MEMORY_REGION((void *)(addr), (size_t)(size))
/* 1 when any byte of [addr, addr + size) is poisoned */
# define arena_asan_poisoned(addr, size) (__asan_region_is_poisoned((void *)(addr), (size_t)(size)) != 0)
#else
# define arena_asan_poison(addr, size) ((void)(addr), (void)(size))
# define arena_asan_unpoison(addr, size) ((void)(addr), (void)(size))
# define arena_asan_poisoned(addr, size) 0
#endif

#define ARENA_HEAP_MAGIC 0x3170616568616e61ULL /* "anaheap1" */
#define ARENA_PAGE_MAGIC 0x50474150U
#define ARENA_OBJ_LIVE 0xA110CA7EU
#define ARENA_OBJ_DEAD 0xF4EEF4EEU
#define ARENA_POISON 0xDEADBEEFDEADBEEFULL
#define ARENA_CANARY 0xCA4A41CA4A41CA4AULL

/*
 * Slots: 0..31 kernel CPUs; 32..63 user threads without a slot of their
 * own, by CPU; 64..127 slots owned by one user thread each (claimed by
 * arena_heap_attach_thread, which ds_user_attach does). An owned slot's
 * counters have a single writer and are updated without atomic
 * read-modify-writes; carving is atomic everywhere, as any task may still
 * reach any page.
 */
#define ARENA_HEAP_SLOTS 128
#define ARENA_HEAP_KSLOTS 32
#define ARENA_HEAP_CPU_USLOTS 32
#define ARENA_HEAP_OWNED_FIRST (ARENA_HEAP_KSLOTS + ARENA_HEAP_CPU_USLOTS)
#define ARENA_PAGE_HDR 48
#define ARENA_OBJ_HDR 16
#define ARENA_OBJ_ALIGN 16
#define ARENA_SMALL_MAX (ARENA_PAGE_SIZE - ARENA_PAGE_HDR - ARENA_OBJ_HDR)
#define ARENA_LARGE_MAX_PAGES 4096 /* 16 MiB */
/* pages given back per record page: a record taken again backs this many
 * pages at once (256 KiB), and costs one backed page per 63 given back */
#define ARENA_REC_ENTRIES 63
/* default watermarks (pages on the free stack): trims start above
 * ARENA_TRIM_HIGH and stop at ARENA_TRIM_KEEP */
#define ARENA_TRIM_KEEP 256
#define ARENA_TRIM_HIGH 1024
/* grace-period checks a trim makes before it leaves its pages in quarantine */
#define ARENA_TRIM_GRACE_TRIES 64

/* arena_heap_alloc flags */
#define ARENA_NOSLEEP 0x1 /* non-sleepable BPF: never call bpf_arena_alloc_pages */
#define ARENA_PAGE_ALIGNED 0x2 /* whole pages; the object starts 64 bytes into its first
				* page, so it is cache-line aligned (structure heads) */

/* heap flags */
#define ARENA_HEAP_POISON 0x1 /* fill freed objects with ARENA_POISON and guard the word
			       * past each object with ARENA_CANARY (tests) */

#define ARENA_PS_OFF_MASK 0xffffULL
#define ARENA_PS_CNT_ONE (1ULL << 16)
#define ARENA_PS_CNT(s) (((s) >> 16) & 0xffffULL)
#define ARENA_PS_RECORD (1ULL << 59)
#define ARENA_PS_LARGE (1ULL << 60)
#define ARENA_PS_FREE (1ULL << 61)
#define ARENA_PS_ACTIVE (1ULL << 62)

#define ARENA_STACK_NO(top) ((top) & 0xffffffffULL)
#define ARENA_STACK_NEXT_TAG(top) ((((top) >> 32) + 1) << 32)

/*
 * A BPF object whose programs are all non-sleepable (tracepoints...) defines
 * ARENA_NOSLEEP_ONLY before including this: every allocation then behaves as
 * ARENA_NOSLEEP and the object contains no call to bpf_arena_alloc_pages at
 * all (the verifier checks kfunc calls per program, global functions
 * included, whatever the arguments).
 */

/* the BPF map whose pages the heap backs (bpf_arena_alloc_pages) */
#ifndef ARENA_HEAP_MAP
#define ARENA_HEAP_MAP arena
#endif

struct arena_page {
	ap_u64 state;  /* see above */
	ap_u64 next;   /* free-stack link: page number + 1, 0 ends the stack */
	ap_u64 heap;   /* address of the owning struct arena_heap */
	ap_u32 magic;  /* ARENA_PAGE_MAGIC */
	ap_u32 npages; /* pages of the large object that starts here, else 1 */
	ap_u64 uses;   /* times the page was put into use (diagnostics) */
	ap_u64 spare;
};

struct arena_obj {
	ap_u64 tag;  /* ARENA_OBJ_LIVE or ARENA_OBJ_DEAD << 32 | requested size */
	ap_u64 link; /* free for the object's owner: epoch.h chains retired objects here */
};

/* A page that lists pages given back to the kernel (state ARENA_PS_RECORD). */
struct arena_rec {
	struct arena_page hdr; /* next: link on the returned stack */
	ap_u64 n;
	ap_u64 pages[ARENA_REC_ENTRIES]; /* page numbers (from ARENA_BASE) */
};

struct arena_heap_slot {
	ap_u64 cur;        /* address of the current page, 0 for none */
	ap_u64 pool;       /* reserve pool for non-sleepable contexts (tagged stack top) */
	ap_u64 pool_pages; /* pages in the pool */
	ap_u64 allocs;
	ap_u64 frees;
	ap_u64 bytes_alloc;
	ap_u64 bytes_freed;
	ap_u64 fails;
	ap_u64 owner;    /* owned slots: tgid << 32 | tid of the owner, 0 when free */
	ap_u64 owner_ns; /* the owner's pid namespace (inode) */
	ap_u64 inside[2]; /* heap sections open on this slot, per trim phase */
	/* owned slots, userspace: small objects freed by the owner, kept for its
	 * next allocations of the same size (arena_cache_put / _take) */
	ap_u64 cache;       /* object header address, linked through the header's link */
	ap_u32 cache_n;     /* objects on it */
	ap_u32 cache_need;  /* their size with header, rounded (one size at a time) */
} __arena_cacheline_aligned;

struct arena_heap {
	ap_u64 magic;
	ap_u64 first_page; /* page number (from ARENA_BASE) of the first managed page */
	ap_u64 npages;
	ap_u64 flags;
	ap_u32 nr_kslots;   /* kernel slots in use: possible CPUs, at most ARENA_HEAP_KSLOTS */
	ap_u32 pool_target; /* pages arena_heap_refill keeps in each kernel slot's pool */
	/* pages of the range handed out by the bump counter (never-used tail) */
	ap_u64 fresh __arena_cacheline_aligned;
	ap_u64 free_stack; /* tagged stack top of free pages */
	ap_u64 free_pages;
	ap_u64 pages_in_use __arena_cacheline_aligned; /* current, partly used or large */
	ap_u64 pages_lost;  /* fresh pages the kernel could not back */
	ap_u64 large_allocs;
	ap_u64 bad_frees; /* double or foreign frees refused */
	ap_u64 overruns;  /* ARENA_HEAP_POISON: objects freed with their canary overwritten */
	/* giving pages back: read on every slow path, written by trims */
	ap_u64 trim_phase __arena_cacheline_aligned;
	ap_u64 returned; /* tagged stack top of record pages */
	ap_u32 trim_keep;
	ap_u32 trim_high;
	/* trims only (one at a time) */
	ap_u64 trim_lock __arena_cacheline_aligned;
	ap_u64 quar;       /* pages taken, waiting for their grace period (linked by next) */
	ap_u64 quar_n;
	ap_u64 quar_phase; /* the phase whose sections must end first */
	ap_u64 record_pages;  /* record pages on the returned stack */
	ap_u64 pages_returned; /* given back to the kernel, ever */
	ap_u64 pages_retaken;  /* of those, backed again and reused */
	ap_u64 trims;          /* trims that ran to the end */
	ap_u64 trim_waits;     /* trims that left pages in quarantine */
	struct arena_heap_slot slots[ARENA_HEAP_SLOTS];
};

struct arena_heap_stats {
	ap_u64 allocs;
	ap_u64 frees;
	ap_u64 bytes_in_use;
	ap_u64 pages_in_use;
	ap_u64 failures;
	ap_u64 pages_populated; /* pages of the range backed now */
	ap_u64 free_pages;
	ap_u64 pool_pages;
	ap_u64 pages_lost;
	ap_u64 bad_frees;
	ap_u64 large_allocs;
	ap_u64 overruns;
	ap_u64 pages_hwm;      /* pages of the range ever backed (the bump counter) */
	ap_u64 pages_returned; /* given back to the kernel, ever */
	ap_u64 pages_retaken;  /* of those, backed again */
	ap_u64 pages_quarantined; /* taken by a trim, waiting for its grace period */
	ap_u64 record_pages;
	ap_u64 trims;
	ap_u64 trim_waits;
};

static __always_inline struct arena_page __arena *arena_page_at(ap_u64 no)
{
	return ARENA_PTR(struct arena_page, ARENA_PAGE_ADDR(no));
}

static __always_inline struct arena_obj __arena *arena_obj_of(void __arena *p)
{
	return ARENA_PTR(struct arena_obj, ARENA_ADDR(p) - ARENA_OBJ_HDR);
}

#if !ARENA_IS_BPF
/*
 * Userspace cannot free pages of a real arena: only the kernel can
 * (bpf_arena_free_pages), and the first touch of a page given back faults
 * it in again. Tests that stand in an anonymous mapping for the arena set
 * these (src/arena_user.c holds them, NULL by default): give_back takes the
 * pages away (and may make a touch fault), take_back makes them usable
 * again. Each returns 0 or -1. Without give_back a userspace trim gives
 * nothing back.
 */
extern int (*arena_user_give_back)(ap_u64 addr, ap_u64 npages);
extern int (*arena_user_take_back)(ap_u64 addr, ap_u64 npages);

/* The calling thread's own slot, if it claimed one: one per thread, whichever
 * translation unit asks, so it is defined once, in src/arena_user.c. */
struct arena_thread_slot {
	ap_u64 heap; /* the heap the slot belongs to, 0 for none */
	ap_u32 slot;
	ap_u32 spare;
};
extern __thread struct arena_thread_slot arena_thread_slot;
#endif

/* The slot of the caller: its own (*owned = 1), else its CPU's. */
static __always_inline struct arena_heap_slot __arena *arena_heap_my_slot(struct arena_heap __arena *h,
									   int *owned)
{
#if ARENA_IS_BPF
	*owned = 0;
	return &h->slots[arena_cpu() & (ARENA_HEAP_KSLOTS - 1)];
#else
	if (arena_thread_slot.heap == ARENA_ADDR(h)) {
		*owned = 1;
		return &h->slots[arena_thread_slot.slot & (ARENA_HEAP_SLOTS - 1)];
	}
	*owned = 0;
	return &h->slots[ARENA_HEAP_KSLOTS + (arena_cpu() & (ARENA_HEAP_CPU_USLOTS - 1))];
#endif
}

/* Add to a slot counter: a plain update when the slot has one writer. */
static __always_inline void arena_stat_add(ap_u64 __arena *ctr, ap_u64 v, int owned)
{
#if !ARENA_IS_BPF
	if (owned) {
		arena_atomic_store(ctr, arena_atomic_load(ctr, ARENA_RELAXED) + v, ARENA_RELAXED);
		return;
	}
#endif
	(void)owned;
	arena_atomic_add(ctr, v, ARENA_RELAXED);
}

/* ---- page stacks (free stack, reserve pools) ---- */

static __always_inline int arena_pstack_push(ap_u64 __arena *top, struct arena_page __arena *pg)
{
	ap_u64 no = ARENA_PAGE_NO(pg) + 1;
	ap_u64 old = arena_atomic_load(top, ARENA_RELAXED);

	while (can_loop) {
		ap_u64 seen;

		arena_atomic_store(&pg->next, ARENA_STACK_NO(old), ARENA_RELAXED);
		/* release: the page header is written before the page is visible */
		seen = arena_atomic_cmpxchg(top, old, ARENA_STACK_NEXT_TAG(old) | no, ARENA_RELEASE);
		if (seen == old)
			return 1;
		old = seen;
	}
	return 0;
}

static __always_inline struct arena_page __arena *arena_pstack_pop(ap_u64 __arena *top)
{
	ap_u64 old = arena_atomic_load(top, ARENA_ACQUIRE);

	while (can_loop) {
		struct arena_page __arena *pg;
		ap_u64 no = ARENA_STACK_NO(old), next, seen;

		if (!no)
			return 0;
		pg = arena_page_at(no - 1);
		/* the page may have been popped meanwhile (the tag then makes the
		 * CAS fail), but it is still backed: pops run in heap sections,
		 * and a trim gives a page back only after they ended */
		next = arena_atomic_load(&pg->next, ARENA_RELAXED);
		seen = arena_atomic_cmpxchg(top, old, ARENA_STACK_NEXT_TAG(old) | next, ARENA_ACQ_REL);
		if (seen == old)
			return pg;
		old = seen;
	}
	return 0;
}

/* ---- heap sections: what a trim waits for before it gives pages back ---- */

/*
 * Open a section on slot: from here until arena_heap_exit, no page this
 * task may read is given back. Returns the phase to pass to exit (0 or 1),
 * or 2 when trims kept flipping the phase for the whole loop budget (BPF):
 * the caller then fails its allocation.
 */
static __always_inline ap_u32 arena_heap_enter(struct arena_heap __arena *h, struct arena_heap_slot __arena *slot)
{
	ap_u64 ph = arena_atomic_load(&h->trim_phase, ARENA_SEQ_CST);

	while (can_loop) {
		ap_u64 seen;
		ap_u32 i = (ap_u32)(ph & 1);

		/* a full barrier: the count is visible before the phase is read
		 * again and before any page is read */
		arena_atomic_add(&slot->inside[i], 1, ARENA_SEQ_CST);
		seen = arena_atomic_load(&h->trim_phase, ARENA_SEQ_CST);
		if (seen == ph)
			return i;
		/* a trim flipped the phase and may have read this count before
		 * it rose: count in the new phase instead */
		arena_atomic_sub(&slot->inside[i], 1, ARENA_RELEASE);
		ph = seen;
	}
	return 2;
}

static __always_inline void arena_heap_exit(struct arena_heap_slot __arena *slot, ap_u32 i)
{
	arena_atomic_sub(&slot->inside[i & 1], 1, ARENA_RELEASE);
}

/* ---- getting pages ---- */

/* Give a just-claimed fresh page its backing memory (BPF) or fault it in
 * (userspace: the header write does it). Returns 0 when the kernel could not
 * back it. */
static __always_inline int arena_page_back(struct arena_page __arena *pg, ap_u32 flags)
{
	(void)flags;
#if ARENA_IS_BPF && defined(ARENA_NOSLEEP_ONLY)
	return 0;
#elif ARENA_IS_BPF
	if (flags & ARENA_NOSLEEP)
		return 0;
	if (bpf_arena_alloc_pages(&ARENA_HEAP_MAP, (void *)ARENA_ADDR(pg), 1, -1, 0))
		return 1;
	/* Refused: either the page is already backed (a userspace read of it
	 * faulted it in) or the kernel is out of memory. A store to an unbacked
	 * arena page is dropped and a load reads 0: probe. */
	arena_store_once(&pg->spare, ARENA_HEAP_MAGIC);
	return arena_load_once(&pg->spare) == ARENA_HEAP_MAGIC;
#else
	if (arena_user_take_back && arena_user_take_back(ARENA_ADDR(pg), 1))
		return 0;
	arena_atomic_store(&pg->spare, 0, ARENA_RELAXED);
	return 1;
#endif
}

/* Claim n never-used contiguous pages of the range. */
static __always_inline struct arena_page __arena *
arena_heap_fresh(struct arena_heap __arena *h, ap_u32 n, ap_u32 flags)
{
	struct arena_page __arena *pg;
	ap_u64 idx, seen, i;

	if (flags & ARENA_NOSLEEP)
		return 0;
	idx = arena_atomic_load(&h->fresh, ARENA_RELAXED);
	while (can_loop) {
		if (idx + n > h->npages)
			return 0;
		seen = arena_atomic_cmpxchg(&h->fresh, idx, idx + n, ARENA_RELAXED);
		if (seen == idx)
			break;
		idx = seen;
	}
	if (idx + n > h->npages)
		return 0;
	pg = arena_page_at(h->first_page + idx);
	for (i = 0; i < n && can_loop; i++) {
		if (!arena_page_back(arena_page_at(h->first_page + idx + i), flags)) {
			arena_atomic_add(&h->pages_lost, n, ARENA_RELAXED);
			return 0;
		}
	}
	return pg;
}

/* A free page's header (it may have come back from the kernel zeroed). */
static __always_inline void arena_page_set_free(struct arena_heap __arena *h, struct arena_page __arena *pg)
{
	arena_atomic_store(&pg->heap, ARENA_ADDR(h), ARENA_RELAXED);
	arena_atomic_store(&pg->magic, ARENA_PAGE_MAGIC, ARENA_RELAXED);
	arena_atomic_store(&pg->npages, 1, ARENA_RELAXED);
	arena_atomic_store(&pg->state, ARENA_PS_FREE, ARENA_RELEASE);
}

/*
 * Take a record off the returned stack (sleepable/userspace, in a heap
 * section): back every page it lists again and put them on the free stack;
 * the record page itself is the caller's. NULL when nothing was given back.
 */
static __always_inline struct arena_page __arena *arena_heap_retake(struct arena_heap __arena *h, ap_u32 flags)
{
#if ARENA_IS_BPF && defined(ARENA_NOSLEEP_ONLY)
	(void)h, (void)flags;
	return 0;
#else
	struct arena_rec __arena *rec;
	ap_u64 n, i;

	if (flags & ARENA_NOSLEEP)
		return 0;
	rec = (struct arena_rec __arena *)arena_pstack_pop(&h->returned);
	if (!rec)
		return 0;
	arena_atomic_dec(&h->record_pages, ARENA_RELAXED);
	n = arena_atomic_load(&rec->n, ARENA_RELAXED);
	if (n > ARENA_REC_ENTRIES)
		n = ARENA_REC_ENTRIES;
	for (i = arena_opaque(0); i < n && can_loop; i++) {
		struct arena_page __arena *pg = arena_page_at(arena_atomic_load(&rec->pages[i], ARENA_RELAXED));

		if (!arena_page_back(pg, flags)) {
			arena_atomic_inc(&h->pages_lost, ARENA_RELAXED);
			continue;
		}
		arena_page_set_free(h, pg);
		arena_atomic_inc(&h->free_pages, ARENA_RELAXED);
		if (!arena_pstack_push(&h->free_stack, pg))
			arena_atomic_inc(&h->pages_lost, ARENA_RELAXED);
	}
	arena_atomic_add(&h->pages_retaken, n, ARENA_RELAXED);
	return &rec->hdr;
#endif
}

/* A page for the slot's next current page: the free stack, then pages
 * given back earlier and fresh pages (sleepable/userspace), then the slot's
 * reserve pool. Call it in a heap section. */
static __always_inline struct arena_page __arena *
arena_heap_take_page(struct arena_heap __arena *h, struct arena_heap_slot __arena *slot, ap_u32 flags)
{
	struct arena_page __arena *pg = arena_pstack_pop(&h->free_stack);

	if (pg) {
		arena_atomic_dec(&h->free_pages, ARENA_RELAXED);
		return pg;
	}
	pg = arena_heap_retake(h, flags);
	if (pg)
		return pg;
	pg = arena_heap_fresh(h, 1, flags);
	if (pg)
		return pg;
	pg = arena_pstack_pop(&slot->pool);
	if (pg)
		arena_atomic_dec(&slot->pool_pages, ARENA_RELAXED);
	return pg;
}

/* Put a page whose state just became FREE on the free stack. */
static __always_inline void arena_heap_release_page(struct arena_heap __arena *h,
						    struct arena_page __arena *pg)
{
	arena_atomic_dec(&h->pages_in_use, ARENA_RELAXED);
	arena_atomic_inc(&h->free_pages, ARENA_RELAXED);
	if (!arena_pstack_push(&h->free_stack, pg))
		arena_atomic_inc(&h->pages_lost, ARENA_RELAXED);
}

static __always_inline void arena_page_start(struct arena_heap __arena *h, struct arena_page __arena *pg,
					     ap_u64 state, ap_u32 npages)
{
	arena_atomic_store(&pg->heap, ARENA_ADDR(h), ARENA_RELAXED);
	arena_atomic_store(&pg->magic, ARENA_PAGE_MAGIC, ARENA_RELAXED);
	arena_atomic_store(&pg->npages, npages, ARENA_RELAXED);
	arena_atomic_add(&pg->uses, 1, ARENA_RELAXED);
	/* ASan: nothing past the header is addressable until it is carved
	 * (before the state change: carvers unpoison only after it) */
	arena_asan_poison(ARENA_ADDR(pg) + ARENA_PAGE_HDR, (ap_u64)npages * ARENA_PAGE_SIZE - ARENA_PAGE_HDR);
	/* full barrier: the header is complete before the page can be carved */
	arena_atomic_exchange(&pg->state, state, ARENA_SEQ_CST);
	arena_atomic_add(&h->pages_in_use, npages, ARENA_RELAXED);
}

/* Clear ACTIVE: nothing more is carved from the page. If it holds no object
 * any more, it is free now. */
static __always_inline void arena_page_retire(struct arena_heap __arena *h, struct arena_page __arena *pg)
{
	ap_u64 s = arena_atomic_load(&pg->state, ARENA_ACQUIRE);

	while (can_loop) {
		ap_u64 ns, seen;

		if (!(s & ARENA_PS_ACTIVE))
			return;
		ns = s & ~ARENA_PS_ACTIVE;
		if (ARENA_PS_CNT(ns) == 0)
			ns |= ARENA_PS_FREE;
		seen = arena_atomic_cmpxchg(&pg->state, s, ns, ARENA_ACQ_REL);
		if (seen == s) {
			if (ns & ARENA_PS_FREE)
				arena_heap_release_page(h, pg);
			return;
		}
		s = seen;
	}
}

/* Carve need bytes from a page. Returns the offset, or 0 when the page is no
 * longer active (or just filled up and was retired by this call). */
static __always_inline ap_u64 arena_page_carve(struct arena_heap __arena *h, struct arena_page __arena *pg,
					       ap_u64 need)
{
	ap_u64 s = arena_atomic_load(&pg->state, ARENA_ACQUIRE);

	while (can_loop) {
		ap_u64 off, seen;

		if (!(s & ARENA_PS_ACTIVE))
			return 0;
		off = s & ARENA_PS_OFF_MASK;
		if (off + need > ARENA_PAGE_SIZE) {
			arena_page_retire(h, pg);
			return 0;
		}
		seen = arena_atomic_cmpxchg(&pg->state, s, s + need + ARENA_PS_CNT_ONE, ARENA_ACQ_REL);
		if (seen == s)
			return off;
		s = seen;
	}
	return 0;
}

#if !ARENA_IS_BPF
/*
 * The owner's cache of freed objects (userspace, owned slots). Freeing an
 * object still checks it and marks it dead (arena_free_mark: what refuses a
 * double free), but a small object the owner of a slot frees goes onto its
 * slot's cache instead of back to its page: the page keeps counting it, and
 * the owner's next allocation of that size takes it back with plain loads
 * and stores (only the owner touches its cache). That saves the two
 * compare-and-swaps on the page state that a carve and a give-back cost.
 * What it costs: a page stays in use while one of its objects is cached.
 * So the cache holds at most ARENA_CACHE_MAX objects of at most
 * ARENA_CACHE_NEED_MAX bytes each (nodes, not tables), of one size at a
 * time; arena_heap_detach_thread gives every cached object back to its
 * page. A thread that dies attached leaves its cache to the slot: the next
 * thread that claims the slot (attach takes over a dead owner's slot)
 * allocates from it. An owner killed in the middle of a cache operation
 * loses at most the one object it was moving (its page stays in use).
 */
#define ARENA_CACHE_MAX 64
#define ARENA_CACHE_NEED_MAX 256

/* An object header address of need bytes from the cache, or 0. */
static __always_inline ap_u64 arena_cache_take(struct arena_heap_slot *slot, ap_u64 need)
{
	ap_u64 o = slot->cache;

	if (!o || slot->cache_need != need)
		return 0;
	slot->cache = ((struct arena_obj *)o)->link;
	slot->cache_n--;
	return o;
}

/* Keep a marked (dead) small object of the caller's own heap slot; 1 when
 * it was kept, 0 when it must go back to its page. */
static __always_inline int arena_cache_put(struct arena_heap *h, ap_u64 obj, ap_u64 size)
{
	ap_u64 need = (size + ARENA_OBJ_HDR + ARENA_OBJ_ALIGN - 1) & ~(ARENA_OBJ_ALIGN - 1);
	struct arena_heap_slot *slot;

	if (arena_thread_slot.heap != ARENA_ADDR(h) || need > ARENA_CACHE_NEED_MAX)
		return 0;
	slot = &h->slots[arena_thread_slot.slot & (ARENA_HEAP_SLOTS - 1)];
	if (slot->cache ? slot->cache_need != need || slot->cache_n >= ARENA_CACHE_MAX : 0)
		return 0;
	if (!slot->cache) {
		slot->cache_need = (ap_u32)need;
		slot->cache_n = 0;
	}
	((struct arena_obj *)obj)->link = slot->cache;
	slot->cache = obj;
	slot->cache_n++;
	return 1;
}
#endif

/*
 * The canary: in a heap with ARENA_HEAP_POISON, the word after an object's
 * requested size (rounded up to 8) holds ARENA_CANARY while the object is
 * live, where the object's span has room for it (a small object's rounding
 * to ARENA_OBJ_ALIGN; a large object's last page). arena_free counts an
 * object whose canary was overwritten (overruns), so that builds without
 * ASan see a write just past an object too; tests may also check the
 * canaries of live objects (a bounded structure's slot array lives as long
 * as its instance). ASan builds leave it out: those bytes are poisoned, and
 * ASan reports the write itself. Returns the canary's address, or 0.
 */
static __always_inline ap_u64 arena_canary_addr(ap_u64 obj, ap_u64 size, ap_u64 span)
{
#ifdef ARENA_ASAN
	(void)obj, (void)size, (void)span;
	return 0;
#else
	ap_u64 w = obj + ARENA_OBJ_HDR + ((size + 7) & ~7ULL);

	return w + 8 <= obj + span ? w : 0;
#endif
}

/* The span an object's canary may use: its slot (small) or its pages (large). */
static __always_inline ap_u64 arena_obj_span(struct arena_page __arena *pg, ap_u64 obj, ap_u64 size, ap_u64 state)
{
	if (state & ARENA_PS_LARGE)
		return ARENA_ADDR(pg) + ((ap_u64)pg->npages << ARENA_PAGE_SHIFT) - obj;
	return (size + ARENA_OBJ_HDR + ARENA_OBJ_ALIGN - 1) & ~(ARENA_OBJ_ALIGN - 1);
}

static __always_inline void __arena *arena_obj_start(struct arena_heap __arena *h,
						     struct arena_heap_slot __arena *slot, int owned, ap_u64 at,
						     ap_u64 size, ap_u64 span)
{
	struct arena_obj __arena *o = ARENA_PTR(struct arena_obj, at);

	arena_asan_unpoison(at, ARENA_OBJ_HDR + size);
	if (h->flags & ARENA_HEAP_POISON) {
		ap_u64 w = arena_canary_addr(at, size, span);

		if (w)
			arena_atomic_store(ARENA_PTR(ap_u64, w), ARENA_CANARY, ARENA_RELAXED);
	}
	arena_atomic_store(&o->link, 0, ARENA_RELAXED);
	arena_atomic_store(&o->tag, ((ap_u64)ARENA_OBJ_LIVE << 32) | size, ARENA_RELAXED);
	arena_stat_add(&slot->allocs, 1, owned);
	arena_stat_add(&slot->bytes_alloc, size, owned);
	return ARENA_PTR(void, at + ARENA_OBJ_HDR);
}

static __always_inline void __arena *arena_heap_alloc_large(struct arena_heap __arena *h,
							    struct arena_heap_slot __arena *slot, int owned,
							    ap_u64 size, ap_u32 flags)
{
	ap_u64 n = (size + ARENA_PAGE_HDR + ARENA_OBJ_HDR + ARENA_PAGE_SIZE - 1) >> ARENA_PAGE_SHIFT;
	struct arena_page __arena *pg;

	if (n > ARENA_LARGE_MAX_PAGES) {
		arena_stat_add(&slot->fails, 1, owned);
		return 0;
	}
	if (n == 1)
		pg = arena_heap_take_page(h, slot, flags);
	else
		pg = arena_heap_fresh(h, (ap_u32)n, flags);
	if (!pg) {
		arena_stat_add(&slot->fails, 1, owned);
		return 0;
	}
	arena_page_start(h, pg, ARENA_PS_LARGE | ARENA_PS_CNT_ONE, (ap_u32)n);
	arena_atomic_inc(&h->large_allocs, ARENA_RELAXED);
	return arena_obj_start(h, slot, owned, ARENA_ADDR(pg) + ARENA_PAGE_HDR, size,
			       (n << ARENA_PAGE_SHIFT) - ARENA_PAGE_HDR);
}

#if !ARENA_IS_BPF
static inline void arena_heap_cache_flush(struct arena_heap *h);
#endif

/*
 * Allocate size bytes (16-byte aligned, not zeroed). flags: ARENA_NOSLEEP in
 * non-sleepable BPF programs. Returns NULL when the heap is exhausted (or,
 * with ARENA_NOSLEEP, when neither the free stack nor the slot's pool has a
 * page); the failure is counted.
 */
static __always_inline void __arena *arena_heap_alloc_body(struct arena_heap __arena *h, ap_u64 size,
							   ap_u32 flags)
{
	int owned;
	struct arena_heap_slot __arena *slot = arena_heap_my_slot(h, &owned);
	struct arena_page __arena *pg;
	void __arena *obj;
	ap_u64 need, cur, seen, off;
	ap_u32 sec;

	if (!size)
		size = 1;
	if (size > ARENA_SMALL_MAX || (flags & ARENA_PAGE_ALIGNED)) {
		sec = arena_heap_enter(h, slot);
		if (sec > 1) {
			arena_stat_add(&slot->fails, 1, owned);
			return 0;
		}
		obj = arena_heap_alloc_large(h, slot, owned, size, flags);
		arena_heap_exit(slot, sec);
		return obj;
	}
	need = (size + ARENA_OBJ_HDR + ARENA_OBJ_ALIGN - 1) & ~(ARENA_OBJ_ALIGN - 1);

	if (owned) {
#if !ARENA_IS_BPF
		cur = arena_cache_take(slot, need);
		if (cur)
			return arena_obj_start(h, slot, owned, cur, size, need);
#endif
		/* the fast path needs no section: only this thread replaces its
		 * slot's current page, and a trim keeps any current page */
		cur = arena_atomic_load(&slot->cur, ARENA_ACQUIRE);
		if (cur) {
			off = arena_page_carve(h, ARENA_PTR(struct arena_page, cur), need);
			if (off)
				return arena_obj_start(h, slot, owned, cur + off, size, need);
		}
		sec = arena_heap_enter(h, slot);
	} else {
		/* a shared slot's hint may be replaced by another task at any
		 * time: read it only inside the section */
		sec = arena_heap_enter(h, slot);
		cur = arena_atomic_load(&slot->cur, ARENA_ACQUIRE);
		if (cur && sec <= 1) {
			off = arena_page_carve(h, ARENA_PTR(struct arena_page, cur), need);
			if (off) {
				obj = arena_obj_start(h, slot, owned, cur + off, size, need);
				arena_heap_exit(slot, sec);
				return obj;
			}
		}
	}
	if (sec > 1) {
		arena_stat_add(&slot->fails, 1, owned);
		return 0;
	}
	pg = arena_heap_take_page(h, slot, flags);
#if !ARENA_IS_BPF
	if (!pg && owned && slot->cache) {
		/* the pages the cache keeps in use may be what is missing */
		arena_heap_cache_flush(h);
		pg = arena_heap_take_page(h, slot, flags);
	}
#endif
	if (!pg) {
		arena_heap_exit(slot, sec);
		arena_stat_add(&slot->fails, 1, owned);
		return 0;
	}
	/* the first object is ours before anyone else can see the page */
	arena_page_start(h, pg, ARENA_PS_ACTIVE | ARENA_PS_CNT_ONE | (ARENA_PAGE_HDR + need), 1);
	seen = arena_atomic_cmpxchg(&slot->cur, cur, ARENA_ADDR(pg), ARENA_ACQ_REL);
	if (seen != cur)
		/* another task installed a page meanwhile: keep our object, retire ours */
		arena_page_retire(h, pg);
	else if (cur && cur != ARENA_ADDR(pg))
		/* we displaced the old page: it must not stay carvable without a
		 * slot (unless it is the very page we just took off the free
		 * stack: a slot may still point at its page after that page
		 * was retired, freed and handed out again) */
		arena_page_retire(h, ARENA_PTR(struct arena_page, cur));
	obj = arena_obj_start(h, slot, owned, ARENA_ADDR(pg) + ARENA_PAGE_HDR, size, need);
	arena_heap_exit(slot, sec);
	return obj;
}

ARENA_SUBPROG ap_u64 arena_heap_alloc_subprog(ap_u64 heap, ap_u64 size, ap_u32 flags)
{
	return ARENA_ADDR(arena_heap_alloc_body(ARENA_PTR(struct arena_heap, heap), size, flags));
}

static __always_inline void __arena *arena_heap_alloc(struct arena_heap __arena *h, ap_u64 size, ap_u32 flags)
{
#if ARENA_IS_BPF
# ifdef ARENA_NOSLEEP_ONLY
	flags |= ARENA_NOSLEEP;
# endif
	return ARENA_PTR(void, arena_heap_alloc_subprog(ARENA_ADDR(h), size, flags));
#else
	return arena_heap_alloc_body(h, size, flags);
#endif
}

static __always_inline void arena_poison(void __arena *p, ap_u64 size)
{
	ap_u64 __arena *w = ARENA_PTR(ap_u64, ARENA_ADDR(p));
	ap_u64 i, n = (size + 7) / 8;

	for (i = 0; i < n && can_loop; i++)
		arena_atomic_store(&w[i], ARENA_POISON, ARENA_RELAXED);
}

static __always_inline void arena_heap_free_large(struct arena_heap __arena *h, struct arena_page __arena *pg)
{
	ap_u32 n = pg->npages, i;

	arena_atomic_sub(&h->pages_in_use, n, ARENA_RELAXED);
	arena_atomic_add(&h->free_pages, n, ARENA_RELAXED);
	for (i = 0; i < n && can_loop; i++) {
		struct arena_page __arena *p = arena_page_at(ARENA_PAGE_NO(pg) + i);

		/* the headers of the pages after the first were object data */
		arena_asan_unpoison(ARENA_ADDR(p), ARENA_PAGE_HDR);
		arena_atomic_store(&p->heap, ARENA_ADDR(h), ARENA_RELAXED);
		arena_atomic_store(&p->magic, ARENA_PAGE_MAGIC, ARENA_RELAXED);
		arena_atomic_store(&p->npages, 1, ARENA_RELAXED);
		arena_atomic_store(&p->state, ARENA_PS_FREE, ARENA_RELEASE);
		if (!arena_pstack_push(&h->free_stack, p))
			arena_atomic_inc(&h->pages_lost, ARENA_RELAXED);
	}
}

/*
 * A free in three steps, so that a run of objects of one page can give its
 * count back at once (ebr_drain_record):
 *   arena_free_mark   checks that p is a live object and marks it dead;
 *   arena_page_put    takes n marked objects off their page's count;
 *   arena_free_count  adds them to the caller's slot statistics.
 */

/*
 * 0 with the object's page, heap, size and the page state read after the
 * mark; -1 for a pointer that is not a live object (double free, foreign
 * pointer): refused and counted, nothing is changed.
 *
 * sole: the caller holds the object in custody that no other party can
 * share, so nobody else marks it between the check and the mark, and the
 * mark is a plain store after the check instead of a compare-and-swap
 * (userspace; a constant at every call). The only such caller is an epoch
 * drain (epoch.h), for the objects of the limbo list it took with one
 * exchange: each was put there by the one retire of the thread that
 * unlinked it, and drains never overlap (a drainer, inside its section in
 * epoch G, keeps the epoch below G + 2, which the next drain needs). A
 * second free of such an object is still refused when it comes after the
 * mark (the tag reads dead) or before it (the check fails). What is left is
 * a free racing the drain itself; it is no longer refused, but it was never
 * survivable: the object's link word is the limbo list, and a free in the
 * middle of the list (which puts the object on a cache, or lets it be
 * carved again) already breaks the list the drain is walking.
 */
static __always_inline int arena_free_mark(void __arena *p, struct arena_page __arena **pgp,
					   struct arena_heap __arena **hp, ap_u64 *sizep, ap_u64 *sp, int sole)
{
	ap_u64 a = ARENA_ADDR(p), tag, size, s;
	struct arena_obj __arena *o;
	struct arena_page __arena *pg;
	struct arena_heap __arena *h;

	if ((a & (ARENA_OBJ_ALIGN - 1)) || a < ARENA_BASE + ARENA_PAGE_SIZE)
		return -1;
	o = arena_obj_of(p);
	pg = ARENA_PTR(struct arena_page, ARENA_PAGE_OF(ARENA_ADDR(o)));
	if (pg->magic != ARENA_PAGE_MAGIC)
		return -1;
	h = ARENA_PTR(struct arena_heap, pg->heap);
	if (!h || h->magic != ARENA_HEAP_MAGIC)
		return -1;
	if (arena_asan_poisoned(ARENA_ADDR(o), ARENA_OBJ_HDR)) {
		/* ASan: not an object header (inside freed data, a page tail) */
		arena_atomic_inc(&h->bad_frees, ARENA_RELAXED);
		return -1;
	}
	tag = arena_atomic_load(&o->tag, ARENA_ACQUIRE);
	if ((tag >> 32) != ARENA_OBJ_LIVE) {
		arena_atomic_inc(&h->bad_frees, ARENA_RELAXED);
		return -1;
	}
#if !ARENA_IS_BPF
	if (sole)
		arena_atomic_store(&o->tag, ((ap_u64)ARENA_OBJ_DEAD << 32) | (tag & 0xffffffffULL), ARENA_RELAXED);
	else
#endif
	if (arena_atomic_cmpxchg(&o->tag, tag, ((ap_u64)ARENA_OBJ_DEAD << 32) | (tag & 0xffffffffULL),
				 ARENA_ACQ_REL) != tag) {
		arena_atomic_inc(&h->bad_frees, ARENA_RELAXED);
		return -1;
	}
	(void)sole;
	size = tag & 0xffffffffULL;
	s = arena_atomic_load(&pg->state, ARENA_ACQUIRE);
	if (h->flags & ARENA_HEAP_POISON) {
		ap_u64 w = arena_canary_addr(ARENA_ADDR(o), size, arena_obj_span(pg, ARENA_ADDR(o), size, s));

		if (w && arena_atomic_load(ARENA_PTR(ap_u64, w), ARENA_RELAXED) != ARENA_CANARY)
			arena_atomic_inc(&h->overruns, ARENA_RELAXED);
		arena_poison(p, size);
	}
	/* before the page's count drops: from then on the page may be reused */
	arena_asan_poison(a, size);
	*pgp = pg;
	*hp = h;
	*sizep = size;
	*sp = s;
	return 0;
}

/* n marked small objects of pg are gone (s: its state, as last read); the
 * page is free once its count is zero and it is no longer a slot's current
 * page. 0, or -1 when the count holds fewer (counted as a bad free). */
static __always_inline int arena_page_put(struct arena_heap __arena *h, struct arena_page __arena *pg, ap_u64 s,
					  ap_u64 n)
{
	while (can_loop) {
		ap_u64 ns, seen;

		if (ARENA_PS_CNT(s) < n) {
			arena_atomic_inc(&h->bad_frees, ARENA_RELAXED);
			return -1;
		}
		ns = s - n * ARENA_PS_CNT_ONE;
		if (ARENA_PS_CNT(s) == n && !(s & ARENA_PS_ACTIVE))
			ns |= ARENA_PS_FREE;
		seen = arena_atomic_cmpxchg(&pg->state, s, ns, ARENA_ACQ_REL);
		if (seen == s) {
			if (ns & ARENA_PS_FREE)
				arena_heap_release_page(h, pg);
			return 0;
		}
		s = seen;
	}
	return 0;
}

static __always_inline void arena_free_count(struct arena_heap __arena *h, ap_u64 n, ap_u64 bytes)
{
	int owned;
	struct arena_heap_slot __arena *slot = arena_heap_my_slot(h, &owned);

	arena_stat_add(&slot->frees, n, owned);
	arena_stat_add(&slot->bytes_freed, bytes, owned);
}

/*
 * Free an object from any heap, allocated by either side. Returns 0, or -1
 * for a pointer that is not a live object (double free, foreign pointer):
 * refused and counted, nothing is changed.
 */
static __always_inline int arena_free_body(void __arena *p)
{
	struct arena_page __arena *pg;
	struct arena_heap __arena *h;
	ap_u64 size, s;

	if (!ARENA_ADDR(p))
		return 0;
	if (arena_free_mark(p, &pg, &h, &size, &s, 0))
		return -1;
	if (s & ARENA_PS_LARGE)
		arena_heap_free_large(h, pg);
#if !ARENA_IS_BPF
	else if (arena_cache_put(h, ARENA_ADDR(p) - ARENA_OBJ_HDR, size))
		;
#endif
	else if (arena_page_put(h, pg, s, 1))
		return -1;
	arena_free_count(h, 1, size);
	return 0;
}

ARENA_SUBPROG int arena_free_subprog(ap_u64 p)
{
	return arena_free_body(ARENA_PTR(void, p));
}

static __always_inline int arena_free(void __arena *p)
{
#if ARENA_IS_BPF
	return arena_free_subprog(ARENA_ADDR(p));
#else
	return arena_free_body(p);
#endif
}


#if !ARENA_IS_BPF
/* Give every object of the caller's slot cache back to its page: before the
 * slot is given up, when pages run out, and when a caller waits for what it
 * retired to be freed (ebr_synchronize). */
static inline void arena_heap_cache_flush(struct arena_heap *h)
{
	struct arena_heap_slot *slot;
	ap_u64 o;

	if (arena_thread_slot.heap != ARENA_ADDR(h))
		return;
	slot = &h->slots[arena_thread_slot.slot & (ARENA_HEAP_SLOTS - 1)];
	while ((o = slot->cache)) {
		struct arena_page *pg = ARENA_PTR(struct arena_page, ARENA_PAGE_OF(o));

		slot->cache = ((struct arena_obj *)o)->link;
		arena_page_put(h, pg, arena_atomic_load(&pg->state, ARENA_ACQUIRE), 1);
	}
	slot->cache_n = 0;
}
#endif

/* The size that was asked for when p was allocated (0 if p is not live). */
static __always_inline ap_u64 arena_obj_size(void __arena *p)
{
	ap_u64 tag;

	if (arena_asan_poisoned(ARENA_ADDR(p) - ARENA_OBJ_HDR, ARENA_OBJ_HDR))
		return 0;
	tag = arena_atomic_load(&arena_obj_of(p)->tag, ARENA_RELAXED);

	return (tag >> 32) == ARENA_OBJ_LIVE ? (tag & 0xffffffffULL) : 0;
}

/*
 * Fill the reserve pool of every kernel slot up to pool_target pages, from
 * the free stack or fresh pages. Userspace or sleepable BPF only. Returns 0,
 * or -1 when the heap ran out of pages.
 */
static __always_inline int arena_heap_refill(struct arena_heap __arena *h, ap_u32 flags)
{
	ap_u32 i, n = h->nr_kslots, sec;
	int owned, ret = 0;
	struct arena_heap_slot __arena *me = arena_heap_my_slot(h, &owned);

	if (flags & ARENA_NOSLEEP)
		return -1;
	sec = arena_heap_enter(h, me);
	if (sec > 1)
		return -1;
	for (i = 0; i < n && can_loop; i++) {
		struct arena_heap_slot __arena *slot = &h->slots[i & (ARENA_HEAP_KSLOTS - 1)];

		while (arena_atomic_load(&slot->pool_pages, ARENA_RELAXED) < h->pool_target && can_loop) {
			struct arena_page __arena *pg = arena_pstack_pop(&h->free_stack);

			if (pg)
				arena_atomic_dec(&h->free_pages, ARENA_RELAXED);
			if (!pg)
				pg = arena_heap_retake(h, flags);
			if (!pg)
				pg = arena_heap_fresh(h, 1, flags);
			if (!pg) {
				ret = -1;
				break;
			}
			arena_page_set_free(h, pg);
			arena_atomic_inc(&slot->pool_pages, ARENA_RELAXED);
			if (!arena_pstack_push(&slot->pool, pg))
				arena_atomic_inc(&h->pages_lost, ARENA_RELAXED);
		}
		if (ret)
			break;
	}
	arena_heap_exit(me, sec);
	(void)owned;
	return ret;
}

/* ---- giving pages back ---- */

#if !ARENA_IS_BPF || !defined(ARENA_NOSLEEP_ONLY)
/* Give one page back to the kernel. Returns 1, or 0 when it stays backed. */
static __always_inline int arena_page_give_back(struct arena_page __arena *pg)
{
#if ARENA_IS_BPF
	bpf_arena_free_pages(&ARENA_HEAP_MAP, (void *)ARENA_ADDR(pg), 1);
	return 1;
#else
	return arena_user_give_back && arena_user_give_back(ARENA_ADDR(pg), 1) == 0;
#endif
}

/* 1 when addr is some slot's current-page hint. */
static __always_inline int arena_heap_is_hint(struct arena_heap __arena *h, ap_u64 addr)
{
	ap_u32 i;

	for (i = arena_opaque(0); i < ARENA_HEAP_SLOTS && can_loop; i++)
		if (arena_atomic_load(&h->slots[i & (ARENA_HEAP_SLOTS - 1)].cur, ARENA_SEQ_CST) == addr)
			return 1;
	return 0;
}

/* 1 once no slot counts a section in phase ph (checked a few times). */
static __always_inline int arena_heap_grace_over(struct arena_heap __arena *h, ap_u64 ph)
{
	ap_u32 t, i;

	for (t = arena_opaque(0); t < ARENA_TRIM_GRACE_TRIES && can_loop; t++) {
		ap_u64 open = 0;

		for (i = arena_opaque(0); i < ARENA_HEAP_SLOTS && can_loop; i++)
			open |= arena_atomic_load(&h->slots[i & (ARENA_HEAP_SLOTS - 1)].inside[ph & 1],
						  ARENA_SEQ_CST);
		if (!open)
			return 1;
		arena_cpu_relax();
	}
	return 0;
}

/* Put a page taken by a trim back on the free stack. */
static __always_inline void arena_heap_keep_page(struct arena_heap __arena *h, struct arena_page __arena *pg)
{
	arena_atomic_inc(&h->free_pages, ARENA_RELAXED);
	if (!arena_pstack_push(&h->free_stack, pg))
		arena_atomic_inc(&h->pages_lost, ARENA_RELAXED);
}

/*
 * The quarantine's grace period is over: give its pages back, listing them
 * in records made of some of its pages (the first page of every run of
 * ARENA_REC_ENTRIES + 1 stays backed and lists the others). Returns the
 * pages given back.
 */
static __always_inline ap_u64 arena_heap_give_back(struct arena_heap __arena *h)
{
	ap_u64 list = arena_atomic_load(&h->quar, ARENA_RELAXED), given = arena_opaque(0);

	arena_atomic_store(&h->quar, 0, ARENA_RELAXED);
	arena_atomic_store(&h->quar_n, 0, ARENA_RELAXED);
	while (list && can_loop) {
		struct arena_rec __arena *rec = ARENA_PTR(struct arena_rec, list);
		ap_u64 k = arena_opaque(0);

		list = arena_atomic_load(&rec->hdr.next, ARENA_RELAXED);
		/* ASan: the record's words may lie in freed objects' data */
		arena_asan_unpoison(ARENA_ADDR(rec), sizeof(*rec));
		while (list && k < ARENA_REC_ENTRIES && can_loop) {
			struct arena_page __arena *pg = ARENA_PTR(struct arena_page, list);

			/* the link is read before the page goes */
			list = arena_atomic_load(&pg->next, ARENA_RELAXED);
			if (!arena_page_give_back(pg)) {
				arena_heap_keep_page(h, pg);
				continue;
			}
			arena_atomic_store(&rec->pages[k], ARENA_PAGE_NO(pg), ARENA_RELAXED);
			k++;
		}
		arena_atomic_store(&rec->n, k, ARENA_RELAXED);
		if (!k) {
			arena_heap_keep_page(h, &rec->hdr);
			continue;
		}
		arena_atomic_store(&rec->hdr.heap, ARENA_ADDR(h), ARENA_RELAXED);
		arena_atomic_store(&rec->hdr.magic, ARENA_PAGE_MAGIC, ARENA_RELAXED);
		arena_atomic_store(&rec->hdr.npages, 1, ARENA_RELAXED);
		arena_atomic_store(&rec->hdr.state, ARENA_PS_RECORD, ARENA_RELEASE);
		arena_atomic_inc(&h->record_pages, ARENA_RELAXED);
		arena_atomic_add(&h->pages_returned, k, ARENA_RELAXED);
		given += k;
		if (!arena_pstack_push(&h->returned, &rec->hdr))
			arena_atomic_inc(&h->pages_lost, ARENA_RELAXED);
	}
	return given;
}

/*
 * Give free pages back to the kernel: sleepable BPF, or userspace with
 * arena_user_give_back set (tests). One trim runs at a time; another one
 * returns 0 at once. First it finishes the previous trim's quarantine if
 * that one's grace period is over; then, if the free stack holds more than
 * trim_high pages (more than trim_keep with force), it takes pages off it
 * down to trim_keep, at most budget of them, and gives them back once their
 * grace period is over (else they wait in quarantine for the next trim).
 * Returns the pages given back by this call.
 */
static __always_inline ap_u64 arena_heap_trim_body(struct arena_heap __arena *h, ap_u64 budget, ap_u32 force)
{
	ap_u64 given = arena_opaque(0), n = arena_opaque(0), fr, keep, want, i, list = 0, skip = 0, ph;

	if (arena_atomic_cmpxchg(&h->trim_lock, 0, 1, ARENA_ACQ_REL) != 0)
		return 0;
	if (arena_atomic_load(&h->quar_n, ARENA_RELAXED)) {
		if (!arena_heap_grace_over(h, arena_atomic_load(&h->quar_phase, ARENA_RELAXED))) {
			arena_atomic_inc(&h->trim_waits, ARENA_RELAXED);
			goto out;
		}
		given += arena_heap_give_back(h);
	}
	fr = arena_atomic_load(&h->free_pages, ARENA_RELAXED);
	keep = h->trim_keep;
	if (fr <= keep || (!force && fr <= h->trim_high))
		goto done;
	want = fr - keep;
	if (want > budget)
		want = budget;
	/* 1. off the free stack: from now on nobody pops these pages */
	for (i = arena_opaque(0); i < want && can_loop; i++) {
		struct arena_page __arena *pg = arena_pstack_pop(&h->free_stack);

		if (!pg)
			break;
		arena_atomic_dec(&h->free_pages, ARENA_RELAXED);
		/* 2. a slot's hint may still lead a task to it: keep it */
		if (arena_heap_is_hint(h, ARENA_ADDR(pg))) {
			arena_atomic_store(&pg->next, skip, ARENA_RELAXED);
			skip = ARENA_ADDR(pg);
			continue;
		}
		arena_atomic_store(&pg->next, list, ARENA_RELAXED);
		list = ARENA_ADDR(pg);
		n++;
	}
	while (skip && can_loop) {
		struct arena_page __arena *pg = ARENA_PTR(struct arena_page, skip);

		skip = arena_atomic_load(&pg->next, ARENA_RELAXED);
		arena_heap_keep_page(h, pg);
	}
	if (!list)
		goto done;
	arena_atomic_store(&h->quar, list, ARENA_RELAXED);
	arena_atomic_store(&h->quar_n, n, ARENA_RELAXED);
	/* 3. flip, then wait for the sections of the old phase */
	ph = arena_atomic_add(&h->trim_phase, 1, ARENA_SEQ_CST);
	arena_atomic_store(&h->quar_phase, ph, ARENA_RELAXED);
	if (!arena_heap_grace_over(h, ph)) {
		arena_atomic_inc(&h->trim_waits, ARENA_RELAXED);
		goto out;
	}
	given += arena_heap_give_back(h);
done:
	arena_atomic_add(&h->trims, 1, ARENA_RELAXED);
out:
	arena_atomic_store(&h->trim_lock, 0, ARENA_RELEASE);
	return given;
}

ARENA_SUBPROG ap_u64 arena_heap_trim_subprog(ap_u64 heap, ap_u64 budget, ap_u32 force)
{
	return arena_heap_trim_body(ARENA_PTR(struct arena_heap, heap), budget, force);
}

static __always_inline ap_u64 arena_heap_trim(struct arena_heap __arena *h, ap_u64 budget, ap_u32 force)
{
#if ARENA_IS_BPF
	return arena_heap_trim_subprog(ARENA_ADDR(h), budget, force);
#else
	return arena_heap_trim_body(h, budget, force);
#endif
}
#endif

/* Set the trim watermarks (pages on the free stack). Returns 0, or -1 when
 * keep > high. */
static __always_inline int arena_heap_set_trim(struct arena_heap __arena *h, ap_u32 keep, ap_u32 high)
{
	if (keep > high)
		return -1;
	arena_atomic_store(&h->trim_keep, keep, ARENA_RELAXED);
	arena_atomic_store(&h->trim_high, high, ARENA_RELAXED);
	return 0;
}

/*
 * Lay out a heap over pages [first_page, first_page + npages) of the arena.
 * h itself must lie outside that range. Run once, before any user, from
 * userspace or a sleepable program. nr_kslots: possible CPUs (kernel slots
 * that get reserve pools), pool_target: pages per pool.
 */
static __always_inline int arena_heap_init(struct arena_heap __arena *h, ap_u64 first_page, ap_u64 npages,
					   ap_u32 nr_kslots, ap_u32 pool_target, ap_u64 flags)
{
	ap_u32 i;

	if (!first_page || npages < 2 || first_page + npages > (1ULL << 20))
		return -1;
	if (nr_kslots > ARENA_HEAP_KSLOTS || !nr_kslots)
		nr_kslots = ARENA_HEAP_KSLOTS;
	/* volatile stores throughout: clang merges adjacent constant stores
	 * into a memset, which the BPF backend cannot lower for address space 1 */
	arena_store_once(&h->magic, 0);
	arena_store_once(&h->first_page, first_page);
	arena_store_once(&h->npages, npages);
	arena_store_once(&h->flags, flags);
	arena_store_once(&h->nr_kslots, nr_kslots);
	arena_store_once(&h->pool_target, pool_target);
	arena_store_once(&h->fresh, 0);
	arena_store_once(&h->free_stack, 0);
	arena_store_once(&h->free_pages, 0);
	arena_store_once(&h->pages_in_use, 0);
	arena_store_once(&h->pages_lost, 0);
	arena_store_once(&h->large_allocs, 0);
	arena_store_once(&h->bad_frees, 0);
	arena_store_once(&h->overruns, 0);
	arena_store_once(&h->trim_phase, 0);
	arena_store_once(&h->returned, 0);
	arena_store_once(&h->trim_keep, ARENA_TRIM_KEEP);
	arena_store_once(&h->trim_high, ARENA_TRIM_HIGH);
	arena_store_once(&h->trim_lock, 0);
	arena_store_once(&h->quar, 0);
	arena_store_once(&h->quar_n, 0);
	arena_store_once(&h->quar_phase, 0);
	arena_store_once(&h->record_pages, 0);
	arena_store_once(&h->pages_returned, 0);
	arena_store_once(&h->pages_retaken, 0);
	arena_store_once(&h->trims, 0);
	arena_store_once(&h->trim_waits, 0);
	for (i = 0; i < ARENA_HEAP_SLOTS && can_loop; i++) {
		struct arena_heap_slot __arena *s = &h->slots[i];

		/* volatile: no memset on arena memory in BPF */
		arena_store_once(&s->cur, 0);
		arena_store_once(&s->pool, 0);
		arena_store_once(&s->pool_pages, 0);
		arena_store_once(&s->allocs, 0);
		arena_store_once(&s->frees, 0);
		arena_store_once(&s->bytes_alloc, 0);
		arena_store_once(&s->bytes_freed, 0);
		arena_store_once(&s->fails, 0);
		arena_store_once(&s->owner, 0);
		arena_store_once(&s->owner_ns, 0);
		arena_store_once(&s->inside[0], 0);
		arena_store_once(&s->inside[1], 0);
	}
	arena_atomic_store(&h->magic, ARENA_HEAP_MAGIC, ARENA_SEQ_CST);
	return 0;
}

/* A snapshot of the counters (each exact, the set not atomic). */
static __always_inline void arena_heap_get_stats(struct arena_heap __arena *h, struct arena_heap_stats *st)
{
	ap_u64 ba = 0, bf = 0, fresh;
	ap_u32 i;

	st->allocs = st->frees = st->failures = st->pool_pages = 0;
	for (i = 0; i < ARENA_HEAP_SLOTS && can_loop; i++) {
		struct arena_heap_slot __arena *s = &h->slots[i];

		st->allocs += arena_atomic_load(&s->allocs, ARENA_RELAXED);
		st->frees += arena_atomic_load(&s->frees, ARENA_RELAXED);
		ba += arena_atomic_load(&s->bytes_alloc, ARENA_RELAXED);
		bf += arena_atomic_load(&s->bytes_freed, ARENA_RELAXED);
		st->failures += arena_atomic_load(&s->fails, ARENA_RELAXED);
		st->pool_pages += arena_atomic_load(&s->pool_pages, ARENA_RELAXED);
	}
	st->bytes_in_use = ba - bf;
	st->pages_in_use = arena_atomic_load(&h->pages_in_use, ARENA_RELAXED);
	fresh = arena_atomic_load(&h->fresh, ARENA_RELAXED);
	st->pages_hwm = fresh < h->npages ? fresh : h->npages;
	st->pages_returned = arena_atomic_load(&h->pages_returned, ARENA_RELAXED);
	st->pages_retaken = arena_atomic_load(&h->pages_retaken, ARENA_RELAXED);
	/* backed now: what the bump counter handed out, less what is given back */
	st->pages_populated = st->pages_hwm - (st->pages_returned - st->pages_retaken);
	st->pages_quarantined = arena_atomic_load(&h->quar_n, ARENA_RELAXED);
	st->record_pages = arena_atomic_load(&h->record_pages, ARENA_RELAXED);
	st->trims = arena_atomic_load(&h->trims, ARENA_RELAXED);
	st->trim_waits = arena_atomic_load(&h->trim_waits, ARENA_RELAXED);
	st->free_pages = arena_atomic_load(&h->free_pages, ARENA_RELAXED);
	st->pages_lost = arena_atomic_load(&h->pages_lost, ARENA_RELAXED);
	st->bad_frees = arena_atomic_load(&h->bad_frees, ARENA_RELAXED);
	st->large_allocs = arena_atomic_load(&h->large_allocs, ARENA_RELAXED);
	st->overruns = arena_atomic_load(&h->overruns, ARENA_RELAXED);
}

#if !ARENA_IS_BPF
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* This thread as an owner word: tgid << 32 | tid. */
static inline ap_u64 arena_self_owner(void)
{
	return ((ap_u64)getpid() << 32) | (ap_u32)syscall(SYS_gettid);
}

/* The pid namespace this process sees (its /proc/self/ns/pid inode). */
static inline ap_u64 arena_self_ns(void)
{
	static ap_u64 cached;
	struct stat st;

	if (!cached)
		cached = stat("/proc/self/ns/pid", &st) == 0 ? (ap_u64)st.st_ino : 1;
	return cached;
}

/* 1 when the thread owner (registered from namespace ns) is known to be
 * gone: tgkill(tgid, tid, 0) says ESRCH. Never guesses across pid
 * namespaces. */
static inline int arena_owner_gone(ap_u64 owner, ap_u64 ns)
{
	if (!owner || ns != arena_self_ns())
		return 0;
	if (syscall(SYS_tgkill, (int)(owner >> 32), (int)(owner & 0xffffffffU), 0) == 0)
		return 0;
	return errno == ESRCH;
}

/*
 * The namespace word kept beside an owner word (arena_owner_gone reads the
 * pair). A new owner writes its namespace after the compare-and-swap that
 * makes it the owner, so a word is never cleared when its owner goes: while
 * owners come from one pid namespace it already holds theirs and a claimant
 * killed between the two steps leaves nothing wrong. Where it names another
 * namespace, the claimant clears it before its swap (only while the owner
 * word is free), so that until the new owner's namespace is in, a checker
 * finds none and judges the owner alive: never looked up among the wrong
 * namespace's pids.
 */
static inline void arena_owner_ns_before(ap_u64 *owner, ap_u64 *ns)
{
	if (arena_atomic_load(ns, ARENA_RELAXED) != arena_self_ns() && !arena_atomic_load(owner, ARENA_RELAXED))
		arena_atomic_store(ns, 0, ARENA_RELAXED);
}

static inline void arena_owner_ns_after(ap_u64 *ns)
{
	ap_u64 mine = arena_self_ns();

	if (arena_atomic_load(ns, ARENA_RELAXED) != mine)
		arena_atomic_store(ns, mine, ARENA_RELAXED);
}

/*
 * Give the calling thread a slot of its own in h (a current page no other
 * thread carves from first, and counters without atomic read-modify-
 * writes). Reuses a slot whose owner died. Returns 0, or -1 when all are
 * taken (the thread then shares its CPU's slot, which is just as correct).
 * Slow paths, once per thread: src/arena_user.c.
 */
int arena_heap_attach_thread(struct arena_heap *h);

/* Give the slot back (its current page stays with it for the next owner). */
void arena_heap_detach_thread(struct arena_heap *h);
#endif

/* ---- the default heap: arena_alloc(size) / arena_free(ptr) ---- */

/*
 * The address of the heap arena_alloc uses. BPF: a global of the program's
 * .bss that the loader sets through the skeleton (an integer, so that the
 * skeleton needs no arena types). Userspace: one per process, set with
 * arena_set_default_heap().
 */
#if ARENA_IS_BPF
ap_u64 arena_default_heap;
#else
extern ap_u64 arena_default_heap; /* defined once, in src/arena_user.c */
static inline void arena_set_default_heap(struct arena_heap *h)
{
	arena_default_heap = (ap_u64)h;
}
#endif

/* In BPF: sleepable programs only (it may call bpf_arena_alloc_pages). */
static __always_inline void __arena *arena_alloc(ap_u64 size)
{
	return arena_heap_alloc(ARENA_PTR(struct arena_heap, arena_default_heap), size, 0);
}

/* For non-sleepable BPF programs: free stack and reserve pool only. */
static __always_inline void __arena *arena_alloc_nosleep(ap_u64 size)
{
	return arena_heap_alloc(ARENA_PTR(struct arena_heap, arena_default_heap), size, ARENA_NOSLEEP);
}

#endif /* ARENA_ALLOC_H */
