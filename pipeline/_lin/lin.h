/* SPDX-License-Identifier: MIT */
/*
 * The linearizability checker's C core (pipeline._linearize): decides whether
 * a recorded history (include/ds/history.h) of a map, set, FIFO queue or
 * LIFO stack has a linearization, and when it has none, names a small set
 * of records that shows why. Plain C over an array of records: no Python
 * objects, so the module runs it with the GIL released.
 *
 *   keyed.c  maps and sets: Wing-Gong search with Lowe's cache, one key at
 *            a time (P-compositionality)
 *   seq.c    queues and stacks with distinct values: the violation patterns,
 *            each found in O(n log n)
 *   stack.c  stacks: the exact search run when no pattern is found
 *   wgl.c    the event list and configuration cache both searches use
 */
#ifndef LIN_H
#define LIN_H

#include <stddef.h>
#include <stdint.h>

#include "ds/history.h"

enum lin_verdict {
	LIN_VIOLATION = 0,
	LIN_OK = 1,
	LIN_UNDECIDED = -1, /* the search budget ran out on one key */
	LIN_BAD_INPUT = -2, /* a record the checker cannot interpret: see lin_out.err */
	LIN_NO_MEMORY = -3,
};

/* What a violation is; the Python side words it from the records named. */
enum lin_what {
	LIN_W_NONE = 0,
	LIN_W_KEY = 1,          /* keyed: no order of one key's operations works */
	LIN_W_UNKNOWN = 2,      /* a value removed that no operation added */
	LIN_W_TWICE = 3,        /* a value removed twice: idx = both removals, then the add */
	LIN_W_BEFORE_ADD = 4,   /* a removal that returned before its value's add began */
	LIN_W_FIFO = 5,         /* idx: add u, add v, remove v, remove u (or none) */
	LIN_W_LIFO = 6,         /* idx: add u, add v, remove u, remove v (or none) */
	LIN_W_EMPTY = 7,        /* an empty answer while values were certainly inside: idx[0]
				 * the empty removal, then (add, remove) pairs of the values */
	LIN_W_FIFO_LOST = 8,    /* idx: add u, add v, remove v: u added first, never removed */
	LIN_W_STACK = 9,        /* stacks: no order works (the search); idx as for LIN_W_KEY */
};

#define LIN_IDX_MAX 16

struct lin_out {
	int verdict;
	int what;
	uint64_t checked;   /* operations the decision covers */
	uint64_t ignored;   /* failed operations without effect (BUSY, NOMEM, FULL, INVALID...) */
	uint64_t unchecked; /* keyed pops that are only partly checked (see keyed.c) */
	uint64_t partitions; /* keys (keyed) */
	uint64_t steps;     /* search steps (keyed) */
	uint64_t key;       /* the key or value the violation is about */
	/* keyed violations: how far the search got on that key */
	uint64_t key_ops;       /* operations on the key */
	uint64_t prefix;        /* the longest prefix of them that has a linearization */
	int state_present;      /* the key's state after that prefix */
	uint64_t state_value;
	uint32_t nidx;
	uint64_t idx[LIN_IDX_MAX]; /* record indices, in the order enum lin_what gives */
	char err[200];
};

/* kind flags for lin_check_keyed */
#define LIN_IGNORE_VALUES 1U /* a set: only presence matters */

/*
 * Maps and sets. initial: sorted (key, value) pairs present before the first
 * record (may be NULL with ninitial 0). budget: search steps allowed on one
 * key before the answer is LIN_UNDECIDED (0: no limit).
 */
void lin_check_keyed(const struct ds_hist_rec *recs, size_t n, unsigned flags,
		     const uint64_t (*initial)[2], size_t ninitial, uint64_t budget, struct lin_out *out);

/* FIFO queues (lifo 0) and LIFO stacks (lifo 1) whose added values are distinct.
 * budget: steps of the stack search (0: no limit). */
void lin_check_seq(const struct ds_hist_rec *recs, size_t n, int lifo, uint64_t budget,
		   struct lin_out *out);

/* One operation of a stack history, for the search (stack.c). */
enum lin_sop_type { LIN_S_PUSH, LIN_S_POP, LIN_S_EMPTY };

struct lin_sop {
	uint64_t inv, resp;
	uint32_t vid; /* the value's number, 0 .. nv - 1 (empty pops: unused) */
	uint32_t rec;
	uint8_t type;
};

/* Decide a stack history of m ops over nv values (sorts ops). Returns a
 * verdict; for LIN_VIOLATION fills what, key_ops, prefix and idx. */
int lin_stack_search(struct lin_sop *ops, size_t m, size_t nv, uint64_t budget, struct lin_out *out);

#endif /* LIN_H */
