"""scaling: throughput of one arena structure against the number of user worker processes,
from the `stress` command (every run checked exactly), and the arena's memory sampled
through one stress run.

Each round runs every (structure, workers) pair once, in the same order. While the hash map
runs with the most workers, this process attaches to the arena the stress command pins and
samples its heap every SAMPLE_S seconds.

Wall-clock ops/s on a shared machine says as much about the other processes as about the
structure, so each run also reports the CPU time its loops had (`cpus_used`: CPU seconds
per second of the run) and its ops per CPU-second, and the round records the load average:
2 workers that had less than 2 CPUs between them cannot reach 2x. The hash map's 1-worker
run is also set against the same structure and mix from one thread through ds_exec (the
benchmark's single-thread loop), measured in the same round.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .figures import PartResult, Target, ratios
from .parts import Context, Plot
from .tools import ROOT

TITLE = "scaling: arena structures against user worker processes (the stress command)"
PIN_DIR = "/sys/fs/bpf/arena-pipeline-bench-stress"
SAMPLE_S = 0.05
SCALING_TARGET = 1.8  # two workers on two CPUs: hash ops/s against one
SINGLE_TARGET = 0.5   # a verified 1-worker run against the single-thread loop
HASH_KEYS = 65536
BIG_KEYS = 1 << 20
# each run's structure and stress flags besides the workers and the duration
RUNS: dict[str, tuple[str, list[str]]] = {
    # keyed: every worker on the whole key space, read-mostly: 90% search, 5% insert,
    # 5% delete (the workload for the scaling target). 65,536 keys: the table and
    # its nodes (about 3.5 MiB) stay in each CPU's cache, so an operation costs about as
    # much as the cache lines the other worker wrote since (true sharing; the race part
    # measures what a line's move costs and how CK's and liburcu's tables scale on it)
    "hash": ("hash", ["-w", "read-mostly", "--keys", str(HASH_KEYS), "--capacity", "262144"]),
    # 2^20 keys (about 56 MiB): most lookups miss the caches with one worker already
    "hash, 2^20 keys": ("hash", ["-w", "read-mostly", "--keys", str(BIG_KEYS),
                                 "--capacity", str(BIG_KEYS), "--pages", "262144"]),
    # producers are the workers; one user consumer
    "mpmc": ("mpmc", ["-w", "produce-consume", "--consumers", "1", "--capacity", "65536"]),
}


class _Sampler(threading.Thread):
    """Heap statistics of the arena that process `pid` pins, until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[dict[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from ..ds import Arena

        where = Path(PIN_DIR) / str(self.pid)
        arena = None
        t0 = time.monotonic()
        while not self.stop.is_set() and arena is None:
            if (where / "arena").exists():
                try:
                    arena = Arena.attach(str(where))
                except Exception:  # pinned but not complete yet: try again
                    arena = None
            if arena is None:
                time.sleep(0.01)
        if arena is None:
            return
        try:
            while not self.stop.is_set():
                h = arena.heap_stats()
                self.samples.append({"t": time.monotonic() - t0,
                                     "bytes_in_use": h["bytes_in_use"],
                                     "pages_populated": h["pages_populated"],
                                     "allocs": h["allocs"], "frees": h["frees"]})
                time.sleep(SAMPLE_S)
        finally:
            arena.close()


def _stress(run: str, workers: int, duration: float,
            sample: bool) -> tuple[dict[str, Any], list[dict[str, float]]]:
    structure, flags = RUNS[run]
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "stress", structure,
                          *flags, "-t", str(workers), "-k", "0",
                          "--duration", str(duration), "-v", "--format", "json",
                          "--pin-dir", PIN_DIR], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    sampler = _Sampler(p.pid) if sample else None
    if sampler:
        sampler.start()
    out, err = p.communicate(timeout=600)
    if sampler:
        sampler.stop.set()
        sampler.join()
    if p.returncode != 0:
        raise RuntimeError(f"stress failed ({p.returncode}): {err.strip()[-300:]}")
    return dict(json.loads(out)), (sampler.samples if sampler else [])


def single_thread_ops(n: int, seed: int = 1) -> tuple[float, float]:
    """The hash map, read-mostly (90/5/5) on HASH_KEYS keys half present, from this thread
    through ds_exec: (ops per second, ops per CPU-second)."""
    from array import array

    from ..ds import Arena, Op

    rng = random.Random(seed)
    ops = bytes(rng.choices((Op.SEARCH, Op.INSERT, Op.DELETE), weights=(90, 5, 5), k=n))
    keys = array("Q", (rng.randrange(1, HASH_KEYS + 1) for _ in range(n)))
    with Arena(16384) as arena:
        s = arena.create("hash", 262144, name="ref")
        s.insert_many(array("Q", range(1, HASH_KEYS + 1, 2)))
        s.exec(ops, keys, keys, outputs=False)  # warm: the nodes and the code
        t0, c0 = time.perf_counter(), time.thread_time()
        s.exec(ops, keys, keys, outputs=False)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    return n / wall, n / cpu if cpu else 0.0


def run(ctx: Context) -> PartResult:
    workers = [1, 2] if ctx.quick else [1, 2, 4]
    duration = ctx.pick(0.2, 1.0)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        s: {w: [] for w in workers} for s in RUNS}
    memory: list[dict[str, float]] = []
    single: list[tuple[float, float]] = []
    load: list[float] = []
    ctx.progress.start("scaling", ctx.rounds)
    for r in range(ctx.rounds):
        load.append(os.getloadavg()[0])
        ctx.progress.note("hash, one thread")
        single.append(single_thread_ops(int(ctx.pick(200_000, 2_000_000))))
        for s in RUNS:
            for w in workers:
                ctx.progress.note(f"{s} x{w}")
                sample = r == ctx.rounds - 1 and s == "hash" and w == workers[-1]
                summary, samples = _stress(s, w, duration, sample)
                if sample:
                    memory = samples
                summary.pop("per_worker", None)
                runs[s][w].append(summary)
        ctx.progress.tick()
    res = PartResult(raw={"workers": workers, "duration": duration, "runs": {
        s: {str(w): rs for w, rs in by.items()} for s, by in runs.items()},
        "memory": {"structure": "hash", "workers": workers[-1], "samples": memory},
        "single_thread": [{"ops_per_s": a, "ops_per_cpu_s": b} for a, b in single],
        "load_average": load})
    q = res.question("How does throughput grow with user worker processes?",
                     note=f"`python -m pipeline stress`, {duration} s a run, no kernel "
                          "threads, verified (-v); hash: read-mostly workload on one key space of "
                          "65,536 keys (or 2^20); "
                          "mpmc: workers produce, one process consumes (its pops count too); "
                          "`CPUs used`: the loops' CPU time per second of the run")
    q.add("load average (1 min) at the start of the round", "", load)
    for s, by in runs.items():
        for w, rs in by.items():
            q.add(f"{s}, {w} worker(s)", "M ops/s", [x["user"]["ops_per_s"] / 1e6 for x in rs])
            q.add(f"{s}, {w} worker(s): CPUs used", "CPUs",
                  [x["user"].get("cpus_used", 0) for x in rs])
    if 1 in workers and 2 in workers:
        for name in ("hash", "hash, 2^20 keys"):
            per = {w: [x["user"]["ops_per_s"] for x in runs[name][w]] for w in (1, 2)}
            q.add(f"{name}: 2 workers / 1 worker", "x", ratios(per[2], per[1]),
                  Target(">=", SCALING_TARGET))
            cpu = {w: [x["user"].get("ops_per_cpu_s", 0) for x in runs[name][w]]
                   for w in (1, 2)}
            q.add(f"{name}: 2 workers / 1 worker, per CPU-second", "x", ratios(cpu[2], cpu[1]),
                  note="1.0: the structure and the loop lose nothing to a second worker; the "
                       "wall ratio then follows the CPUs the machine gave the run")
    one = res.question("Does a verified stress run reach the structure's single-thread speed?",
                       note="hash, read-mostly, 1 worker with -v, against the same mix from "
                            "one thread through ds_exec (the benchmark's loop), same round")
    one.add("hash: one thread, ds_exec", "M ops/s", [a / 1e6 for a, _ in single])
    one.add("hash: 1 stress worker / one thread", "x",
            ratios([x["user"]["ops_per_s"] for x in runs["hash"][1]], [a for a, _ in single]),
            Target(">=", SINGLE_TARGET))
    one.add("hash: 1 stress worker / one thread, per CPU-second", "x",
            ratios([x["user"].get("ops_per_cpu_s", 0) for x in runs["hash"][1]],
                   [b for _, b in single]))
    ok = res.question("Did every stress run pass its exact checks?")
    ok.add("runs whose invariants failed", "runs",
           [sum(0 if by[w][i]["ok"] else 1 for by in runs.values() for w in workers)
            for i in range(ctx.rounds)], Target("<=", 0))
    peak = res.question("How much arena memory does the hash map's stress run hold?",
                        note=f"sampled every {SAMPLE_S} s through the last round's "
                             f"{workers[-1]}-worker run, and at the end of each such run")
    peak.add("heap bytes in use at the end", "MiB",
             [x["memory"]["bytes_in_use"] / 2**20 for x in runs["hash"][workers[-1]]])
    return res


def plots(res: PartResult) -> list[Plot]:
    from .plots import lines

    workers = res.raw["workers"]
    series = []
    for s, by in res.raw["runs"].items():
        per = [[x["user"]["ops_per_s"] / 1e6 for x in by[str(w)]] for w in workers]
        series.append((s, [float(w) for w in workers], [sorted(p)[len(p) // 2] for p in per],
                       [min(p) for p in per], [max(p) for p in per]))
    out = [Plot("throughput_workers",
                lines("Arena structures under `stress`: throughput against worker processes",
                      [("median of rounds, min-max band", "user worker processes",
                        "M ops/s (all workers)", series)]))]
    mem = res.raw["memory"]["samples"]
    if mem:
        t = [m["t"] for m in mem]
        used = [m["bytes_in_use"] / 2**20 for m in mem]
        pop = [m["pages_populated"] * mmap.PAGESIZE / 2**20 for m in mem]
        out.append(Plot("arena_memory",
                        lines(f"Arena memory during a stress run (hash map, "
                              f"{res.raw['memory']['workers']} workers)",
                              [("heap, sampled", "seconds since the arena was pinned", "MiB",
                                [("bytes in use", t, used, used, used),
                                 ("pages populated", t, pop, pop, pop)])])))
    return out
