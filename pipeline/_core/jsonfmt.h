/* SPDX-License-Identifier: MIT */
/* Formats event records as JSON lines, a whole batch per call, without Python. */
#ifndef AP_JSONFMT_H
#define AP_JSONFMT_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"

/* Upper bound of one formatted line: every name and path byte escaped as
 * \u00XX plus its base64 copy, the same for comm, and the fixed fields. */
#define AP_JSON_LINE_MAX                                                                   \
	(AP_NAME_CAP * 6 + AP_NAME_CAP * 4 / 3 + 8 + AP_PATH_CAP * 6 + AP_PATH_CAP * 4 / 3 + 8 + \
	 AP_COMM_LEN * 10 + 768)

/* Writes one JSON object and a newline at out; returns the bytes written
 * (at most AP_JSON_LINE_MAX). wall_offset_ns maps CLOCK_MONOTONIC to
 * CLOCK_REALTIME. */
size_t ap_format_event(char *out, const struct ap_event *ev, int64_t wall_offset_ns);

const char *ap_trigger_name(unsigned trigger);
const char *ap_syscall_name(unsigned syscall);

#endif
