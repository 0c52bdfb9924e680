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

size_t ap_procfmt_fields(struct ap_procfmt *pf, char *out, const struct ap_event *ev)
{
	struct ap_proc e;
	char *p = out;
	uint64_t pid;
	uint32_t n;

	/* the creating task itself: known to the table, or not (never guessed) */
	p += sprintf(p, ",\"proc\":\"%s\"", lookup(pf, ev->tid, &e) ? "known" : "missing");
	if (ev->ppid && lookup(pf, ev->ppid, &e)) {
		p += sprintf(p, ",\"parent_comm\":");
		p = put_comm(p, &e);
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
		*p++ = '}';
		if (pid == 1)
			break;
		pid = e.ppid;
	}
	*p++ = ']';
	return (size_t)(p - out);
}
