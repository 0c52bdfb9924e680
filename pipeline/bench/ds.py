"""The data-structure benchmark, side by side in one run.

- The arena hash map against a BPF_MAP_TYPE_HASH (same u64 keys, same u64
  values): from userspace, ds_exec batches against one system call per op
  (bpf_map_*_elem) and against batched system calls (bpf_map_*_batch); in
  the kernel, ds_run_hash against bpf_map_update/lookup/delete_elem in one
  SEC("syscall") program each.
- Every registered queue and stack from a kernel producer (SEC("syscall")
  batches on one CPU) to a user consumer (a C thread on another CPU):
  throughput, time per push and per pop, and the latency of one value into
  an empty structure; every value is accounted for exactly once. The
  pipeline's event queue is among them (`evq`, over (key, value) pairs), and
  runs once more with whole event records from its own burst producer
  (`evq event`).

All of it runs in C with the GIL released (pipeline/bench/_native/dsbench.c); this
module repeats rounds, takes medians and forms the ratios. Nothing asserts
a time.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

OPS = ("insert", "search", "delete")
# the targets the project holds these figures to
TARGET_PER_OP = 20.0  # arena user ops vs bpf_map_*_elem: at least this many times faster
TARGET_BATCH = 5.0  # arena user ops vs bpf_map_*_batch
TARGET_KERNEL = 1.0  # arena hash time / BPF hash time in one program: at most this


def _cpus() -> tuple[int, int]:
    """Producer and consumer CPUs: the first two this process may run on."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (-1, -1)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def run_hash(keys: int, rounds: int, per_call: int) -> dict[str, Any]:
    from . import _native

    runs = [_native.dsbench_hash(keys, per_call) for _ in range(rounds)]
    ways = list(runs[0]["ways"])
    ns = {w: {op: _median([r["ways"][w][op]["ns"] for r in runs]) for op in OPS} for w in ways}
    fails = {w: {op: sum(r["ways"][w][op]["fails"] for r in runs) for op in OPS} for w in ways}

    def ratios(num: str, den: str) -> dict[str, list[float]]:
        # per round: both sides measured in the same round
        return {op: [r["ways"][num][op]["ns"] / r["ways"][den][op]["ns"] for r in runs]
                for op in OPS}

    per_op = ratios("map_syscall", "arena_user")
    batch = ratios("map_batch", "arena_user")
    kernel = ratios("kernel_arena", "kernel_map")
    return {
        "keys": keys,
        "rounds": rounds,
        "per_call": per_call,
        "ns_per_op": ns,
        "fails": fails,
        "exact": all(v == 0 for f in fails.values() for v in f.values()),
        "vs_syscall": {op: _median(per_op[op]) for op in OPS},
        "vs_batch": {op: _median(batch[op]) for op in OPS},
        "kernel_ratio": {op: _median(kernel[op]) for op in OPS},
        "rounds_vs_syscall": per_op,
        "rounds_vs_batch": batch,
        "rounds_kernel_ratio": kernel,
    }


_MUST_BE_ZERO = ("duplicates", "strays", "malformed", "unseen", "order_errors", "left", "verify")


def run_queues(items: int, samples: int, rounds: int, per_call: int, capacity: int,
               with_evq: bool) -> dict[str, Any]:
    from . import _native

    prod, cons = _cpus()
    names = _native.dsbench_queue_names()
    runs = [_native.dsbench_queues(names, items, samples, per_call, capacity, prod, cons)
            for _ in range(rounds)]
    out: dict[str, Any] = {}
    for name in names:
        rs = [r[name] for r in runs]
        out[name] = {
            "values_per_s": _median([x["items"] / x["seconds"] for x in rs if x["seconds"] > 0]),
            "kernel_ns_per_push": _median([x["kernel_ns_per_push"] for x in rs]),
            "user_ns_per_pop": _median([x["user_ns_per_pop"] for x in rs]),
            "lat_p50_ns": _median([x["lat_p50_ns"] for x in rs]),
            "lat_p99_ns": _median([x["lat_p99_ns"] for x in rs]),
            "lat_max_ns": max(x["lat_max_ns"] for x in rs),
            "popped": sum(x["popped"] for x in rs),
            "pushed": sum(x["items"] + x["samples"] for x in rs),
            **{k: sum(x[k] for x in rs) for k in _MUST_BE_ZERO},
            "full_stops": sum(x["full_stops"] for x in rs),
            "busy_stops": sum(x["busy_stops"] for x in rs),
            "nomem_stops": sum(x["nomem_stops"] for x in rs),
            "wrong_cpu": sum(x["wrong_cpu"] for x in rs),
            "exact": all(x["popped"] == x["items"] + x["samples"]
                         and all(x[k] == 0 for k in _MUST_BE_ZERO) for x in rs),
            "rounds": rs,
        }
    res: dict[str, Any] = {"items": items, "samples": samples, "rounds": rounds,
                           "per_call": per_call, "capacity": capacity, "prod_cpu": prod,
                           "cons_cpu": cons, "structures": out}
    if with_evq:
        res["evq"] = _run_evq(items, rounds, per_call, capacity, prod, cons)
    return res


