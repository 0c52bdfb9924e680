"""`python -m pipeline ps`: print a running pipeline's process table, read live from its
arena through its pins (a second reader of the structure the kernel keeps)."""

from __future__ import annotations

import argparse
import json

from .config import Config
from .errors import KernelError
from .kernel import check_privileges
from .pins import PinRoot, check_run_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Print the process table a running pipeline keeps in its arena "
                     "(started with --process-table), read through its pins.")
    p.add_argument("--pin-dir", metavar="DIR",
                   help="the run's pin directory (default: the only running pipeline's)")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="a table for people, or one JSON array of the entries")


def _run_dir(given: str | None) -> str:
    if given:
        return check_run_dir(given, "arena")
    with PinRoot.open(Config().pin_dir, create=False) as root:
        live = root.live_runs("arena")
    if len(live) != 1:
        raise KernelError(f"found {len(live)} running pipelines under {Config().pin_dir}; "
                          "name one with --pin-dir")
    return live[0]


def main(args: argparse.Namespace) -> int:
    check_privileges()
    run_dir = _run_dir(args.pin_dir)
    from . import _ds, proctab
    from .ds import Arena

    try:
        arena = Arena.attach(run_dir)
    except _ds.CoreError as e:
        raise KernelError(str(e.args[1] if len(e.args) > 1 else e)) from None
    try:
        try:
            procs = proctab.snapshot(arena)
        except KeyError:
            raise KernelError(f"the run at {run_dir} keeps no process table: start it with "
                              "--process-table") from None
    finally:
        arena.close()
    if args.format == "json":
        print(json.dumps([p.as_dict() for p in procs]))
        return 0
    print(f"{'PID':>8} {'TGID':>8} {'PPID':>8} {'UID':>6} {'EUID':>6} {'CGROUP':>8} "
          f"{'EXECS':>5} {'SEEDED':>6} {'EXITED':>6}  {'COMM':<16} EXE")
    for p in procs:
        print(f"{p.pid:>8} {p.tgid:>8} {p.ppid:>8} {p.uid:>6} {p.euid:>6} {p.cgroup_id:>8} "
              f"{p.execs:>5} {'yes' if p.seeded else 'no':>6} {'yes' if p.exited else 'no':>6}  "
              f"{p.comm.decode('utf-8', 'replace'):<16} "
              f"{'...' if p.exe_truncated else ''}{p.exe.decode('utf-8', 'replace')}")
    return 0
