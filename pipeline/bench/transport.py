"""Kernel-to-user transport: the arena queue against a BPF ring buffer, same
record, same burst producer, producer and consumer on different CPUs at once,
both consumed in C."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .progress import Progress


def run_transport(events: int, rounds: int, per_call: int = 4096,
                  progress: Progress | None = None) -> dict[str, Any]:
    from . import _native

    if progress:
        progress.start("transport", rounds)
    arena_runs: list[dict[str, Any]] = []
    ring_runs: list[dict[str, Any]] = []
    for _ in range(rounds):
        # alternate, so drift in the machine's speed hits both alike
        arena_runs.append(_native.bench_arena(events, per_call, 0, 1, 32768, 65536))
        ring_runs.append(_native.bench_ringbuf(events, per_call, 32 << 20, 0, 1))
        if progress:
            progress.tick()

    def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
        rates = [r["delivered"] / r["seconds"] for r in runs]
        return {
            "events_per_s": statistics.median(rates),
            "rates": rates,
            "delivered": sum(r["delivered"] for r in runs),
            "dropped": sum(r["dropped"] for r in runs),
            "duplicates": sum(r["duplicates"] for r in runs),
            "strays": sum(r["strays"] for r in runs),
            "unseen": sum(r["unseen"] for r in runs),
            # per round: events not delivered exactly once
            "faults": [r["duplicates"] + r["strays"] + r["unseen"]
                       + abs(r["events"] - r["delivered"] - r["dropped"]) for r in runs],
            "runs": runs,
            "exact": all(r["duplicates"] == 0 and r["strays"] == 0 and r["unseen"] == 0
                         and r["delivered"] + r["dropped"] == r["events"] for r in runs),
        }

    arena, ring = summary(arena_runs), summary(ring_runs)
    return {"events_per_round": events, "rounds": rounds, "arena_queue": arena,
            "ringbuf_no_wakeup": ring, "ratio": arena["events_per_s"] / ring["events_per_s"]}
