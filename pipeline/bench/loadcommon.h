// SPDX-License-Identifier: MIT
/*
 * What the benchmark's load programs (loadgen.c, createload.c) share: the
 * clock they time their loop with, number parsing for their flags, pinning to
 * a CPU and the wait for the driver's start file. Header-only, so each program
 * stays one compiler call (the bench builds them itself when they are missing;
 * tools.py rebuilds a program when this header or its source is newer).
 */
#ifndef AP_BENCH_LOADCOMMON_H
#define AP_BENCH_LOADCOMMON_H

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline double load_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time this process has used, user and kernel. */
static inline double load_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A decimal integer >= 0 and nothing else: strtoull alone takes "-1" and " 7". */
static inline int load_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

/* Pins the calling process to one CPU; on failure says why on stderr as PROG. */
static inline int load_pin_to_cpu(const char *prog, uint64_t cpu)
{
	cpu_set_t set;

	if (cpu >= CPU_SETSIZE) {
		fprintf(stderr, "%s: --cpu %llu: out of range\n", prog, (unsigned long long)cpu);
		return -1;
	}
	CPU_ZERO(&set);
	CPU_SET((int)cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		fprintf(stderr, "%s: cannot pin to CPU %llu: %s\n", prog, (unsigned long long)cpu,
			strerror(errno));
		return -1;
	}
	return 0;
}

/* The driver creates PATH once its tracer is attached; polling every millisecond
 * keeps the wait off the CPU the loop is about to use. */
static inline void load_wait_for_file(const char *path)
{
	const struct timespec tick = { .tv_sec = 0, .tv_nsec = 1000 * 1000 };

	while (access(path, F_OK) != 0)
		nanosleep(&tick, NULL);
}

#endif
