/* SPDX-License-Identifier: MIT */
/*
 * The userspace side of the arena library that is not inline: state that
 * must exist once per process (or once per thread) however many translation
 * units include the headers, and the slow paths that go with it (a thread
 * claiming and giving back its own heap slot). Every userspace build that
 * includes include/arena/alloc.h compiles this file once and links it in:
 * the C extension (setup.py) and the C tests (tests/test_ds_c.py). The BPF
 * side has no such state: each BPF object is one translation unit and keeps
 * arena_default_heap in its own .bss.
 */
#include "arena/alloc.h"

#if ARENA_IS_BPF
#error "arena_user.c is the userspace side of the arena library"
#endif

__thread struct arena_thread_slot arena_thread_slot;
ap_u64 arena_default_heap;
int (*arena_user_give_back)(ap_u64 addr, ap_u64 npages);
int (*arena_user_take_back)(ap_u64 addr, ap_u64 npages);

/* pthread_atfork is asked once per process, by the first thread to attach. */
static int arena_atfork_registered;

/* A forked child is not the owner of its parent's slot. */
static void arena_thread_slot_forget(void)
{
	arena_thread_slot.heap = 0;
}

int arena_heap_attach_thread(struct arena_heap *h)
{
	ap_u64 me = arena_self_owner();
	ap_u32 i;

	if (!__atomic_exchange_n(&arena_atfork_registered, 1, __ATOMIC_ACQ_REL))
		pthread_atfork(NULL, NULL, arena_thread_slot_forget);
	for (i = ARENA_HEAP_OWNED_FIRST; i < ARENA_HEAP_SLOTS; i++) {
		struct arena_heap_slot *s = &h->slots[i];
		ap_u64 o = arena_atomic_load(&s->owner, ARENA_ACQUIRE);

		if (o && !arena_owner_gone(o, arena_atomic_load(&s->owner_ns, ARENA_RELAXED)))
			continue;
		if (arena_atomic_cmpxchg(&s->owner, o, me, ARENA_ACQ_REL) != o)
			continue;
		/* a dead owner's open heap sections would hold trims forever */
		arena_atomic_store(&s->inside[0], 0, ARENA_RELEASE);
		arena_atomic_store(&s->inside[1], 0, ARENA_RELEASE);
		arena_atomic_store(&s->owner_ns, arena_self_ns(), ARENA_RELAXED);
		arena_thread_slot.heap = (ap_u64)h;
		arena_thread_slot.slot = i;
		return 0;
	}
	return -1;
}

void arena_heap_detach_thread(struct arena_heap *h)
{
	if (arena_thread_slot.heap != (ap_u64)h)
		return;
	arena_heap_cache_flush(h);
	arena_atomic_store(&h->slots[arena_thread_slot.slot].owner, 0, ARENA_RELEASE);
	arena_thread_slot.heap = 0;
}
