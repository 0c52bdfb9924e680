#!/usr/bin/env python3
"""What a file creation costs, counted in instructions, in the test VMs' kernels: with
nothing attached, with the pipeline on the syscall tracepoints and on BPF LSM, and with the
floor of each (empty programs where the pipeline's programs attach).

    sudo .venv/bin/python scripts/vm-cost.py [--kernel NAME] [--files N] [--rounds R] [--json]

Each kernel `make vm` fetched is booted under QEMU with one CPU and instruction counting
(`-icount`): the guest's clocks advance one nanosecond per instruction executed, so the
load's CPU time is the instructions it ran, and the same run gives the same count whatever
else this machine does. That is how the LSM producer, which this machine's own kernel cannot
attach, is measured here at all. Instructions are not time: cache misses are not seen,
and on the project's machine 8-11 of the pipeline's 21-23 points fall after its programs
return, most likely there (README, "What tracing costs the traced program").
tests/vm/cost.py runs inside; tests/helpers/vm.py boots (the harness the VM tests use).

Exit status: 0, 1 when a guest run failed, 2 on bad input."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.bench.part_overhead import VM_COST_FLOORS  # noqa: E402
from pipeline.bench.tools import ToolError, program  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402
from pipeline.flags import Parser  # noqa: E402
from pipeline.ranges import VM_COST  # noqa: E402
from tests.helpers import vm  # noqa: E402

WHO = ("none", "floor", "tracepoint", "floor_lsm", "lsm")
# a boot's budget: two pipeline starts of about a minute each under emulation, the loops,
# the boot itself
TIMEOUT_S = 3600.0


def _args(argv: list[str]) -> argparse.Namespace:
    ap = Parser(prog="scripts/vm-cost.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", action="append", default=None,
                    help="a kernel of build/vm (6.12, 6.18); repeat for more (default: all)")
    ap.add_argument("--files", type=VM_COST["files"].flag(), default=2000,
                    help="creations per timed loop (default 2000)")
    ap.add_argument("--rounds", type=VM_COST["rounds"].flag(), default=3,
                    help="timed loops per block (default 3)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    return ap.parse_args(argv)


def parse_console(lines: list[str]) -> dict[str, Any]:
    """The guest's tagged lines, gathered per contender."""
    per: dict[str, list[float]] = {w: [] for w in WHO}
    bpf: dict[str, list[float]] = {w: [] for w in WHO if w != "none"}
    captured: dict[str, tuple[int, int]] = {}
    info: list[str] = []
    for ln in lines:
        parts = ln.split()
        if not parts:
            continue
        if parts[0] == "COST" and len(parts) == 3 and parts[1] in per:
            per[parts[1]].append(float(parts[2]))
        elif parts[0] == "COST-BPF" and len(parts) == 3 and parts[1] in bpf:
            bpf[parts[1]].append(float(parts[2]))
        elif parts[0] == "COST-CAPTURED" and len(parts) == 4:
            captured[parts[1]] = (int(parts[2]), int(parts[3]))
        elif parts[0] == "COST-INFO":
            info.append(" ".join(parts[1:]))
    return {"per_creation": per, "bpf_per_event": bpf, "captured": captured, "info": info}


def summary(res: dict[str, Any]) -> dict[str, Any]:
    per = res["per_creation"]
    base = statistics.median(per["none"]) if per["none"] else float("nan")
    out: dict[str, Any] = {"none": {"instructions": base, "min": min(per["none"], default=0),
                                    "max": max(per["none"], default=0)}}
    for who in WHO[1:]:
        xs = per[who]
        if not xs:
            continue
        med = statistics.median(xs)
        out[who] = {"instructions": med, "added": med - base,
                    "overhead_pct": 100.0 * (med / base - 1.0),
                    "min": min(xs), "max": max(xs),
                    "bpf_per_event": statistics.median(res["bpf_per_event"][who] or [0.0]),
                    "captured": res["captured"].get(who)}
    return out


def _table(name: str, release: str, s: dict[str, Any]) -> str:
    rows = [f"{name} ({release}): instructions per creation, median of the rounds",
            f"  {'':<11} {'per creation':>13} {'added':>8} {'overhead':>9} {'BPF/event':>10}"
            f"  captured"]
    for who in WHO:
        if who not in s:
            continue
        r = s[who]
        if who == "none":
            rows.append(f"  {who:<11} {r['instructions']:>13,.0f}")
            continue
        cap = r["captured"]
        rows.append(f"  {who:<11} {r['instructions']:>13,.0f} {r['added']:>8,.0f} "
                    f"{r['overhead_pct']:>8.1f}% {r['bpf_per_event']:>10,.0f}  "
                    + (f"{cap[0]:,}/{cap[1]:,}" if cap else "-"))
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    try:
        args = _args(argv)
    except ConfigError as e:
        print(f"vm-cost: {e}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("vm-cost: run as root (sudo): the VMs' file sharing needs it", file=sys.stderr)
        return 2
    known = vm.kernels()
    if not known:
        print("vm-cost: no test VM kernels (build/vm/kernels.json): run `make vm` as root",
              file=sys.stderr)
        return 2
    names = args.kernel or sorted(known)
    for n in names:
        if n not in known:
            print(f"vm-cost: no kernel {n!r}: give one of {', '.join(sorted(known))}",
                  file=sys.stderr)
            return 2
        if not known[n].available:
            print(f"vm-cost: kernel {n} is unavailable ({known[n].reason}): run `make vm`",
                  file=sys.stderr)
            return 2
    # the guest sees this tree read-only: what it runs must be built here first
    try:
        program("createload")
    except ToolError as e:
        print(f"vm-cost: {e}", file=sys.stderr)
        return 2
    for obj in VM_COST_FLOORS.values():
        if not obj.is_file():
            print(f"vm-cost: {obj} is missing: run `make bpf` as root", file=sys.stderr)
            return 2
    results: dict[str, Any] = {}
    failed = False
    for n in names:
        print(f"vm-cost: booting {n} (one CPU, instruction counting; about 5 minutes)",
              file=sys.stderr, flush=True)
        boot = vm.boot(known[n], [".venv/bin/python", "tests/vm/cost.py", str(vm.ROOT),
                                  str(args.files), str(args.rounds)],
                       cpus=1, icount=True, timeout=TIMEOUT_S)
        res = parse_console(boot.console)
        if boot.guest_rc != 0 or not res["per_creation"]["none"]:
            failed = True
            print(f"vm-cost: the run on {n} failed (status {boot.guest_rc}):\n{boot.tail()}",
                  file=sys.stderr)
            continue
        results[n] = {"release": boot.release, "info": res["info"], "raw": res,
                      "summary": summary(res)}
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for n, r in results.items():
            print(_table(n, r["release"] or "?", r["summary"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
