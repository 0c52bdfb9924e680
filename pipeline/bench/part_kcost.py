"""kcost: the kernel's own time per captured file creation, and what a system call that
creates nothing pays (kcost.py, from the kernel's BPF statistics)."""

from __future__ import annotations

from .figures import PartResult, Target
from .parts import Context

TITLE = "kcost: kernel time of the pipeline's programs per file creation (BPF statistics)"
TARGET_NS = 400.0


def run(ctx: Context) -> PartResult:
    from .kcost import measure

    files = int(ctx.pick(5_000, 100_000))
    rounds = []
    ctx.progress.start("kcost", ctx.rounds)
    for _ in range(ctx.rounds):
        rounds.append(measure(files=files))
        ctx.progress.tick()
    res = PartResult(raw={"files": files, "rounds": rounds})
    q = res.question("What does one captured file creation cost in the kernel?",
                     note=f"{files:,} files created and closed on tmpfs a round, the pipeline "
                          "attached to the syscall tracepoints; the average run time of each "
                          "of its programs that ran for them, summed")
    q.add("one captured creation", "ns", [r["create"]["sum_of_avg_ns"] for r in rounds],
          Target("<=", TARGET_NS))
    q.add("an open that creates nothing", "ns", [r["noop"]["sum_of_avg_ns"] for r in rounds])
    q.add("creations not captured", "events",
          [float(max(0, files - int(r["produced"] or 0))) for r in rounds], Target("<=", 0))
    return res
