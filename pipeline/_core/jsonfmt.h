/* SPDX-License-Identifier: MIT */
/* Formats event records as JSON lines, a whole batch per call, without Python. */
#ifndef AP_JSONFMT_H
#define AP_JSONFMT_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"

/* Upper bound of one formatted line: every name and path byte escaped as
 * \u00XX plus its base64 copy, the same for comm, and the fixed fields; a
 * line with cgroup fields (ap_format_event_cg) is longer by their length. */
#define AP_JSON_LINE_MAX                                                                   \
	(AP_NAME_CAP * 6 + AP_NAME_CAP * 4 / 3 + 8 + AP_PATH_CAP * 6 + AP_PATH_CAP * 4 / 3 + 8 + \
	 AP_COMM_LEN * 10 + 864)

/* Upper bound of ap_format_cgroup_fields' output. */
#define AP_CG_FIELDS_MAX(path_len, runtime_len, cid_len) \
	((path_len) * 6 + (path_len) * 4 / 3 + 8 + ((runtime_len) + (cid_len)) * 6 + 128)

/* Writes one JSON object and a newline at out; returns the bytes written
 * (at most AP_JSON_LINE_MAX). wall_offset_ns maps CLOCK_MONOTONIC to
 * CLOCK_REALTIME. */
size_t ap_format_event(char *out, const struct ap_event *ev, int64_t wall_offset_ns);

/* The same with the cgroup fields (from ap_format_cgroup_fields) after
 * cgroup_id; cg_fields NULL leaves them out. */
size_t ap_format_event_cg(char *out, const struct ap_event *ev, int64_t wall_offset_ns,
			  const char *cg_fields, size_t cg_len);

/* The fields naming a cgroup, each starting with a comma: "cgroup" (its
 * path, or null when unknown; "cgroup_b64" beside it when the path is not
 * valid UTF-8), then "container_runtime" and "container_id" unless runtime
 * is NULL. Writes at most AP_CG_FIELDS_MAX(...) bytes; returns how many. */
size_t ap_format_cgroup_fields(char *out, const unsigned char *path, size_t path_len,
			       const char *runtime, size_t runtime_len, const char *cid,
			       size_t cid_len);

/* The body of a JSON string for n bytes (the record's rules: valid UTF-8 as
 * is, control characters escaped, each bad byte as U+FFFD with *valid set to
 * 0); at most 6 bytes out per byte in. Returns the end. */
char *ap_json_put_str(char *p, const unsigned char *s, size_t n, int *valid);

/* n bytes as base64 (the *_b64 fields), at most 4 * ((n + 2) / 3) bytes out. */
char *ap_json_put_b64(char *p, const unsigned char *s, size_t n);

const char *ap_trigger_name(unsigned trigger);
const char *ap_syscall_name(unsigned syscall);

#endif
