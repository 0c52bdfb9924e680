"""Stress-driver scaling: the hash map under the read-mostly workload (kernel threads
off), aggregate user operations per second with 2 worker processes against 1, in
alternating rounds so that both see the same machine; the median ratio and its
range. Beside it, the benchmark's single-thread figure for the same structure and
mix (ds_exec batches, pipeline.bench._native), which the 1-worker stress run is
held to (at least half of it).

`run(rounds, seconds, keys)` returns the figures, `report(res)` the lines; nothing
asserts a time. Runs as root (it loads BPF programs and pins the arena).
"""

from __future__ import annotations

import statistics
from typing import Any

from ..stress_config import WORKLOADS, StressConfig
from ..stress_report import build
from ..stress_run import run as stress_run

TARGET_SCALING = 1.8  # 2 workers against 1, on 2 cores
TARGET_VS_BENCH = 0.5  # 1 worker against the benchmark's single thread


def _one(workers: int, seconds: float, keys: int, seed: int) -> int:
    cfg = StressConfig(structure="hash", workers=workers, threads=1, kernel_threads=0,
                       duration=seconds, workload="read-mostly", keys=keys, seed=seed,
                       capacity=keys * 4)
    out = stress_run(cfg)
    ops: int = build(out, None, None)["user"]["ops_per_s"]
    return ops


def bench_single_thread(keys: int, rounds: int) -> float:
    """The benchmark's user single-thread hash figure, weighted to the read-mostly mix
    (time per op is what adds up: 1 / sum(share / rate))."""
    from . import _native

    ins, dele, search = WORKLOADS["read-mostly"]
    total = ins + dele + search
    rates = []
    for _ in range(rounds):
        w = _native.dsbench_hash(keys, 4096)["ways"]["arena_user"]
        per = {op: 1e9 / w[op]["ns"] for op in ("insert", "delete", "search")}
        rates.append(1.0 / (ins / total / per["insert"] + dele / total / per["delete"]
                            + search / total / per["search"]))
    median: float = statistics.median(rates)
    return median


def run(rounds: int = 5, seconds: float = 2.0, keys: int = 65536) -> dict[str, Any]:
    one: list[int] = []
    two: list[int] = []
    for r in range(rounds):
        # alternate which goes first, so a drift in the machine's load hits both alike
        order = (1, 2) if r % 2 == 0 else (2, 1)
        for n in order:
            (one if n == 1 else two).append(_one(n, seconds, keys, seed=r + 1))
    ratios = [b / a for a, b in zip(one, two, strict=True) if a]
    single = bench_single_thread(keys, max(1, rounds // 2))
    return {
        "keys": keys, "rounds": rounds, "seconds": seconds,
        "one_worker_ops_per_s": statistics.median(one),
        "two_workers_ops_per_s": statistics.median(two),
        "rounds_one": one, "rounds_two": two,
        "ratio": statistics.median(ratios) if ratios else 0.0,
        "ratio_min": min(ratios, default=0.0), "ratio_max": max(ratios, default=0.0),
        "target": TARGET_SCALING,
        "bench_single_thread_ops_per_s": single,
        "one_worker_vs_bench": statistics.median(one) / single if single else 0.0,
        "target_vs_bench": TARGET_VS_BENCH,
    }


def report(res: dict[str, Any]) -> list[str]:
    return [
        f"stress scaling (hash, read-mostly, {res['keys']:,} keys, kernel threads off, "
        f"{res['rounds']} alternating rounds of {res['seconds']} s, median):",
        f"  1 worker   {res['one_worker_ops_per_s'] / 1e6:7.2f} M ops/s",
        f"  2 workers  {res['two_workers_ops_per_s'] / 1e6:7.2f} M ops/s",
        f"  ratio 2/1: {res['ratio']:.2f}x (min {res['ratio_min']:.2f}, max "
        f"{res['ratio_max']:.2f}; target >= {res['target']}x)",
        f"  benchmark single thread, same mix: {res['bench_single_thread_ops_per_s'] / 1e6:.2f}"
        f" M ops/s; 1 worker is {res['one_worker_vs_bench']:.2f} of it (target >= "
        f"{res['target_vs_bench']})",
    ]


if __name__ == "__main__":
    import json
    import sys

    from ..kernel import check_privileges, ensure_mounts

    check_privileges()
    ensure_mounts()
    result = run(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
    print("\n".join(report(result)))
    print(json.dumps(result))
