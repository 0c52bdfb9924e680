// SPDX-License-Identifier: MIT
/*
 * createload: the traced workload of the benchmark's `overhead` part. It creates
 * files on tmpfs in a tight loop (openat(O_CREAT|O_EXCL) then close), the calls a
 * file-creation tracer hooks, so the time per creation with and without a tracer
 * attached is the tracer's cost to the traced program.
 *
 *   createload --dir DIR --files N [--cpu C] [--start-file PATH]
 *              [--then-files M --then-start-file PATH2]
 *
 * DIR must be an empty directory on tmpfs (checked with fstatfs): on a disk file
 * system the loop would measure the disk. The files are named f0, f1, ... inside
 * DIR; they are removed after the timed loop, so the removal is not timed.
 * --cpu and --start-file work as in loadgen: pin, then wait until PATH exists, so
 * the driver can attach a tracer filtered on this pid before the loop starts.
 *
 * With --then-files, after the first loop (and its files' removal) it prints its
 * line, waits until PATH2 exists and runs a second loop of M creations, in the same
 * process (a tracer filtered on its pid traces both), and prints a second line: the
 * bench counts the tracer's BPF run time over the second loop only, so that the
 * counting's own cost is not in the first loop's timing.
 *
 * Prints one JSON object per loop on stdout: {"created": N, "seconds": S, "cpu_seconds": C},
 * the files created, the timed loop's duration (CLOCK_MONOTONIC) and the CPU time
 * the process spent in it, user and kernel (CLOCK_PROCESS_CPUTIME_ID). On a busy
 * machine other processes that run on the load's CPU lengthen the first and not
 * the second; what a tracer makes the load's own calls do (BPF programs, the
 * traced syscall path, interrupts taken on its CPU) lengthens both.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/magic.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "loadcommon.h"

/* Enough to make each round take long enough to time, small enough for tmpfs. */
#define MAX_FILES 10000000ULL

static void usage(FILE *f)
{
	fprintf(f, "usage: createload --dir DIR --files N [--cpu C] [--start-file PATH]\n"
		   "  --dir DIR         an empty directory on tmpfs to create the files in\n"
		   "  --files N         files to create, 1..%llu\n"
		   "  --cpu C           pin to CPU C before starting\n"
		   "  --start-file PATH wait until PATH exists before starting the loop\n"
		   "  --then-files M    then run a second loop of M creations (1..%llu),\n"
		   "                    once --then-start-file PATH2 exists\n",
		MAX_FILES, MAX_FILES);
}

static int fail(const char *what)
{
	fprintf(stderr, "createload: %s\n", what);
	usage(stderr);
	return 2;
}

/* The directory, opened without following a link, on tmpfs, a directory. */
static int open_tmpfs_dir(const char *path)
{
	struct statfs sfs;
	int dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (dfd < 0) {
		fprintf(stderr, "createload: cannot open directory %s: %s; give an existing "
				"directory on tmpfs\n", path, strerror(errno));
		return -1;
	}
	if (fstatfs(dfd, &sfs) || sfs.f_type != TMPFS_MAGIC) {
		fprintf(stderr, "createload: %s is not on tmpfs; give a directory on tmpfs "
				"(e.g. under /dev/shm)\n", path);
		close(dfd);
		return -1;
	}
	return dfd;
}

static void name_of(char *buf, size_t len, uint64_t i)
{
	snprintf(buf, len, "f%llu", (unsigned long long)i);
}

/* One timed loop of `files` creations, then (untimed) their removal, so the
 * directory is as it was given. Prints the loop's line; returns 0, or 1 when a
 * creation failed. */
static int create_loop(int dfd, const char *dir, uint64_t files)
{
	double t0, t1, c0, c1;
	char name[32];
	uint64_t i;
	int rc = 0;

	t0 = load_now_s();
	c0 = load_cpu_s();
	for (i = 0; i < files; i++) {
		int fd;

		name_of(name, sizeof(name), i);
		fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			fprintf(stderr, "createload: cannot create %s/%s: %s\n", dir, name,
				strerror(errno));
			rc = 1;
			break;
		}
		close(fd);
	}
	c1 = load_cpu_s();
	t1 = load_now_s();

	for (uint64_t j = 0; j < i; j++) {
		name_of(name, sizeof(name), j);
		unlinkat(dfd, name, 0);
	}
	if (rc)
		return rc;
	printf("{\"created\": %llu, \"seconds\": %.6f, \"cpu_seconds\": %.6f}\n",
	       (unsigned long long)files, t1 - t0, c1 - c0);
	return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "files", required_argument, NULL, 'n' },
		{ "cpu", required_argument, NULL, 'c' },
		{ "start-file", required_argument, NULL, 'f' },
		{ "then-files", required_argument, NULL, 'm' },
		{ "then-start-file", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = NULL, *start_file = NULL, *then_start = NULL;
	uint64_t files = 0, then_files = 0, cpu = 0;
	int have_cpu = 0, dfd, c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'n':
			if (load_parse_u64(optarg, &files) || files == 0 || files > MAX_FILES)
				return fail("--files needs an integer in 1..10000000");
			break;
		case 'c':
			if (load_parse_u64(optarg, &cpu))
				return fail("--cpu needs a CPU number");
			have_cpu = 1;
			break;
		case 'f':
			start_file = optarg;
			break;
		case 'm':
			if (load_parse_u64(optarg, &then_files) || then_files == 0 ||
			    then_files > MAX_FILES)
				return fail("--then-files needs an integer in 1..10000000");
			break;
		case 'g':
			then_start = optarg;
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
	if (!dir || !files)
		return fail("give --dir and --files");
	if (!then_files != !then_start)
		return fail("give --then-files and --then-start-file together");

	dfd = open_tmpfs_dir(dir);
	if (dfd < 0)
		return 2;
	if (have_cpu && load_pin_to_cpu("createload", cpu))
		return 1;
	if (start_file)
		load_wait_for_file(start_file);

	rc = create_loop(dfd, dir, files);
	if (!rc && then_files) {
		load_wait_for_file(then_start);
		rc = create_loop(dfd, dir, then_files);
	}
	close(dfd);
	return rc;
}
