/* SPDX-License-Identifier: MIT */
/* Writing and publishing a generation of the kernel-evaluated filters
 * (include/filter.h) from userspace: arena stores only, no system call. */
#ifndef AP_FILTERGEN_H
#define AP_FILTERGEN_H

#include <stddef.h>
#include <stdint.h>

#include "root.h"

struct ap_filter_prefix {
	const unsigned char *bytes;
	size_t len;
};

struct ap_filter_cgroup {
	uint64_t id;
	uint32_t level; /* its depth below the hierarchy's root (the root is 0) */
};

struct ap_filter_spec {
	const struct ap_filter_prefix *include;
	size_t n_include;
	const struct ap_filter_prefix *exclude;
	size_t n_exclude;
	const uint32_t *uids;
	size_t n_uids;
	const struct ap_filter_cgroup *cgroups;
	size_t n_cgroups;
};

/* Write spec whole into the table no producer judges with, then publish it
 * as the next generation (one writer at a time: the caller's). Returns 0
 * with *gen set, or a negative errno with one line in err (nothing is
 * published then, and the generation in force stays). */
int ap_filter_publish(struct ap_root *root, const struct ap_filter_spec *spec, uint64_t *gen,
		      char *err, size_t errlen);

#endif
