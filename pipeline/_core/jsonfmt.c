// SPDX-License-Identifier: MIT
/*
 * JSON lines for event records. Names are bytes: valid UTF-8 goes out as
 * text with JSON escapes; a name that is not valid UTF-8 goes out with each
 * bad byte shown as U+FFFD in "name" and, beside it, "name_b64" holding the
 * exact bytes. So: exact bytes = base64-decode(name_b64) when present, else
 * the UTF-8 encoding of name. comm and path get the same treatment
 * (comm_b64, path_b64), and so does the cgroup's path (cgroup_b64).
 */
#include "jsonfmt.h"

#include <string.h>

static const char *const trigger_names[] = {
	[AP_TRIGGER_NONE] = "none",	      [AP_TRIGGER_LSM] = "lsm",
	[AP_TRIGGER_TRACEPOINT] = "tracepoint", [AP_TRIGGER_BURST] = "burst",
	[AP_TRIGGER_BENCH] = "bench",
};

static const char *const syscall_names[] = {
	[AP_SYS_NONE] = "none",
	[AP_SYS_OPEN] = "open",
	[AP_SYS_OPENAT] = "openat",
	[AP_SYS_OPENAT2] = "openat2",
	[AP_SYS_CREAT] = "creat",
	[AP_SYS_MKNOD] = "mknod",
	[AP_SYS_MKNODAT] = "mknodat",
	[AP_SYS_MKDIR] = "mkdir",
	[AP_SYS_MKDIRAT] = "mkdirat",
	[AP_SYS_INODE_CREATE] = "inode_create",
	[AP_SYS_INODE_MKNOD] = "inode_mknod",
	[AP_SYS_INODE_MKDIR] = "inode_mkdir",
	[AP_SYS_GETPPID] = "getppid",
};

const char *ap_trigger_name(unsigned trigger)
{
	if (trigger < sizeof(trigger_names) / sizeof(trigger_names[0]) && trigger_names[trigger])
		return trigger_names[trigger];
	return "unknown";
}

const char *ap_syscall_name(unsigned syscall)
{
	if (syscall < AP_SYS__COUNT && syscall_names[syscall])
		return syscall_names[syscall];
	return "unknown";
}

static inline char *put_lit(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}
#define PUT(p, lit) put_lit((p), (lit), sizeof(lit) - 1)

/* "00" "01" ... "99": two digits per division halves the work for the
 * 19-digit timestamps every record carries. */
static const char digit_pairs[201] =
	"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
	"8081828384858687888990919293949596979899";

static inline char *put_u64(char *p, uint64_t v)
{
	char tmp[20];
	int n = 20;

	while (v >= 100) {
		unsigned d = (unsigned)(v % 100) * 2;

		v /= 100;
		tmp[--n] = digit_pairs[d + 1];
		tmp[--n] = digit_pairs[d];
	}
	if (v >= 10) {
		tmp[--n] = digit_pairs[v * 2 + 1];
		tmp[--n] = digit_pairs[v * 2];
	} else {
		tmp[--n] = (char)('0' + v);
	}
	memcpy(p, tmp + n, (size_t)(20 - n));
	return p + (20 - n);
}

static inline char *put_i64(char *p, int64_t v)
{
	if (v < 0) {
		*p++ = '-';
		return put_u64(p, (uint64_t)0 - (uint64_t)v);
	}
	return put_u64(p, (uint64_t)v);
}

static inline char *put_bool(char *p, int v)
{
	return v ? PUT(p, "true") : PUT(p, "false");
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static inline size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		unsigned char lo = 0x80, hi = 0xbf;

		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		if (c == 0xed)
			hi = 0x9f; /* UTF-16 surrogates */
		return n >= 3 && s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		unsigned char lo = 0x80, hi = 0xbf;

		if (c == 0xf0)
			lo = 0x90;
		if (c == 0xf4)
			hi = 0x8f; /* above U+10FFFF */
		return n >= 4 && s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 &&
				       (s[3] & 0xc0) == 0x80
			       ? 4
			       : 0;
	}
	return 0;
}