def _run_evq(events: int, rounds: int, per_call: int, capacity: int, prod: int,
             cons: int) -> dict[str, Any]:
    """The pipeline's event queue with its own burst producer (ap_bench_arena):
    a whole event record instead of a (key, value) pair, and it drops
    (counted) when full instead of retrying."""
    from . import _native

    runs = [_native.bench_arena(events, per_call, prod, cons, 32768, capacity)
            for _ in range(rounds)]
    return {
        "values_per_s": _median([r["delivered"] / r["seconds"] for r in runs]),
        "delivered": sum(r["delivered"] for r in runs),
        "dropped": sum(r["dropped"] for r in runs),
        "exact": all(r["duplicates"] == 0 and r["strays"] == 0 and r["unseen"] == 0
                     and r["delivered"] + r["dropped"] == r["events"] for r in runs),
        "rounds": runs,
    }


def run_ds(keys: int = 262144, items: int = 2_000_000, rounds: int = 3, samples: int = 2000,
           per_call: int = 4096, capacity: int = 65536, with_evq: bool = True) -> dict[str, Any]:
    return {
        "hash": run_hash(keys, rounds, per_call),
        "queues": run_queues(items, samples, rounds, per_call, capacity, with_evq),
    }


def _mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(res: dict[str, Any]) -> list[str]:
    out: list[str] = []
    h = res["hash"]
    ns = h["ns_per_op"]
    out.append(f"data structures: arena hash map vs BPF_MAP_TYPE_HASH, {h['keys']:,} u64 keys, "
               f"u64 values, median of {h['rounds']} rounds, ns per op:")
    out.append(f"  {'op':<7} | {'arena':>7} | {'2 thr':>7} | {'syscall':>7} | {'batch':>7} | "
               f"{'vs syscall (>= 20x)':<19} | vs batch (>= 5x)")
    for op in OPS:
        a, b = h["vs_syscall"][op], h["vs_batch"][op]
        cells = [ns[w][op] for w in ("arena_user", "arena_user_2threads", "map_syscall",
                                     "map_batch")]
        out.append(f"  {op:<7} | " + " | ".join(f"{c:7.1f}" for c in cells)
                   + f" | {a:6.1f}x {_mark(a >= TARGET_PER_OP):<11} | {b:5.1f}x "
                   + _mark(b >= TARGET_BATCH))
    out.append("  (arena: ds_exec from one user thread; syscall: bpf_map_*_elem; batch: "
               "bpf_map_*_batch,")
    out.append("   whose search is bpf_map_lookup_batch, a dump in map order: it takes no keys)")
    out.append(f"  kernel, one SEC(\"syscall\") program each, {h['per_call']:,} ops per call:")
    out.append(f"  {'op':<7} | {'arena':>7} | {'BPF map':>7} | arena time / map time (<= 1.0x)")
    for op in OPS:
        k = h["kernel_ratio"][op]
        out.append(f"  {op:<7} | {ns['kernel_arena'][op]:7.1f} | {ns['kernel_map'][op]:7.1f} | "
                   f"{k:5.2f}x {_mark(k <= TARGET_KERNEL)}")
    out.append(f"  every operation succeeded on every side: {h['exact']}")

    q = res["queues"]
    where = (f"CPU {q['prod_cpu']} -> CPU {q['cons_cpu']}" if q["prod_cpu"] >= 0
             else "unpinned (one CPU)")
    out.append(f"queues: kernel producer (SEC(\"syscall\") batches of {q['per_call']:,}) -> "
               f"user consumer (C thread), {where};")
    out.append(f"  {q['items']:,} values (at most {q['capacity']:,} in flight), then "
               f"{q['samples']:,} one at a time for latency; median of {q['rounds']} rounds:")
    out.append(f"  {'structure':<9} | {'values/s':>10} | {'ns/push':>7} | {'ns/pop':>7} | "
               f"{'lat p50':>8} | {'lat p99':>8} | exact")
    for name, s in q["structures"].items():
        out.append(f"  {name:<9} | {s['values_per_s'] / 1e6:8.2f} M | "
                   f"{s['kernel_ns_per_push']:7.1f} | {s['user_ns_per_pop']:7.1f} | "
                   f"{s['lat_p50_ns'] / 1e3:5.2f} us | {s['lat_p99_ns'] / 1e3:5.2f} us | "
                   f"{s['exact']} ({s['popped']:,} of {s['pushed']:,} popped)")
    if "evq" in q:
        e = q["evq"]
        dash = "-"
        out.append(f"  {'evq event':<9} | {e['values_per_s'] / 1e6:8.2f} M | {dash:>7} | "
                   f"{dash:>7} | {dash:>8} | {dash:>8} | {e['exact']} "
                   f"({e['delivered']:,} delivered, {e['dropped']:,} dropped)")
    out.append("  (ns/push: in-kernel time per push; ns/pop: consumer time per pop; latency: "
               "kernel call")
    out.append("   start -> user pop of one value into an empty structure; exact: every value "
               "popped once,")
    out.append("   none left, FIFO order kept. evq event: the same ring as evq with whole "
               "event records from")
    out.append("   the pipeline's burst producer, dropping (counted) when full; its end-to-end "
               "latency is the `latency` part)")
    return out
