"""e2e: end to end into a JSONL file, the same getppid load for every contender (e2e.py):
C alone draining the arena queue, the pipeline, and the BCC baseline."""

from __future__ import annotations

from .figures import PartResult, Skipped, Target, ratios
from .parts import Context, Plot

TITLE = "end to end into a JSONL file: C alone, the pipeline, a BCC pipeline"
TARGET_VS_BCC = 10.0
TARGET_VS_C = 0.5
NAMES = {"c_drain": "C alone (drain only)", "pipeline": "pipeline (jsonl)", "bcc": "BCC"}


def run(ctx: Context) -> PartResult:
    from .e2e import run_e2e

    seconds = ctx.pick(0.5, ctx.args.seconds)
    raw = run_e2e(seconds, ctx.rounds, with_bcc=not ctx.args.no_bcc,
                  warm=not (ctx.args.no_warm or ctx.quick), progress=ctx.progress)
    res = PartResult(raw=raw)
    for what, why in raw["skipped"].items():
        res.skipped.append(Skipped(NAMES[what], why))
    rates = {k: [r["events_per_s"] for r in rs] for k, rs in raw["rounds"].items()}
    q = res.question("How many events a second reach a JSONL file?",
                     note=f"getppid load for {seconds} s on CPU 0, consumer on CPU 1; events "
                          "in the output / the load's duration; memory "
                          + ("warmed before each contender" if raw["warm"] else "left cold"))
    for k, xs in rates.items():
        q.add(NAMES[k], "M events/s", [x / 1e6 for x in xs])
    if "bcc" in rates:
        q.add("pipeline / BCC", "x", ratios(rates["pipeline"], rates["bcc"]),
              Target(">=", TARGET_VS_BCC))
    q.add("pipeline / C alone", "x", ratios(rates["pipeline"], rates["c_drain"]),
          Target(">=", TARGET_VS_C))
    lost = res.question("What does each contender lose?",
                        note="events the producer made that never reached the output, per "
                             "round (counted, never silent)")
    for k, rs in raw["rounds"].items():
        lost.add(f"{NAMES[k]}: lost", "%",
                 [100.0 * r["lost"] / max(r["produced"], 1) for r in rs])
    return res


def plots(res: PartResult) -> list[Plot]:
    from .plots import bars

    f = [x for x in res.questions[0].figures if x.unit == "M events/s"]
    fig = bars("End to end into a JSONL file (median, min-max whiskers)",
               [("throughput", "M events/s written", [(x.name, x) for x in f])])
    return [Plot("e2e", fig)]