static const char hexdigits[] = "0123456789abcdef";

static char *put_str(char *p, const unsigned char *s, size_t n, int *valid);

char *ap_json_put_str(char *p, const unsigned char *s, size_t n, int *valid)
{
	return put_str(p, s, n, valid);
}

/* A JSON string body; returns the end, sets *valid to 0 on bad UTF-8. */
static char *put_str(char *p, const unsigned char *s, size_t n, int *valid)
{
	size_t i = 0;

	*valid = 1;
	while (i < n) {
		unsigned char c = s[i];

		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
			*p++ = (char)c;
			i++;
			continue;
		}
		if (c < 0x80) {
			*p++ = '\\';
			switch (c) {
			case '"': *p++ = '"'; break;
			case '\\': *p++ = '\\'; break;
			case '\n': *p++ = 'n'; break;
			case '\r': *p++ = 'r'; break;
			case '\t': *p++ = 't'; break;
			case '\b': *p++ = 'b'; break;
			case '\f': *p++ = 'f'; break;
			default:
				p = PUT(p, "u00");
				*p++ = hexdigits[c >> 4];
				*p++ = hexdigits[c & 15];
			}
			i++;
			continue;
		}
		size_t len = utf8_seq_len(s + i, n - i);
		if (len) {
			p = put_lit(p, (const char *)s + i, len);
			i += len;
		} else {
			p = PUT(p, "\\ufffd");
			*valid = 0;
			i++;
		}
	}
	return p;
}

static char *put_b64(char *p, const unsigned char *s, size_t n);

char *ap_json_put_b64(char *p, const unsigned char *s, size_t n)
{
	return put_b64(p, s, n);
}

static const char b64digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *put_b64(char *p, const unsigned char *s, size_t n)
{
	size_t i = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];

		*p++ = b64digits[v >> 18];
		*p++ = b64digits[(v >> 12) & 63];
		*p++ = b64digits[(v >> 6) & 63];
		*p++ = b64digits[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)s[i] << 16;

		*p++ = b64digits[v >> 18];
		*p++ = b64digits[(v >> 12) & 63];
		*p++ = '=';
		*p++ = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;

		*p++ = b64digits[v >> 18];
		*p++ = b64digits[(v >> 12) & 63];
		*p++ = b64digits[(v >> 6) & 63];
		*p++ = '=';
	}
	return p;
}

static size_t bounded_len(const char *s, size_t cap)
{
	const char *z = memchr(s, 0, cap);

	return z ? (size_t)(z - s) : cap;
}

size_t ap_format_cgroup_fields(char *out, const unsigned char *path, size_t path_len,
			       const char *runtime, size_t runtime_len, const char *cid,
			       size_t cid_len)
{
	char *p = out;
	int ok;

	if (!path) {
		p = PUT(p, ",\"cgroup\":null");
	} else {
		p = PUT(p, ",\"cgroup\":\"");
		p = put_str(p, path, path_len, &ok);
		*p++ = '"';
		if (!ok) {
			p = PUT(p, ",\"cgroup_b64\":\"");
			p = put_b64(p, path, path_len);
			*p++ = '"';
		}
	}
	/* present only for a container, like the *_b64 keys: every line pays
	 * for the bytes it carries. The runtime and id come from a fixed set of
	 * names and a checked character set (pipeline/cgroups.py). */
	if (runtime) {
		p = PUT(p, ",\"container_runtime\":\"");
		p = put_str(p, (const unsigned char *)runtime, runtime_len, &ok);
		p = PUT(p, "\",\"container_id\":\"");
		p = put_str(p, (const unsigned char *)cid, cid_len, &ok);
		*p++ = '"';
	}
	return (size_t)(p - out);
}

size_t ap_format_event(char *out, const struct ap_event *ev, int64_t wall_offset_ns)
{
	return ap_format_event_cg(out, ev, wall_offset_ns, NULL, 0);
}

