"""nats: the pipeline into one local NATS JetStream server against the jsonl file sink
(nats.py), the same load, rounds alternating."""

from __future__ import annotations

import shutil

from .figures import PartResult, Skipped, Target, ratios
from .parts import Context

TITLE = "nats: events/s into a local JetStream server against the jsonl file sink"


def run(ctx: Context) -> PartResult:
    from .nats import TARGET, run_nats_vs_jsonl

    if shutil.which("nats-server") is None:
        res = PartResult(raw={})
        res.skipped.append(Skipped("the nats sink", "nats-server is not installed (make "
                                   "setup installs Debian's package)"))
        return res
    seconds = ctx.pick(0.5, 3.0)
    ctx.progress.start("nats", 1)
    fig = run_nats_vs_jsonl(seconds=seconds, rounds=ctx.rounds,
                            warm=not getattr(ctx.args, "no_warm", False))
    ctx.progress.tick()
    res = PartResult(raw=fig)
    jsonl = [r["jsonl"]["events_per_s"] for r in fig["rounds"]]
    nats = [r["nats"]["events_per_s"] for r in fig["rounds"]]
    q = res.question("How fast does the pipeline publish into JetStream?",
                     note=f"getppid load for {seconds} s a round into the jsonl sink, then "
                          "into the nats sink (one local server, a fresh stream each round; "
                          "an event counts once its batch is acknowledged)")
    q.add("nats / jsonl", "x", ratios(nats, jsonl), Target(">=", TARGET))
    q.add("nats", "M events/s", [x / 1e6 for x in nats])
    q.add("jsonl", "M events/s", [x / 1e6 for x in jsonl])
    q.add("nats: events dropped at the sink", "events",
          [float(r["nats"]["dropped_at_sink"]) for r in fig["rounds"]], Target("<=", 0))
    return res
