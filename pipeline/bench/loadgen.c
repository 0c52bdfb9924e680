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

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
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

static int pin_to_cpu(uint64_t cpu)
{
	cpu_set_t set;

	if (cpu >= CPU_SETSIZE) {
		fprintf(stderr, "loadgen: --cpu %llu: out of range\n", (unsigned long long)cpu);
		return -1;
	}
	CPU_ZERO(&set);
	CPU_SET((int)cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		fprintf(stderr, "loadgen: cannot pin to CPU %llu: %s\n", (unsigned long long)cpu,
			strerror(errno));
		return -1;
	}
	return 0;
}

static void wait_for_file(const char *path)
{
	const struct timespec tick = { .tv_sec = 0, .tv_nsec = 1000 * 1000 }; /* 1 ms */

	while (access(path, F_OK) != 0)
		nanosleep(&tick, NULL);
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
			if (parse_u64(optarg, &calls_wanted))
				return fail("--calls needs a non-negative integer");
			have_calls = 1;
			break;
		case 'c':
			if (parse_u64(optarg, &cpu))
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

	if (have_cpu && pin_to_cpu(cpu))
		return 1;
	if (start_file)
		wait_for_file(start_file);

	t0 = now_s();
	if (have_calls) {
		for (; calls < calls_wanted; calls++)
			syscall(SYS_getppid);
	} else {
		double deadline = t0 + seconds;

		do {
			for (int i = 0; i < CALLS_PER_CLOCK_CHECK; i++)
				syscall(SYS_getppid);
			calls += CALLS_PER_CLOCK_CHECK;
		} while (now_s() < deadline);
	}
	t1 = now_s();

	printf("{\"calls\": %llu, \"seconds\": %.6f}\n", (unsigned long long)calls, t1 - t0);
	return fflush(stdout) == 0 ? 0 : 1;
}
