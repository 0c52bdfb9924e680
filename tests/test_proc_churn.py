"""The process table over 100,000 short-lived processes, in a real run: every exit
removes its entry (kept for the reader until it is past the exit, then reaped), the
table's counters balance exactly, and the arena memory the table holds is bounded by
what is live in it, not by how many processes came and went."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import StartPipeline, needs_root

pytestmark = needs_root



def build_forkload() -> Path:
    """pipeline/bench/forkload.c (forks children that exit at once), built as the
    benchmark builds its load programs."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (make setup installs it)")
    from pipeline.bench.tools import program

    return program("forkload")


def fork_many(exe: Path, n: int, out: Path, conc: int = 8) -> tuple[int, list[int]]:
    """n children that exit at once, at most conc alive at a time: (forker's pid, pids)."""
    t = time.monotonic()
    p = subprocess.Popen([str(exe), str(n), str(conc), str(out)])
    assert p.wait(300) == 0
    print(f"{n} processes in {time.monotonic() - t:.1f} s")
    raw = out.read_bytes()
    return p.pid, list(struct.unpack(f"<{len(raw) // 4}I", raw))


def settled(arena: Any, tries: int = 2000) -> tuple[list[Any], dict[str, int]]:
    """A consistent cut of the table and its counters: a snapshot between two readings of
    the counters that are equal (no fork, exit or reap of anyone's happened meanwhile), with
    no exited entry still waiting for the reader (the run reaps every 0.1 s)."""
    from pipeline import proctab

    for _ in range(tries):
        c0 = proctab.counts(arena)
        snap = proctab.snapshot(arena)
        c1 = proctab.counts(arena)
        if c0 == c1 and not any(p.exited for p in snap):
            return snap, c1
        time.sleep(0.01)
    raise AssertionError(f"the table never held still: {proctab.counts(arena)}")


def balance(snap: list[Any], c: dict[str, int], seeded: int) -> None:
    """Every key inserted (seeded, or by a fork) left through exactly one exit, or through a
    fork that found it stale, or is in the table now."""
    assert len(snap) == seeded + c["forks"] - c["exits"] - c["stale"], (len(snap), seeded, c)


def live_objects(h: dict[str, int]) -> int:
    return h["allocs"] - h["frees"]


def test_exits_remove_entries_and_memory_stays_bounded(pipeline_proc: StartPipeline,
                                                       pin_root: Path, tmp_path: Path) -> None:
    from pipeline.ds import Arena

    exe = build_forkload()
    pl = pipeline_proc("--trigger", "none", "--process-table", "--ancestors", "2",
                       "--pin-dir", str(pin_root))
    line = next(ln for ln in pl.lines if "seeded from /proc" in ln)
    seeded = int(line.split("process table: ")[1].split()[0])
    a = Arena.attach(str(pin_root / str(pl.proc.pid)))
    points = []  # (entries, counters, heap) at the start, after 50,000 and after 100,000
    forkers: list[int] = []
    ours: set[int] = set()
    try:
        for i in range(3):
            if i:
                forker, pids = fork_many(exe, 50_000, tmp_path / f"pids{i}")
                forkers.append(forker)
                ours.update(pids)
            snap, c = settled(a)
            # everything retired so far freed: the heap holds only what is live
            assert a.synchronize()
            points.append((snap, c, a.heap_stats()))
    finally:
        a.close()
    assert pl.stop() == 0
    print("process table", pl.final()["process_table"], "heap", [h for _, _, h in points])
    (snap0, c0, h0), (_, _, h1), (snap2, c2, h2) = points
    for snap, c, _ in points:
        balance(snap, c, seeded)
    # none of the run's processes is left: a pid of theirs in the table now is another
    # process's (pids are reused), whose parent is not one of the forkers
    left = [p for p in snap2 if p.pid in forkers or (p.pid in ours and p.ppid in forkers)]
    assert left == []
    d = {k: c2[k] - c0[k] for k in c0}
    # each of the 100,000 children made an entry or was counted without memory (the
    # pools the tracepoint allocates from are refilled every 0.1 s), and each exit
    # of a child without an entry is counted missing; others' processes add to both
    assert d["forks"] + d["nomem"] >= 100_000 and d["missing"] >= d["nomem"]
    # every exit was kept for the reader and then reaped by it
    assert d["reaped"] == d["exits"] and d["busy"] == 0
    # no entry or hash node leaked: beyond two objects (entry, node) per entry, the heap
    # holds the same objects as at the start
    base = live_objects(h0) - 2 * len(snap0)
    assert [live_objects(h) - 2 * len(s) for s, _, h in points] == [base] * 3
    # pages in use: each holds a live object, is a large object's (the bucket array,
    # allocated before the start) or is one of the heap's 128 slots' current page (a
    # kernel CPU's or a user thread's); so at most the start's pages, one per small object
    # live now and one per slot: a bound set by the table's contents, not by how many
    # processes came and went
    slots = 128  # ARENA_HEAP_SLOTS
    for s, _, h in points[1:]:
        assert h["pages_in_use"] <= h0["pages_in_use"] + base + 2 * len(s) + slots, h
    # the pages ever backed: the first 50,000 grew them to what the churn needs at its
    # peak (entries exited but not yet reaped, retired but not yet freed, the pools); the
    # next 50,000 reuse those pages and need no more new ones than the first did
    assert h2["pages_hwm"] - h1["pages_hwm"] <= h1["pages_hwm"] - h0["pages_hwm"], (h0, h1, h2)


def test_refills_come_faster_during_fork_bursts() -> None:
    from pipeline.proctab import FAST_FORKS, REFILL_EVERY, REFILL_FASTEST, next_interval

    assert next_interval(REFILL_EVERY, FAST_FORKS, 0) == REFILL_FASTEST
    assert next_interval(REFILL_EVERY, 0, 1) == REFILL_FASTEST  # a fork found no memory
    assert next_interval(REFILL_FASTEST, FAST_FORKS - 1, 0) == 2 * REFILL_FASTEST
    assert next_interval(0.08, 0, 0) == REFILL_EVERY  # quiet: back to the slow pace
