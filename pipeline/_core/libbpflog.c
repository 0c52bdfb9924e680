// SPDX-License-Identifier: MIT
/*
 * libbpf's messages, kept for error reports instead of spamming stderr.
 * libbpf has one print hook per process: only the runtime module installs
 * it (the benchmark module, which also loads sessions, leaves it alone).
 */
#include "libbpflog.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <bpf/libbpf.h>

static char libbpf_log[4096];
static size_t libbpf_log_len;
static int libbpf_verbose;
/* a session loads two objects at once, from two threads */
static pthread_mutex_t libbpf_log_lock = PTHREAD_MUTEX_INITIALIZER;

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[1024];
	int n;

	if (level == LIBBPF_DEBUG && !libbpf_verbose)
		return 0;
	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return 0;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	pthread_mutex_lock(&libbpf_log_lock);
	if (libbpf_verbose)
		fputs(line, stderr);
	/* keep the tail: the last messages explain the failure */
	if (libbpf_log_len + (size_t)n >= sizeof(libbpf_log))
		libbpf_log_len = 0;
	memcpy(libbpf_log + libbpf_log_len, line, (size_t)n);
	libbpf_log_len += (size_t)n;
	libbpf_log[libbpf_log_len] = 0;
	pthread_mutex_unlock(&libbpf_log_lock);
	return 0;
}

const char *ap_libbpf_log(void)
{
	return libbpf_log;
}

void ap_libbpf_verbose(int on)
{
	libbpf_verbose = on;
}

__attribute__((constructor)) static void install_print(void)
{
	libbpf_set_print(libbpf_print);
}
