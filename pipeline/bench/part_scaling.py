"""scaling: throughput of one arena structure against the number of user worker processes,
from the `stress` command (every run checked exactly), and the arena's memory sampled
through one stress run.

Each round runs every (structure, workers) pair once, in the same order. While the hash map
runs with the most workers, this process attaches to the arena the stress command pins and
samples its heap every SAMPLE_S seconds.
"""

from __future__ import annotations

import json
import mmap
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
# each structure's stress flags besides the workers and the duration
STRUCTURES: dict[str, list[str]] = {
    # keyed: every worker on the whole key space, 50% search, 25% insert, 25% delete
    "hash": ["-w", "mixed", "--keys", "65536", "--capacity", "262144"],
    # producers are the workers; one user consumer
    "mpmc": ["-w", "produce-consume", "--consumers", "1", "--capacity", "65536"],
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


def _stress(structure: str, workers: int, duration: float,
            sample: bool) -> tuple[dict[str, Any], list[dict[str, float]]]:
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "stress", structure,
                          *STRUCTURES[structure], "-t", str(workers), "-k", "0",
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


def run(ctx: Context) -> PartResult:
    workers = [1, 2] if ctx.quick else [1, 2, 4]
    duration = ctx.pick(0.2, 1.0)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        s: {w: [] for w in workers} for s in STRUCTURES}
    memory: list[dict[str, float]] = []
    ctx.progress.start("scaling", ctx.rounds)
    for r in range(ctx.rounds):
        for s in STRUCTURES:
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
        "memory": {"structure": "hash", "workers": workers[-1], "samples": memory}})
    q = res.question("How does throughput grow with user worker processes?",
                     note=f"`python -m pipeline stress`, {duration} s a run, no kernel "
                          "threads, verified (-v); hash: mixed workload on one key space; "
                          "mpmc: workers produce, one process consumes (its pops count too)")
    for s, by in runs.items():
        for w, rs in by.items():
            q.add(f"{s}, {w} worker(s)", "M ops/s", [x["user"]["ops_per_s"] / 1e6 for x in rs])
    if 1 in workers and 2 in workers:
        per = {w: [x["user"]["ops_per_s"] for x in runs["hash"][w]] for w in (1, 2)}
        q.add("hash: 2 workers / 1 worker", "x", ratios(per[2], per[1]),
              Target(">=", SCALING_TARGET))
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
