// SPDX-License-Identifier: GPL-2.0
/*
 * loadall: does the running kernel's verifier accept each BPF program of some objects?
 *
 *   loadall OBJECT.bpf.o...          load every program of every object, one at a time
 *   loadall --list OBJECT.bpf.o...   only list the programs (nothing is loaded)
 *
 * For each program the object is opened afresh and loaded with only that program's
 * autoload on, so each verdict is the program's own (the maps, the BPF arena among them,
 * are created for each load and freed with the object). Output, one record a line, each
 * prefixed with a tag so that a host reading a serial console can pick them out:
 *
 *   LOADALL-PROGS <object> <count>
 *   LOADALL <object> <program> OK
 *   LOADALL <object> <program> FAIL <errno> <ERRNAME> <message>
 *   LOADALL-LOG <object> <program> <line>     (the last lines of the verifier log)
 *   LOADALL-SUMMARY <ok> <failed>
 *   LIST <object> <program> <section>          (--list)
 *
 * Exit status: 0 when every program loaded (or --list worked), 1 when some program was
 * refused, 2 on a usage error or an object that cannot be opened.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/libbpf.h>

#define TAIL_LINES 5
/* The kernel keeps the end of the log when it does not fit (a rolling log), which is the
 * part that says why; a log that overflowed makes the load fail with ENOSPC instead of the
 * verifier's own error, so that case is named as such. */
#define LOG_SIZE (16u << 20)

static char *vlog;          /* the verifier's log of the current load */
static char libbpf_msgs[8192]; /* libbpf's own warnings during the current load */
static size_t libbpf_len;

static int on_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[1024];
	int n;

	if (level == LIBBPF_DEBUG)
		return 0;
	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n <= 0)
		return 0;
	/* the verifier log itself comes through the program's buffer */
	if (strstr(line, "-- BEGIN PROG LOAD LOG --"))
		return 0;
	/* keep the latest messages: drop the oldest half when full */
	if (libbpf_len + strlen(line) + 1 >= sizeof(libbpf_msgs)) {
		size_t half = libbpf_len / 2;

		memmove(libbpf_msgs, libbpf_msgs + half, libbpf_len - half);
		libbpf_len -= half;
		libbpf_msgs[libbpf_len] = '\0';
	}
	if (libbpf_len + strlen(line) + 1 < sizeof(libbpf_msgs)) {
		memcpy(libbpf_msgs + libbpf_len, line, strlen(line) + 1);
		libbpf_len += strlen(line);
	}
	return 0;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

static const char *errno_name(int err)
{
	switch (err) {
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ESRCH: return "ESRCH";
	case EINTR: return "EINTR";
	case E2BIG: return "E2BIG";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case EINVAL: return "EINVAL";
	case ENOSPC: return "ENOSPC";
	case ERANGE: return "ERANGE";
	case ENOTSUP: return "EOPNOTSUPP";
	case ENOSYS: return "ENOSYS";
	case ELOOP: return "ELOOP";
	case 524: return "ENOTSUPP";
	default: return "E?";
	}
}

/* Print the last `want` non-empty lines of `text`, each as a tagged line. */
static void print_tail(const char *obj, const char *prog, const char *text, int want)
{
	const char *end = text + strlen(text);
	const char *start = end;
	int found = 0;

	while (start > text && found < want) {
		const char *p = start;

		while (p > text && (p[-1] == '\n' || p[-1] == ' ' || p[-1] == '\t'))
			p--;
		if (p == text)
			break;
		while (p > text && p[-1] != '\n')
			p--;
		start = p;
		found++;
	}
	while (start < end) {
		const char *nl = strchr(start, '\n');
		size_t len = nl ? (size_t)(nl - start) : strlen(start);

		while (len > 0 && (start[len - 1] == '\r' || start[len - 1] == ' '))
			len--;
		if (len > 0)
			printf("LOADALL-LOG %s %s %.*s\n", obj, prog, (int)len, start);
		if (!nl)
			break;
		start = nl + 1;
	}
}

