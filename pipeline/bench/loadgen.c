// SPDX-License-Identifier: MIT
/*
 * loadgen: the benchmark's event source. It calls getppid(2) in a tight loop;
 * a tracepoint on sys_enter_getppid turns each call into one event, in the
 * project's pipeline and in the BCC baseline alike.
 *
 *   loadgen --seconds S | --calls N [--cpu C] [--start-file PATH]
 *
 * --cpu pins the process to one CPU, so the producer and the consumer under
 * test can be kept apart. --start-file makes it wait, after pinning, until
 * PATH exists: the driver starts it, learns its pid (to filter on), sets up
 * the consumer and then creates the file to release the loop.
 *
 * Prints one JSON object on stdout: {"calls": N, "seconds": S}, the calls
 * made and the loop's own duration (CLOCK_MONOTONIC).
 *
 * The call goes through syscall(SYS_getppid), never the libc wrapper, so that
 * no C library can answer it from a cache without entering the kernel.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "loadcommon.h"

/* With --seconds, read the clock once per this many calls: the vDSO clock is
 * cheap but not free next to a ~100 ns syscall. */
#define CALLS_PER_CLOCK_CHECK 256

static void usage(FILE *f)
{
	fprintf(f, "usage: loadgen --seconds S | --calls N [--cpu C] [--start-file PATH]\n"
		   "  --seconds S       call getppid for S seconds (S > 0, fractions allowed)\n"
		   "  --calls N         call getppid N times\n"
		   "  --cpu C           pin to CPU C before starting\n"
		   "  --start-file PATH wait until PATH exists before starting the loop\n");
}

static int fail(const char *what)
{
	fprintf(stderr, "loadgen: %s\n", what);
	usage(stderr);
	return 2;
}

static int parse_seconds(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || end == s || !(v > 0.0) || v > 1e7)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "calls", required_argument, NULL, 'n' },
		{ "cpu", required_argument, NULL, 'c' },
		{ "start-file", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	double seconds = 0.0, t0, t1;
	uint64_t calls_wanted = 0, calls = 0, cpu = 0;
	int have_seconds = 0, have_calls = 0, have_cpu = 0, c;
	const char *start_file = NULL;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (parse_seconds(optarg, &seconds))
				return fail("--seconds needs a number > 0");
			have_seconds = 1;
			break;
		case 'n':
			if (load_parse_u64(optarg, &calls_wanted))
				return fail("--calls needs a non-negative integer");
			have_calls = 1;
			break;
		case 'c':
			if (load_parse_u64(optarg, &cpu))
				return fail("--cpu needs a CPU number");
			have_cpu = 1;
			break;
		case 'f':
			start_file = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc)
		return fail("unexpected argument");
	if (have_seconds == have_calls)
		return fail("give exactly one of --seconds and --calls");

	if (have_cpu && load_pin_to_cpu("loadgen", cpu))
		return 1;
	if (start_file)
		load_wait_for_file(start_file);

	t0 = load_now_s();
	if (have_calls) {
		for (; calls < calls_wanted; calls++)
			syscall(SYS_getppid);
	} else {
		double deadline = t0 + seconds;

		do {
			for (int i = 0; i < CALLS_PER_CLOCK_CHECK; i++)
				syscall(SYS_getppid);
			calls += CALLS_PER_CLOCK_CHECK;
		} while (load_now_s() < deadline);
	}
	t1 = load_now_s();

	printf("{\"calls\": %llu, \"seconds\": %.6f}\n", (unsigned long long)calls, t1 - t0);
	return fflush(stdout) == 0 ? 0 : 1;
}
