// SPDX-License-Identifier: MIT
#include "procfmt.h"

#include <stdio.h>
#include <string.h>

#include "jsonfmt.h"
#include "proc.h"

int ap_procfmt_begin(struct ap_procfmt *pf)
{
	if (!pf->table || !pf->attached)
		return -1;
	return ds_enter(&pf->c) == DS_OK ? 0 : -1;
}

void ap_procfmt_end(struct ap_procfmt *pf)
{
	ds_exit(&pf->c);
}

static int lookup(struct ap_procfmt *pf, uint64_t pid, struct ap_proc *e)
{
	ap_u64 addr = 0;

	if (ds_hash_search(&pf->c, (struct ds_hash *)pf->table, pid, &addr) != DS_OK || !addr)
		return 0;
	return ap_proc_read(addr, pid, e);
}

static char *put_comm(char *p, const struct ap_proc *e)
{
	int valid;

	*p++ = '"';
	p = ap_json_put_str(p, (const unsigned char *)e->comm, strnlen(e->comm, AP_PROC_COMM_LEN),
			    &valid);
	*p++ = '"';
	return p;
}

/* `,"<key>":"<path>"` (or null when the entry holds none), `<key>_b64` beside
 * it when the path is not valid UTF-8, `<key>_truncated` when only its last
 * components are known: the record's rules for path. */
static char *put_exe(char *p, const char *key, const struct ap_proc *e)
{
	uint32_t len = e->exe_len <= AP_PROC_EXE_CAP ? e->exe_len : 0;
	const unsigned char *s = (const unsigned char *)e->exe + AP_PROC_EXE_CAP - len;
	int valid = 1;

	if (!len) {
		p += sprintf(p, ",\"%s\":null", key);
		return p;
	}
	p += sprintf(p, ",\"%s\":\"", key);
	p = ap_json_put_str(p, s, len, &valid);
	*p++ = '"';
	if (!valid) {
		p += sprintf(p, ",\"%s_b64\":\"", key);
		p = ap_json_put_b64(p, s, len);
		*p++ = '"';
	}
	p += sprintf(p, ",\"%s_truncated\":%s", key,
		     e->flags & AP_PROC_EXE_TRUNCATED ? "true" : "false");
	return p;
}

size_t ap_procfmt_fields(struct ap_procfmt *pf, char *out, const struct ap_event *ev)
{
	struct ap_proc e;
	char *p = out;
	uint64_t pid;
	uint32_t n;

	/* the creating task itself: known to the table, or not (never guessed) */
	if (lookup(pf, ev->tid, &e)) {
		p += sprintf(p, ",\"proc\":\"%s\"", e.flags & AP_PROC_EXITED ? "exited" : "known");
		p = put_exe(p, "exe", &e);
	} else {
		p += sprintf(p, ",\"proc\":\"missing\"");
	}
	if (ev->ppid && lookup(pf, ev->ppid, &e)) {
		p += sprintf(p, ",\"parent_comm\":");
		p = put_comm(p, &e);
		p = put_exe(p, "parent_exe", &e);
		p += sprintf(p, ",\"parent_exited\":%s", e.flags & AP_PROC_EXITED ? "true" : "false");
	}
	/* the parent, its parent, ...: up to depth, ending at pid 1 or at the
	 * first process the table does not know, which is marked as missing */
	p += sprintf(p, ",\"ancestors\":[");
	for (pid = ev->ppid, n = 0; pid && n < pf->depth; n++) {
		if (n)
			*p++ = ',';
		if (!lookup(pf, pid, &e)) {
			p += sprintf(p, "{\"pid\":%llu,\"missing\":true}", (unsigned long long)pid);
			break;
		}
		p += sprintf(p, "{\"pid\":%llu,\"comm\":", (unsigned long long)pid);
		p = put_comm(p, &e);
		p = put_exe(p, "exe", &e);
		if (e.flags & AP_PROC_EXITED)
			p += sprintf(p, ",\"exited\":true");
		*p++ = '}';
		if (pid == 1)
			break;
		pid = e.ppid;
	}
	*p++ = ']';
	return (size_t)(p - out);
}

/* e leaves the table, unless a fork took its pid over (the fork deleted e's
 * key and inserted its own entry), and is retired: the caller is inside an
 * epoch section. The key goes only while it still maps to e (one
 * compare-and-swap, ds_hash_delete_val), so a fork that takes the pid at any
 * moment keeps its entry: there is no step between a check and the delete
 * where it could be lost. */
static void reap_one(struct ap_procfmt *pf, struct ap_proc *e)
{
	ds_hash_delete_val(&pf->c, (struct ds_hash *)pf->table, e->pid, (ap_u64)e);
	ds_retire(&pf->c, e);
}

uint64_t ap_procfmt_reap(struct ap_procfmt *pf, uint64_t head)
{
	uint64_t top, *link, n = 0;

	if (!pf->table || !pf->attached || !pf->counts)
		return 0;
	if (ds_enter(&pf->c) != DS_OK)
		return 0;
	/* take the whole stack: the kernel only pushes, so no ABA */
	top = __atomic_exchange_n(&pf->counts->exited, 0, __ATOMIC_ACQ_REL);
	while (top) {
		struct ap_proc *e = (struct ap_proc *)top;

		top = e->exit_next;
		e->exit_next = pf->pending;
		pf->pending = (uint64_t)e;
		pf->npending++;
	}
	link = &pf->pending;
	while (*link) {
		struct ap_proc *e = (struct ap_proc *)*link;

		if (e->exit_mark <= head) {
			*link = e->exit_next;
			reap_one(pf, e);
			pf->npending--;
			n++;
		} else {
			link = &e->exit_next;
		}
	}
	ds_exit(&pf->c);
	if (n)
		__atomic_fetch_add(&pf->counts->reaped, n, __ATOMIC_RELAXED);
	return n;
}
