"""`python -m pipeline bench`: every performance figure, measured side by side, each the
median of several rounds with its spread, written as results.json (every round's raw
figures), report.md (one table per question, targets judged on the median) and plots (PNG
and SVG). Not a test: nothing here asserts a time; a missed target is a result."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..kernel import check_privileges, ensure_mounts
from ..ranges import BENCH
from .figures import PartResult
from .output import Output, default_path
from .parts import PARTS, Context, Part, load
from .progress import Progress
from .report_md import render
from .tools import program

SCHEMA_ID = "arena-pipeline-bench-results/1"
QUICK_ROUNDS = 3
# the load programs each part runs: built (or their absence reported) before anything starts
NEEDS = {"e2e": "loadgen", "overhead": "createload", "proccost": "forkload"}
log = logging.getLogger("pipeline.bench")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    p.add_argument("--only", default=",".join(PARTS), metavar="PART,...",
                   help=f"comma-separated parts to run: {', '.join(PARTS)} (default: all)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test (CI): small sizes, {QUICK_ROUNDS} rounds, under 2 minutes; "
                        "checks that every part works, not how fast")
    p.add_argument("--output", metavar="DIR",
                   help="directory for results.json, report.md and the plots (created; "
                        "default: results/<date>-<host>/ under the current directory)")
    p.add_argument("--rounds", type=BENCH["rounds"].flag(), default=5,
                   help=f"rounds per figure (full mode); {BENCH['rounds'].describe()}")
    p.add_argument("--events", type=BENCH["events"].flag(), default=5_000_000,
                   help=f"transport: events per round; {BENCH['events'].describe()}")
    p.add_argument("--seconds", type=BENCH["seconds"].flag(), default=3.0,
                   help=f"e2e: load duration per contender and round; "
                        f"{BENCH['seconds'].describe()}")
    p.add_argument("--no-bcc", action="store_true", help="e2e: leave out the BCC baseline")
    p.add_argument("--no-warm", action="store_true",
                   help="e2e: skip the memory warm-up before each contender (on a VM that backs "
                        "memory lazily, the page cache's new pages then cost hypervisor faults)")
    p.add_argument("--json", action="store_true",
                   help="print results.json on stdout instead of report.md")


def _parts(only: str) -> list[str]:
    parts = [x.strip() for x in only.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad or not parts:
        raise ConfigError(f"bench: unknown part(s) {', '.join(bad) or '(none given)'}; "
                          f"choose from {', '.join(PARTS)}")
    return [x for x in PARTS if x in parts]  # registry order


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), "")
    except OSError:
        pass
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"host": platform.node(), "kernel": platform.release(), "arch": platform.machine(),
            "cpus": os.cpu_count() or 0, "cpu_model": model or "unknown",
            "memory_gib": pages / 2**30}


def _run_part(part: Part, ctx: Context) -> dict[str, Any]:
    t0 = time.monotonic()
    entry: dict[str, Any] = {"title": part.title, "status": "ok", "error": None}
    res: PartResult | None = None
    try:
        res = part.run(ctx)
    except Exception as e:  # one part's failure is a result; the others still run
        log.debug("bench part %s failed", part.name, exc_info=True)
        entry.update(status="failed", error=f"{type(e).__name__}: {' '.join(str(e).split())}")
    finally:
        ctx.progress.done()
    entry["seconds"] = time.monotonic() - t0
    if res is not None:
        entry.update(questions=[q.to_json() for q in res.questions],
                     skipped=[s.to_json() for s in res.skipped], raw=res.raw)
    else:
        entry.update(questions=[], skipped=[], raw={})
    entry["plots"] = []
    entry["_result"] = res
    return entry


def _plots(part: Part, entry: dict[str, Any], out: Output) -> None:
    from .plots import close, render

    res = entry.pop("_result")
    if part.plots is None or res is None:
        return
    try:
        made = part.plots(res)
    except Exception as e:
        log.debug("plots of %s failed", part.name, exc_info=True)
        entry["plot_error"] = f"{type(e).__name__}: {e}"
        return
    for p in made:
        for fmt in ("png", "svg"):
            out.write(f"{p.name}.{fmt}", render(p.figure, fmt))
        close(p.figure)
        entry["plots"].append(p.name)


def main(args: argparse.Namespace) -> int:
    names = _parts(args.only)
    check_privileges()
    ensure_mounts()
    for n in names:  # a missing load program stops here, in one line, before any work
        if n in NEEDS:
            program(NEEDS[n])
    out = Output(args.output or default_path())
    for name in ("results.json", "report.md"):  # refused now, not after the measuring
        out.check(name)
    rounds = QUICK_ROUNDS if args.quick else args.rounds
    started = time.time()
    result: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "command": shlex.join(["python", "-m", "pipeline", "bench", *sys.argv[2:]])
        if len(sys.argv) > 1 and sys.argv[1] == "bench" else "python -m pipeline bench",
        "mode": "quick" if args.quick else "full",
        "rounds": rounds,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": machine(),
        "parts": {},
    }
    progress = Progress()
    try:
        with tempfile.TemporaryDirectory(prefix="ap-bench-") as tmp:
            ctx = Context(quick=args.quick, rounds=rounds, tmp=Path(tmp), progress=progress,
                          args=args)
            parts = [load(n) for n in names]
            for part in parts:
                result["parts"][part.name] = _run_part(part, ctx)
            for part in parts:
                _plots(part, result["parts"][part.name], out)
        result["seconds"] = time.time() - started
        text = json.dumps(result, indent=1, allow_nan=False) + "\n"
        out.write("results.json", text.encode())
        report = render(result)
        out.write("report.md", report.encode())
    finally:
        out.close()
    sys.stdout.write(text if args.json else report + "\n")
    sys.stdout.flush()
    failed = [n for n, p in result["parts"].items() if p["status"] != "ok"]
    for n in failed:
        log.error("bench: part %s did not run: %s", n, result["parts"][n]["error"])
    print(f"bench: results in {out.shown}/ (results.json, report.md, plots)", file=sys.stderr)
    return 1 if failed else 0
