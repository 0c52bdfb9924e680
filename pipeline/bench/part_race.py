"""race: each structure against Concurrency Kit and liburcu (race.py, bench/race/race.c)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .figures import PartResult, Target, ratios
from .parts import Context

TITLE = "the structures against Concurrency Kit and liburcu, in one harness"
SPSC_NS = 3.0  # one thread, push+pop
ARENA_VS_PLAIN = 1.1
WORKLOADS = {"st": "1 thread", "pc": "1 producer + 1 consumer", "mix": "2 threads mixed",
             "scan": "range scan", "rm1": "read-mostly, 1 thread", "rm2": "read-mostly, 2 threads"}


def _speed(row: dict[str, Any]) -> list[float]:
    """Each round's figure as a speed (higher is better), whatever the row's unit."""
    s = [float(x) for x in row["samples"]]
    return [1.0 / x if x else 1e12 for x in s] if row["lower_is_better"] else s


def run(ctx: Context) -> PartResult:
    from .race import run as race

    ctx.progress.start("race", 1)
    fig = race(quick=ctx.quick, rounds=ctx.rounds)
    ctx.progress.tick()
    res = PartResult(raw=fig)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in fig["rows"]:
        groups[(row["structure"], row["workload"])].append(row)
    q = res.question("Is every structure at least as fast as its best counterpart?",
                     note="ours in the arena against the best of CK and liburcu on the heap, "
                          "round by round, as speeds (>= 1x: ours at least as fast); each row's "
                          "reclamation and role checks are in results.json (config, does_less)")
    near = res.question("Does the arena cost anything over plain memory?",
                        note="the same header in the BPF arena and on an anonymous mapping, "
                             "round by round: plain speed / arena speed")
    for (structure, key), rows in groups.items():
        workload = WORKLOADS.get(key, key)
        ours = {r["memory"]: r for r in rows if r["ours"] and r["contender"] == structure}
        # the skip list's point operations race the hash, which is ours too
        theirs = [r for r in rows if not (r["ours"] and r["contender"] == structure)
                  and r["memory"] != "plain"]
        arena = ours.get("arena")
        if arena is None:
            continue
        if theirs:
            best = max(theirs, key=lambda r: sorted(_speed(r))[len(r["samples"]) // 2])
            q.add(f"{structure}, {workload}: against {best['contender']}", "x",
                  ratios(_speed(arena), _speed(best)), Target(">=", 1.0))
        if "plain" in ours:
            near.add(f"{structure}, {workload}", "x",
                     ratios(_speed(ours["plain"]), _speed(arena)),
                     Target("<=", ARENA_VS_PLAIN))
        if structure == "spsc" and key == "st":
            res.question("SPSC, one thread: how long does a push+pop take?").add(
                "push+pop, in the arena", "ns", [float(x) for x in arena["samples"]],
                Target("<=", SPSC_NS))
    by = {(r["contender"], r["memory"], r["workload"]): r for r in fig["rows"]
          if r["structure"] == "hash"}
    sc = res.question("How much does a second thread add on the hash maps?",
                      note="read-mostly (90% search, 5% insert, 5% delete), 65,536 keys in "
                           "65,536 buckets, the threads' keys interleaved in the same buckets: "
                           "2 threads' ops/s / 1 thread's, round by round (2.0x: perfect); a "
                           "cache line moved between the CPUs in "
                           f"{fig['machine'].get('line_transfer_ns', 0):.0f} ns at the start")
    for (name, mem, wl), two in by.items():
        one = by.get((name, mem, "rm1"))
        if wl == "rm2" and one:
            sc.add(f"{name} ({mem})", "x", ratios(_speed(two), _speed(one)))
    return res
