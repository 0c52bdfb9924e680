"""transport: kernel to user, the arena queue against a BPF ring buffer (transport.py)."""

from __future__ import annotations

from .figures import PartResult, Target, ratios
from .parts import Context, Plot

TITLE = "kernel-to-user transport: the arena queue against a BPF ring buffer"
TARGET_RATIO = 1.5


def run(ctx: Context) -> PartResult:
    from .transport import run_transport

    events = int(ctx.pick(200_000, ctx.args.events))
    raw = run_transport(events, ctx.rounds, progress=ctx.progress)
    res = PartResult(raw=raw)
    a, r = raw["arena_queue"]["rates"], raw["ringbuf_no_wakeup"]["rates"]
    q = res.question("Does the arena queue carry events faster than a BPF ring buffer?",
                     note=f"{events:,} events a round, burst producer on one CPU, C consumer "
                          "on another; ring buffer with BPF_RB_NO_WAKEUP and a busy-polling "
                          "consumer")
    q.add("arena queue", "M events/s", [x / 1e6 for x in a])
    q.add("BPF ring buffer", "M events/s", [x / 1e6 for x in r])
    q.add("arena queue / ring buffer", "x", ratios(a, r), Target(">=", TARGET_RATIO))
    bad = res.question("Is every event delivered exactly once?",
                       note="per round: events duplicated, stray, never seen or unaccounted for (a "
                            "drop when full is counted, not a fault)")
    for side in ("arena_queue", "ringbuf_no_wakeup"):
        bad.add(f"{side}: events not delivered exactly once", "events",
                raw[side]["faults"], Target("<=", 0))
    return res


def plots(res: PartResult) -> list[Plot]:
    from .plots import bars

    f = res.questions[0].figures
    fig = bars("Kernel-to-user transport (median, min-max whiskers)",
               [("throughput", "M events/s", [("arena queue", f[0]), ("ring buffer", f[1])]),
                ("ratio", "arena / ring buffer (x)", [("arena / ring", f[2])])])
    return [Plot("transport", fig)]
