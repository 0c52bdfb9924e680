/* SPDX-License-Identifier: MIT */
/* Kernel-to-user transport benchmark: the arena queue against a BPF ring
 * buffer, same record, same burst producer, producer and consumer on
 * different CPUs at once, both consumed in C. */
#ifndef AP_TRANSPORT_H
#define AP_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "session.h"

struct ap_transport_result {
	uint64_t events;    /* sequence numbers handed out */
	uint64_t delivered; /* records the consumer read */
	uint64_t dropped;   /* counted as dropped by the producer */
	uint64_t duplicates;/* sequence numbers read twice (must be 0) */
	uint64_t strays;    /* sequence numbers outside the run (must be 0) */
	uint64_t unseen;    /* numbers neither read nor counted dropped (must be 0) */
	double seconds;
};

int ap_bench_arena(struct ap_session *s, uint64_t events, uint64_t per_call, int prod_cpu,
		   int cons_cpu, struct ap_transport_result *r, char *err, size_t errlen);
int ap_bench_ringbuf(uint64_t events, uint64_t per_call, uint64_t ring_bytes, int prod_cpu,
		     int cons_cpu, struct ap_transport_result *r, char *err, size_t errlen);

#endif
