"""startup: launch of `python -m pipeline` until it is attached and ready (process.py)."""

from __future__ import annotations

from .figures import PartResult, Target
from .parts import Context

TITLE = "start-up: launch until ready (attached, enabled)"
TARGET_S = 0.5


def run(ctx: Context) -> PartResult:
    from .process import run_startup

    ctx.progress.start("startup", ctx.rounds)
    times: list[float] = []
    for _ in range(ctx.rounds):
        times.extend(run_startup(1)["seconds"])
        ctx.progress.tick()
    res = PartResult(raw={"seconds": times})
    q = res.question("How long until the pipeline captures?",
                     note="launch of `python -m pipeline` until it prints ready")
    q.add("start-up", "s", times, Target("<", TARGET_S))
    return res
