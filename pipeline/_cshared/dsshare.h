/* SPDX-License-Identifier: MIT */
/*
 * A capture session's data-structure space, handed from pipeline._core (which
 * owns the arena, its mapping and the loaded ds_ops programs) to pipeline._ds
 * (DsArena bound to the session) in a PyCapsule named AP_DS_SHARE_CAPSULE.
 * The two modules share no C symbols: this struct is their whole contract.
 * The session owns it; a bound DsArena keeps a reference to the session
 * object, so the struct outlives it, and reads `alive` before each call,
 * because closing the session unmaps the memory the space lives in.
 */
#ifndef AP_DSSHARE_H
#define AP_DSSHARE_H

#include <stdint.h>

#include "ds/registry.h"

#define AP_DS_SHARE_CAPSULE "pipeline._core.ds_share"
#define AP_DS_SHARE_VERSION 1

struct ds_space;

struct ap_ds_share {
	uint32_t version;
	int alive;          /* cleared before the session unmaps the arena */
	uint64_t pages;     /* of the whole arena */
	struct ds_space *sp;
	int prog_fd[DS_TYPES_END]; /* ds_run_NAME, the session's */
	int trim_fd;               /* ds_trim */
	uint64_t creator_pid;
	/* the ds_ops programs' totals (its .bss, mapped by the session) */
	const volatile unsigned long long *kernel_ops, *kernel_fails, *kernel_batches;
};

#endif