size_t ap_format_event_cg(char *out, const struct ap_event *ev, int64_t wall_offset_ns,
			  const char *cg_fields, size_t cg_len)
{
	/* Copy the fields first: the record stays in a slot producers may reuse
	 * only after release, but reading each field once keeps lengths and
	 * bytes consistent with each other. */
	size_t name_len = ev->name_len < AP_NAME_KEEP ? ev->name_len : AP_NAME_KEEP;
	size_t comm_len = bounded_len(ev->comm, AP_COMM_LEN);
	size_t path_len = ev->path_len < AP_PATH_CAP ? ev->path_len : AP_PATH_CAP;
	const unsigned char *name = (const unsigned char *)ev->name;
	const unsigned char *comm = (const unsigned char *)ev->comm;
	/* the path ends at the end of its field */
	const unsigned char *path = (const unsigned char *)ev->path + (AP_PATH_CAP - path_len);
	const char *s;
	char *p = out;
	int name_ok, comm_ok, path_ok;

	p = PUT(p, "{\"seq\":");
	p = put_u64(p, ev->seq);
	p = PUT(p, ",\"ts_ns\":");
	p = put_u64(p, ev->ts_ns);
	p = PUT(p, ",\"wall_ns\":");
	p = put_i64(p, (int64_t)ev->ts_ns + wall_offset_ns);
	p = PUT(p, ",\"cpu\":");
	p = put_u64(p, ev->cpu);
	p = PUT(p, ",\"pid\":");
	p = put_u64(p, ev->pid);
	p = PUT(p, ",\"tid\":");
	p = put_u64(p, ev->tid);
	p = PUT(p, ",\"ppid\":");
	p = put_u64(p, ev->ppid);
	p = PUT(p, ",\"uid\":");
	p = put_u64(p, ev->uid);
	p = PUT(p, ",\"comm\":\"");
	p = put_str(p, comm, comm_len, &comm_ok);
	p = PUT(p, "\",\"trigger\":\"");
	s = ap_trigger_name(ev->trigger);
	p = put_lit(p, s, strlen(s));
	p = PUT(p, "\",\"syscall\":\"");
	s = ap_syscall_name(ev->syscall);
	p = put_lit(p, s, strlen(s));
	p = PUT(p, "\",\"ret\":");
	p = put_i64(p, ev->ret);
	p = PUT(p, ",\"mode\":");
	p = put_u64(p, ev->mode);
	p = PUT(p, ",\"open_flags\":");
	p = put_u64(p, ev->open_flags);
	p = PUT(p, ",\"excl\":");
	p = put_bool(p, ev->flags & AP_EV_EXCL);
	p = PUT(p, ",\"truncated\":");
	p = put_bool(p, ev->flags & AP_EV_TRUNCATED);
	p = PUT(p, ",\"path_truncated\":");
	p = put_bool(p, ev->flags & AP_EV_PATH_TRUNCATED);
	p = PUT(p, ",\"mnt_ns\":");
	p = put_u64(p, ev->mnt_ns);
	p = PUT(p, ",\"cgroup_id\":");
	p = put_u64(p, ev->cgroup_id);
	/* only in runs that published filters: the generation that judged it */
	if (ev->flags & AP_EV_FILTER_GEN) {
		p = PUT(p, ",\"filter_gen\":");
		p = put_u64(p, ev->filter_gen);
	}
	if (cg_fields)
		p = put_lit(p, cg_fields, cg_len);
	p = PUT(p, ",\"name\":\"");
	p = put_str(p, name, name_len, &name_ok);
	p = PUT(p, "\",\"path\":\"");
	p = put_str(p, path, path_len, &path_ok);
	*p++ = '"';
	if (!name_ok) {
		p = PUT(p, ",\"name_b64\":\"");
		p = put_b64(p, name, name_len);
		*p++ = '"';
	}
	if (!path_ok) {
		p = PUT(p, ",\"path_b64\":\"");
		p = put_b64(p, path, path_len);
		*p++ = '"';
	}
	if (!comm_ok) {
		p = PUT(p, ",\"comm_b64\":\"");
		p = put_b64(p, comm, comm_len);
		*p++ = '"';
	}
	p = PUT(p, "}\n");
	return (size_t)(p - out);
}
