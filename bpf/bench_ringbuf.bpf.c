// SPDX-License-Identifier: GPL-2.0
/*
 * The benchmark's baseline transport: the same record as the arena queue's
 * burst generator (a record without a path: struct ap_event_head), carried
 * by a BPF ring buffer (BPF_MAP_TYPE_RINGBUF) in its fastest mode,
 * BPF_RB_NO_WAKEUP, with the consumer polling.
 */
#include "common.bpf.h"
#include "event_fill.bpf.h"
#include "burst.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 32 << 20); /* the loader may resize before load */
} events SEC(".maps");

/* Every event takes a sequence number, delivered or dropped, as in evq. */
__u64 next_seq;
__u64 dropped;

static long ring_one(__u64 i, void *data)
{
	struct ap_burst_args *args = data;
	struct ap_event_head ev;

	ap_fill_burst(&ev, i);
	ev.seq = __sync_fetch_and_add(&next_seq, 1);
	if (bpf_ringbuf_output(&events, &ev, sizeof(ev), BPF_RB_NO_WAKEUP) == 0) {
		args->published++;
	} else {
		__sync_fetch_and_add(&dropped, 1);
		args->dropped++;
	}
	return 0;
}

SEC("syscall")
int ring_burst(struct ap_burst_args *args)
{
	return ap_burst_run(args, ring_one);
}
