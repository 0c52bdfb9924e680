"""ds: the arena hash map against a BPF hash map, and every queue from a kernel producer to a
user consumer (ds.py, pipeline/bench/_native/dsbench.c). Each round runs the hash benchmark
(all its contenders, in turn) and then the queues (all structures, in turn)."""

from __future__ import annotations

from typing import Any

from .ds import OPS, TARGET_BATCH, TARGET_KERNEL, TARGET_PER_OP
from .figures import PartResult, Target
from .parts import Context, Plot

TITLE = "data structures: the arena hash map against BPF's, and the queues kernel -> user"
_MUST_BE_ZERO = ("duplicates", "strays", "malformed", "unseen", "order_errors", "left", "verify")


def run(ctx: Context) -> PartResult:
    from .ds import run_hash, run_queues

    keys = int(ctx.pick(16_384, 262_144))
    items = int(ctx.pick(100_000, 2_000_000))
    samples = int(ctx.pick(200, 2_000))
    hashes: list[dict[str, Any]] = []
    queues: list[dict[str, Any]] = []
    ctx.progress.start("ds", ctx.rounds)
    for _ in range(ctx.rounds):
        ctx.progress.note("hash")
        hashes.append(run_hash(keys, 1, 4096))
        ctx.progress.note("queues")
        queues.append(run_queues(items, samples, 1, 4096, 65536, with_evq=True))
        ctx.progress.tick()
    res = PartResult(raw={"keys": keys, "items": items, "samples": samples, "hash": hashes,
                          "queues": queues})
    _hash_questions(res, hashes)
    _queue_questions(res, queues)
    return res


def _hash_questions(res: PartResult, hashes: list[dict[str, Any]]) -> None:
    user = res.question("Is the arena hash map faster from userspace than a BPF hash map?",
                        note=f"{hashes[0]['keys']:,} u64 keys; arena: ds_exec from one thread; "
                             "the BPF map through bpf_map_*_elem (one syscall per op) and "
                             "bpf_map_*_batch (search: a lookup_batch dump, it takes no keys)")
    for op in OPS:
        user.add(f"{op}: BPF map per-op syscalls / arena", "x",
                 [h["rounds_vs_syscall"][op][0] for h in hashes], Target(">=", TARGET_PER_OP))
        user.add(f"{op}: BPF map batch syscalls / arena", "x",
                 [h["rounds_vs_batch"][op][0] for h in hashes], Target(">=", TARGET_BATCH))
    for op in OPS:
        user.add(f"{op}: arena, one thread", "ns/op",
                 [h["ns_per_op"]["arena_user"][op] for h in hashes])
    kern = res.question("Inside a BPF program, is the arena hash map as fast as a BPF hash map?",
                        note="one SEC(\"syscall\") program each, 4,096 ops a call; arena time "
                             "/ BPF map time")
    for op in OPS:
        kern.add(f"{op}: arena / BPF map", "x",
                 [h["rounds_kernel_ratio"][op][0] for h in hashes], Target("<=", TARGET_KERNEL))
    ok = res.question("Did every hash operation succeed on every side?")
    ok.add("failed operations", "ops",
           [sum(v for f in h["fails"].values() for v in f.values()) for h in hashes],
           Target("<=", 0))


def _queue_questions(res: PartResult, queues: list[dict[str, Any]]) -> None:
    names = list(queues[0]["structures"])
    q0 = queues[0]
    thr = res.question("How fast do the arena's queues carry values from the kernel to user?",
                       note=f"kernel producer (SEC(\"syscall\") batches) on CPU "
                            f"{q0['prod_cpu']}, user consumer thread on CPU {q0['cons_cpu']}, "
                            f"{q0['items']:,} values a round")
    for n in names:
        thr.add(n, "M values/s", [q["structures"][n]["values_per_s"] / 1e6 for q in queues])
    thr.add("evq with whole event records", "M events/s",
            [q["evq"]["values_per_s"] / 1e6 for q in queues])
    lat = res.question("How long does one value take into an empty queue and out?",
                       note=f"{q0['samples']:,} values one at a time: kernel call start -> "
                            "user pop")
    for n in names:
        lat.add(f"{n}: p50", "us", [q["structures"][n]["lat_p50_ns"] / 1e3 for q in queues])
        lat.add(f"{n}: p99", "us", [q["structures"][n]["lat_p99_ns"] / 1e3 for q in queues])
    ex = res.question("Is every value popped exactly once, in order?",
                      note="per round: values duplicated, stray, malformed, unseen, out of "
                           "order, left behind, or a failed verify, over every structure")
    ex.add("faults", "values",
           [sum(s[k] for s in q["structures"].values() for k in _MUST_BE_ZERO)
            for q in queues], Target("<=", 0))


def plots(res: PartResult) -> list[Plot]:
    from .plots import lines

    queues = res.raw["queues"]
    names = list(queues[0]["structures"])
    series = []
    for n in names:
        cols = [[q["structures"][n][k] / 1e3 for q in queues]
                for k in ("lat_p50_ns", "lat_p99_ns", "lat_max_ns")]
        med = [sorted(c)[len(c) // 2] for c in cols]
        series.append((n, [50.0, 99.0, 100.0], med, [min(c) for c in cols],
                       [max(c) for c in cols]))
    qfig = lines("Queues, kernel producer -> user consumer: one value into an empty queue",
                 [("latency percentiles (median of rounds, min-max band)", "percentile",
                   "latency (us)", series)], logy=True)
    hashes = res.raw["hash"]
    hseries = []
    for op in OPS:
        per = [[1e3 / h["ns_per_op"][w][op] for h in hashes]
               for w in ("arena_user", "arena_user_2threads")]
        hseries.append((op, [1.0, 2.0], [sorted(p)[len(p) // 2] for p in per],
                        [min(p) for p in per], [max(p) for p in per]))
    hfig = lines("Arena hash map from userspace: throughput against threads",
                 [("ds_exec, disjoint key ranges", "user threads", "M ops/s", hseries)])
    return [Plot("latency_queues", qfig), Plot("throughput_hash_threads", hfig)]
