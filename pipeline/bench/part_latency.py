"""latency: file created -> its line in the jsonl sink's file, at a low rate (process.py)."""

from __future__ import annotations

import statistics

from .figures import PartResult, Target
from .parts import Context, Plot

TITLE = "latency at a low rate: a file created -> its line in the jsonl file"
TARGET_MS = 50.0


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def run(ctx: Context) -> PartResult:
    from .process import run_latency

    events, gap = int(ctx.pick(6, 20)), ctx.pick(0.03, 0.1)
    rounds = []
    ctx.progress.start("latency", ctx.rounds)
    for _ in range(ctx.rounds):  # a fresh pipeline each round
        rounds.append(run_latency(events, gap)["ms"])
        ctx.progress.tick()
    res = PartResult(raw={"events_per_round": events, "gap_seconds": gap, "ms": rounds})
    q = res.question("How long from a file's creation to its line in the file?",
                     note=f"{events} files a round, {gap} s apart (the reader sleeps between "
                          "them); per round: percentiles of its files")
    q.add("median", "ms", [statistics.median(r) for r in rounds], Target("<", TARGET_MS))
    q.add("p90", "ms", [_pct(r, 90) for r in rounds])
    q.add("max", "ms", [max(r) for r in rounds])
    return res


def plots(res: PartResult) -> list[Plot]:
    from .plots import lines

    every = sorted(x for r in res.raw["ms"] for x in r)
    cdf = [(i + 1) / len(every) for i in range(len(every))]
    pcts = [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 100.0]
    per_round = [[_pct(r, p) for p in pcts] for r in res.raw["ms"]]
    cols = list(zip(*per_round, strict=True))
    fig = lines("File created -> its line in the jsonl file (pipeline, low rate)",
                [("percentiles: median of rounds, min-max band", "percentile", "latency (ms)",
                  [("jsonl sink", pcts, [statistics.median(c) for c in cols],
                    [min(c) for c in cols], [max(c) for c in cols])]),
                 ("CDF of every file of every round", "latency (ms)", "fraction of files",
                  [("jsonl sink", every, cdf, cdf, cdf)])])
    return [Plot("latency_sink", fig)]
