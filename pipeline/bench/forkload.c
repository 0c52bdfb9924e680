// SPDX-License-Identifier: MIT
/*
 * forkload N CONC OUT [PROGRAM]: N short-lived child processes, at most CONC
 * alive (forked and not yet waited for) at once. Each child calls _exit(0)
 * at once, or execs PROGRAM (no arguments) when one is given. Every child's
 * pid is written to OUT as a 32-bit little-endian word, in fork order; the
 * exit status is 0 only when every fork succeeded and every child exited 0.
 * The process table's churn test and its benchmark (proccost.py) run it.
 * Forking from C keeps the parent's own cost per child small, so a hundred
 * thousand take seconds, not minutes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int reap_one(void)
{
	int st;
	pid_t p;

	do {
		p = waitpid(-1, &st, 0);
	} while (p < 0 && errno == EINTR);
	if (p < 0) {
		perror("forkload: waitpid");
		return -1;
	}
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	char *const noargs[] = { argc > 4 ? argv[4] : NULL, NULL };
	long n, conc, alive = 0, i, bad = 0;
	uint32_t *pids;
	FILE *out;

	if (argc < 4 || argc > 5) {
		fprintf(stderr, "usage: forkload N CONC OUT [PROGRAM]\n");
		return 2;
	}
	n = strtol(argv[1], NULL, 10);
	conc = strtol(argv[2], NULL, 10);
	if (n < 1 || conc < 1) {
		fprintf(stderr, "forkload: N and CONC must be >= 1\n");
		return 2;
	}
	pids = calloc((size_t)n, sizeof(*pids));
	if (!pids) {
		perror("forkload: calloc");
		return 1;
	}
	for (i = 0; i < n; i++) {
		pid_t p;

		if (alive == conc) {
			int r = reap_one();

			if (r < 0)
				return 1;
			bad += r;
			alive--;
		}
		p = fork();
		if (p < 0) {
			perror("forkload: fork");
			return 1;
		}
		if (p == 0) {
			if (noargs[0])
				execv(noargs[0], noargs);
			_exit(noargs[0] ? 127 : 0);
		}
		pids[i] = (uint32_t)p;
		alive++;
	}
	while (alive--) {
		int r = reap_one();

		if (r < 0)
			return 1;
		bad += r;
	}
	out = fopen(argv[3], "wb");
	if (!out || fwrite(pids, sizeof(*pids), (size_t)n, out) != (size_t)n || fclose(out)) {
		perror("forkload: writing the pids");
		return 1;
	}
	free(pids);
	if (bad) {
		fprintf(stderr, "forkload: %ld children did not exit 0\n", bad);
		return 1;
	}
	return 0;
}
