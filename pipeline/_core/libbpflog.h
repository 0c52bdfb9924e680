/* SPDX-License-Identifier: MIT */
#ifndef AP_LIBBPFLOG_H
#define AP_LIBBPFLOG_H

/* The last messages libbpf printed (warnings and errors), for diagnostics. */
const char *ap_libbpf_log(void);
/* Also print libbpf's debug output on stderr. */
void ap_libbpf_verbose(int on);

#endif