static struct bpf_object *open_object(const char *path)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);

	if (!obj) {
		int err = errno;

		fprintf(stderr, "loadall: %s: cannot open: %s\n", path, strerror(err));
		printf("LOADALL-ERROR %s cannot open: %s\n", base_name(path), strerror(err));
	}
	return obj;
}

/* Load program number `idx` of `path` alone; returns 0 if the kernel took it. */
static int load_one(const char *path, int idx)
{
	const char *obj_name = base_name(path);
	struct bpf_program *prog, *target = NULL;
	struct bpf_object *obj;
	char name[256];
	int i = 0, err;

	obj = open_object(path);
	if (!obj)
		return -1;
	bpf_object__for_each_program(prog, obj) {
		if (i++ == idx)
			target = prog;
		else
			bpf_program__set_autoload(prog, false);
	}
	if (!target) {
		bpf_object__close(obj);
		return -1;
	}
	snprintf(name, sizeof(name), "%s", bpf_program__name(target));
	bpf_program__set_autoload(target, true);
	vlog[0] = '\0';
	libbpf_msgs[0] = '\0';
	libbpf_len = 0;
	bpf_program__set_log_buf(target, vlog, LOG_SIZE);
	err = bpf_object__load(obj);
	if (err == 0) {
		printf("LOADALL %s %s OK\n", obj_name, name);
	} else {
		int e = err < 0 ? -err : err;
		size_t used = strlen(vlog);
		char why[256];

		libbpf_strerror(e, why, sizeof(why));
		if (e == ENOSPC && used + 1 >= LOG_SIZE)
			snprintf(why, sizeof(why), "verifier log over %u MiB (the kernel then "
				 "returns ENOSPC; its own error is in the last lines)", LOG_SIZE >> 20);
		printf("LOADALL %s %s FAIL %d %s %s\n", obj_name, name, e, errno_name(e), why);
		/* no verifier log: the load stopped before the verifier (relocations, maps,
		 * attach target, privileges), and libbpf's messages say where */
		print_tail(obj_name, name, used ? vlog : libbpf_msgs, TAIL_LINES);
	}
	fflush(stdout);
	bpf_object__close(obj);
	return err ? 1 : 0;
}

static int count_programs(const char *path, int list)
{
	struct bpf_program *prog;
	struct bpf_object *obj;
	int n = 0;

	obj = open_object(path);
	if (!obj)
		return -1;
	bpf_object__for_each_program(prog, obj) {
		if (list)
			printf("LIST %s %s %s\n", base_name(path), bpf_program__name(prog),
			       bpf_program__section_name(prog));
		n++;
	}
	bpf_object__close(obj);
	return n;
}

int main(int argc, char **argv)
{
	int list = 0, first = 1, ok = 0, failed = 0, broken = 0;

	if (argc > 1 && strcmp(argv[1], "--list") == 0) {
		list = 1;
		first = 2;
	}
	if (first >= argc || (argc > 1 && argv[1][0] == '-' && !list)) {
		fprintf(stderr, "usage: loadall [--list] OBJECT.bpf.o...\n");
		return 2;
	}
	libbpf_set_print(on_libbpf_print);
	if (!list) {
		vlog = malloc(LOG_SIZE);
		if (!vlog) {
			fprintf(stderr, "loadall: no memory for the verifier log\n");
			return 2;
		}
	}
	for (int a = first; a < argc; a++) {
		int n = count_programs(argv[a], list);

		if (n < 0) {
			broken++;
			continue;
		}
		if (list)
			continue;
		printf("LOADALL-PROGS %s %d\n", base_name(argv[a]), n);
		fflush(stdout);
		for (int i = 0; i < n; i++) {
			int r = load_one(argv[a], i);

			if (r == 0)
				ok++;
			else
				failed++;
		}
	}
	if (!list)
		printf("LOADALL-SUMMARY %d %d\n", ok, failed);
	free(vlog);
	if (broken)
		return 2;
	return failed ? 1 : 0;
}
