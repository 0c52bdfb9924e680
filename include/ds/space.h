/* SPDX-License-Identifier: MIT */
/*
 * A data-structure space: the part of the arena the structures live in. At
 * its first page: a directory of named instances, the heap's state and the
 * epoch domain; the heap manages every page after them. The pipeline gives
 * it a page range of the shared arena; tests give it any range.
 *
 *   | struct ds_space (DS_SPACE_HDR_PAGES pages) | heap pages ... |
 *
 * Userspace lays it out (ds_space_init), attaches each thread
 * (ds_user_attach: an epoch record of its own) and creates instances
 * (ds_create). Kernel programs need only an instance's address: its head
 * names the heap and the domain.
 */
#ifndef DS_SPACE_H
#define DS_SPACE_H

#include "registry.h"

#define DS_SPACE_MAGIC 0x3163617073736461ULL /* "adsspac1" */
#define DS_SPACE_DIR 32
#define DS_NAME_LEN 24

struct ds_dir_entry {
	ap_u64 addr; /* instance, 0 when the entry is free */
	ap_u32 type;
	ap_u32 spare;
	char name[DS_NAME_LEN];
};

struct ds_space {
	ap_u64 magic;
	ap_u64 first_page; /* of the space, header included */
	ap_u64 npages;
	ap_u64 version;
	struct ds_dir_entry dir[DS_SPACE_DIR];
	struct arena_heap heap;
	struct ebr_domain ebr;
};

#define DS_SPACE_HDR_PAGES ((sizeof(struct ds_space) + ARENA_PAGE_SIZE - 1) / ARENA_PAGE_SIZE)

#if !ARENA_IS_BPF
#include <string.h>

static inline struct ds_space *ds_space_at_page(ap_u64 first_page)
{
	return (struct ds_space *)ARENA_PAGE_ADDR(first_page);
}

/*
 * Lay out a space over pages [first_page, first_page + npages) of a mapped
 * arena. nr_cpus: possible CPUs (kernel epoch records and page pools);
 * pool_pages: pages each kernel CPU keeps for non-sleepable allocation
 * (filled now, and by DS_CMD_REFILL later); heap_flags: ARENA_HEAP_POISON
 * for tests. Returns NULL on bad arguments.
 */
static inline struct ds_space *ds_space_init(ap_u64 first_page, ap_u64 npages, ap_u32 nr_cpus,
					     ap_u32 pool_pages, ap_u64 heap_flags)
{
	struct ds_space *sp = ds_space_at_page(first_page);

	if (npages <= DS_SPACE_HDR_PAGES + 2)
		return NULL;
	memset(sp, 0, sizeof(*sp));
	sp->first_page = first_page;
	sp->npages = npages;
	sp->version = 1;
	if (arena_heap_init(&sp->heap, first_page + DS_SPACE_HDR_PAGES, npages - DS_SPACE_HDR_PAGES,
			    nr_cpus, pool_pages, heap_flags))
		return NULL;
	ebr_init(&sp->ebr, nr_cpus);
	if (pool_pages)
		arena_heap_refill(&sp->heap, 0);
	arena_atomic_store(&sp->magic, DS_SPACE_MAGIC, ARENA_SEQ_CST);
	return sp;
}

/* Give this thread a context on the space: its own epoch record. Returns
 * DS_OK, or DS_FULL when every user record is taken. */
static inline int ds_user_attach(struct ds_space *sp, struct ds_ctx *c)
{
	c->heap = &sp->heap;
	c->ebr = &sp->ebr;
	c->rec = ebr_register(&sp->ebr);
	/* a heap slot of its own if one is free (else the CPU's, shared) */
	arena_heap_attach_thread(&sp->heap);
	c->flags = 0;
	c->side = DS_SIDE_USER;
	c->rng = arena_now_ns() ^ (ap_u64)(unsigned long)c;
	c->held = 0;
	c->owner = arena_self_owner();
	c->push_hint.at = c->pop_hint.at = 0;
	return c->rec ? DS_OK : DS_FULL;
}

static inline void ds_user_detach(struct ds_ctx *c)
{
	ap_u64 roles = c->held & ~DS_HELD_BITS;

	/* roles held past a batch (roles.h) go back with the context */
	if (roles && (c->held & DS_HELD_PRODUCER))
		ds_role_release((struct ds_roles *)roles, DS_ROLE_PRODUCER);
	if (roles && (c->held & DS_HELD_CONSUMER))
		ds_role_release((struct ds_roles *)roles, DS_ROLE_CONSUMER);
	c->held = 0;
	if (c->rec)
		ebr_unregister(c->ebr, c->rec);
	c->rec = NULL;
	arena_heap_detach_thread(c->heap);
}

/*
 * Allocate and lay out an instance of a registered type; name it in the
 * directory if name is not NULL. Returns its address, or 0 (*err says why).
 */
static inline ap_u64 ds_create(struct ds_space *sp, struct ds_ctx *c, ap_u32 type, const struct ds_config *cfg,
			       const char *name, int *err)
{
	ap_u64 size = ds_head_size(type);
	struct ds_head *h;
	int r, i;

	if (!size) {
		*err = DS_INVALID;
		return 0;
	}
	h = (struct ds_head *)arena_heap_alloc(&sp->heap, size, ARENA_PAGE_ALIGNED);
	if (!h) {
		*err = DS_NOMEM;
		return 0;
	}
	memset(h, 0, size);
	h->heap = (ap_u64)&sp->heap;
	h->ebr = (ap_u64)&sp->ebr;
	r = ds_init_type(c, type, (ap_u64)h, cfg);
	if (r != DS_OK) {
		arena_free(h);
		*err = r;
		return 0;
	}
	if (name) {
		for (i = 0; i < DS_SPACE_DIR; i++) {
			struct ds_dir_entry *e = &sp->dir[i];

			/* claim with 1 (never an address), fill, then publish */
			if (arena_atomic_cmpxchg(&e->addr, 0, 1, ARENA_ACQ_REL) == 0) {
				e->type = type;
				memset(e->name, 0, DS_NAME_LEN);
				strncpy(e->name, name, DS_NAME_LEN - 1);
				arena_atomic_store(&e->addr, (ap_u64)h, ARENA_RELEASE);
				break;
			}
		}
	}
	*err = DS_OK;
	return (ap_u64)h;
}

/* The address of the instance named name, or 0. */
static inline ap_u64 ds_lookup(struct ds_space *sp, const char *name, ap_u32 *type)
{
	int i;

	for (i = 0; i < DS_SPACE_DIR; i++) {
		struct ds_dir_entry *e = &sp->dir[i];
		ap_u64 a = arena_atomic_load(&e->addr, ARENA_ACQUIRE);

		if (a > 1 && !strncmp(e->name, name, DS_NAME_LEN)) {
			if (type)
				*type = e->type;
			return a;
		}
	}
	return 0;
}

/* Allocate a zeroed instance head that names the space's heap and domain,
 * for a kernel DS_CMD_INIT batch to lay out (ds_create does both in
 * userspace). Returns its address or 0. */
static inline ap_u64 ds_alloc_head(struct ds_space *sp, ap_u32 type)
{
	ap_u64 size = ds_head_size(type);
	struct ds_head *h;

	if (!size)
		return 0;
	h = (struct ds_head *)arena_heap_alloc(&sp->heap, size, ARENA_PAGE_ALIGNED);
	if (!h)
		return 0;
	memset(h, 0, size);
	h->heap = (ap_u64)&sp->heap;
	h->ebr = (ap_u64)&sp->ebr;
	return (ap_u64)h;
}
#endif

#endif /* DS_SPACE_H */
