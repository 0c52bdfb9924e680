"""A sink plugin that works in the run's own arena, as a third party could write one.

Loaded by the tests through a real entry point (arena_pipeline.sinks) in the pipeline's
reader process. For every batch it inserts each event's (seq + 1 -> pid) into an arena hash
and searches them back, in C batches, while the kernel programs keep producing into the
queue of the same arena. At close it writes what the reader process sees in the arena: its
counts, the hash's items, the items of every other named structure (the pool's, filled by
worker processes attached through the pins) and the allocator's statistics.
"""

from __future__ import annotations

import json
from array import array
from typing import Any, ClassVar

from pipeline.sinks.base import REQUIRED, Batch, Option, Sink


class ArenaSink(Sink):
    name = "arenatest"
    options: ClassVar[dict[str, Option]] = {
        "output": Option(str, REQUIRED, "file the summary is written to at close"),
        "pool_instance": Option(str, "", "a hash to create for worker processes, by name"),
    }

    def use_arena(self, arena: Any) -> None:
        self.arena = arena
        self.seen = arena.create("hash", 0, "reader_seen")
        if self.config["pool_instance"]:
            arena.create("hash", 0, self.config["pool_instance"])

    async def start(self) -> None:
        self.inserted = self.found = self.value_mismatches = self.events = 0

    async def write(self, batch: Batch) -> None:
        if self.skip(batch):
            return
        events = [json.loads(line) for line in batch.data.splitlines()]
        keys = array("Q", [e["seq"] + 1 for e in events])
        pids = array("Q", [e["pid"] for e in events])
        self.inserted += self.seen.insert_many(keys, pids).ok
        found = self.seen.search_many(keys)
        self.found += found.ok
        self.value_mismatches += sum(1 for got, want in zip(found.ovals, pids, strict=True)
                                     if got != want)
        self.events += batch.count
        self.stats.delivered += batch.count

    async def close(self) -> None:
        others = {name: s.items() for name, s in self.arena.structures().items()
                  if name != "reader_seen"}
        out = {"events": self.events, "inserted": self.inserted, "found": self.found,
               "value_mismatches": self.value_mismatches, "seen": self.seen.items(),
               "others": others, "heap": self.arena.heap_stats(), "info": self.arena.info()}
        with open(self.config["output"], "w") as f:
            json.dump(out, f)
