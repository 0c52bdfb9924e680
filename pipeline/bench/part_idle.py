"""idle: the CPU the pipeline takes while nothing happens (process.py)."""

from __future__ import annotations

from .figures import PartResult, Target
from .parts import Context

TITLE = "idle CPU: the pipeline attached, no events"
TARGET_PCT = 1.0


def run(ctx: Context) -> PartResult:
    from .process import run_idle

    seconds, settle = ctx.pick(0.5, 5.0), ctx.pick(0.3, 1.0)
    rounds = []
    ctx.progress.start("idle", ctx.rounds)
    for _ in range(ctx.rounds):
        rounds.append(run_idle(seconds, settle))
        ctx.progress.tick()
    res = PartResult(raw={"seconds_per_round": seconds, "rounds": rounds})
    q = res.question("What does the pipeline cost while nothing happens?",
                     note=f"CPU time (utime + stime) over {seconds} s with a filter nothing "
                          f"matches, after {settle} s to settle")
    q.add("CPU while idle", "% of a core", [r["core_percent"] for r in rounds],
          Target("<", TARGET_PCT))
    return res
