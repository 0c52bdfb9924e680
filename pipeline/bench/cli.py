"""`python -m pipeline bench`: every performance figure, measured side by
side in one run, reported as ratios. Not a test: nothing here asserts a time."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError
from ..kernel import check_privileges, ensure_mounts
from ..ranges import BENCH

PARTS = ("transport", "e2e", "latency", "idle", "startup", "ds")


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:7.2f} M/s"


def report(res: dict[str, Any]) -> str:
    out: list[str] = []
    if "transport" in res:
        t = res["transport"]
        a, r = t["arena_queue"], t["ringbuf_no_wakeup"]
        out.append(f"transport ({t['rounds']} rounds of {t['events_per_round']:,} events, "
                   "producer CPU 0, consumer CPU 1, median):")
        out.append(f"  arena queue        {_fmt_rate(a['events_per_s'])}  dropped {a['dropped']:,}"
                   f"  exact {a['exact']}")
        out.append(f"  ringbuf NO_WAKEUP  {_fmt_rate(r['events_per_s'])}  dropped {r['dropped']:,}"
                   f"  exact {r['exact']}")
        out.append(f"  ratio arena/ringbuf: {t['ratio']:.2f}x (target >= 1.5x)")
    if "e2e" in res:
        e = res["e2e"]
        memory = ("memory warmed before each contender" if e["warm"]
                  else "memory left cold (--no-warm)")
        out.append(f"end to end into a JSONL file (getppid load for {e['load_seconds']} s, "
                   f"dirty pages written back and {memory}):")
        for k in ("c_drain", "pipeline", "bcc"):
            v = e[k]
            if "skipped" in v:
                out.append(f"  {k:<9} skipped: {v['skipped']}")
                continue
            out.append(f"  {k:<9} {_fmt_rate(v['events_per_s'])} written {v['written']:,}"
                       f"  lost {v['lost']:,} of {v['produced']:,}")
        if "pipeline_vs_bcc" in e:
            out.append(f"  pipeline/bcc: {e['pipeline_vs_bcc']:.1f}x (target >= 10x)")
        out.append(f"  pipeline/c_drain: {e['pipeline_vs_c_drain']:.2f}x (target >= 0.5x)")
    if "latency" in res:
        lt = res["latency"]
        out.append(f"latency at low rate (file created -> line in the jsonl file, "
                   f"{lt['events']} files): median {lt['ms_median']:.2f} ms, "
                   f"max {lt['ms_max']:.2f} ms (target < 50 ms)")
    if "idle" in res:
        out.append(f"idle: {res['idle']['core_percent']:.2f}% of a core (target < 1%)")
    if "startup" in res:
        s = res["startup"]
        out.append(f"start-up: {s['seconds_median']:.3f} s median to ready (target < 0.5 s)")
    if "ds" in res:
        from .ds import report as ds_report
        out.extend(ds_report(res["ds"]))
    return "\n".join(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts to run: {', '.join(PARTS)}")
    p.add_argument("--events", type=BENCH["events"].flag(), default=5_000_000,
                   help=f"transport: events per round; {BENCH['events'].describe()}")
    p.add_argument("--rounds", type=BENCH["rounds"].flag(), default=3,
                   help=f"transport: rounds per transport; {BENCH['rounds'].describe()}")
    p.add_argument("--seconds", type=BENCH["seconds"].flag(), default=3.0,
                   help=f"e2e: load duration; {BENCH['seconds'].describe()}")
    p.add_argument("--no-bcc", action="store_true", help="e2e: leave out the BCC baseline")
    p.add_argument("--no-warm", action="store_true",
                   help="e2e: skip the memory warm-up before each contender (on a VM that backs "
                        "memory lazily, the page cache's new pages then cost hypervisor faults)")
    p.add_argument("--json", action="store_true", help="print the raw results as JSON")


def main(args: argparse.Namespace) -> int:
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        raise ConfigError(f"unknown bench part(s) {', '.join(bad)}; choose from {', '.join(PARTS)}")
    check_privileges()
    ensure_mounts()
    res: dict[str, Any] = {}
    if "transport" in parts:
        from .transport import run_transport
        res["transport"] = run_transport(args.events, args.rounds)
    if "e2e" in parts:
        from .e2e import run_e2e
        res["e2e"] = run_e2e(args.seconds, with_bcc=not args.no_bcc, warm=not args.no_warm)
    if "latency" in parts:
        from .process import run_latency
        res["latency"] = run_latency()
    if "idle" in parts:
        from .process import run_idle
        res["idle"] = run_idle()
    if "startup" in parts:
        from .process import run_startup
        res["startup"] = run_startup()
    if "ds" in parts:
        from .ds import run_ds
        res["ds"] = run_ds()
    print(json.dumps(res, indent=2) if args.json else report(res))
    sys.stdout.flush()
    return 0
