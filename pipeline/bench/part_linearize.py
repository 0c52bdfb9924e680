"""linearize: how fast the linearizability checker decides a history (linearize_bench.py)."""

from __future__ import annotations

from .figures import PartResult, Target
from .parts import Context

TITLE = "linearize: operations checked per second, per kind of structure"


def run(ctx: Context) -> PartResult:
    from .linearize_bench import run_linearize_bench

    ops = int(ctx.pick(10_000, 100_000))
    rounds = []
    ctx.progress.start("linearize", ctx.rounds)
    for r in range(ctx.rounds):
        rounds.append(run_linearize_bench(ops=ops, seed=r + 1, rounds=1))
        ctx.progress.tick()
    res = PartResult(raw={"ops": ops, "rounds": rounds})
    q = res.question(f"How many operations a second does the checker decide ({ops:,}-op "
                     "histories, 8 agents)?",
                     note="simulated correct histories with overlapping operations, a new "
                          "seed each round; every one must be found linearizable")
    kinds = list(rounds[0]["kinds"])
    for kind in kinds:
        q.add(kind, "M ops/s", [x["kinds"][kind]["ops_per_s"] / 1e6 for x in rounds])
    q.add("histories not found linearizable", "histories",
          [float(sum(not k["ok"] for k in x["kinds"].values())) for x in rounds],
          Target("<=", 0))
    return res
