"""`python -m pipeline burst`: drive a running pipeline's kernel-side burst
generator (a SEC("syscall") program) through its pins, from another process."""

from __future__ import annotations

import argparse
import json

from .config import Config
from .errors import KernelError
from .kernel import check_privileges
from .pins import PinRoot, check_run_dir
from .ranges import BURST


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Produce N events in the kernel, in a tight loop, into a running "
                     "pipeline's arena queue.")
    p.add_argument("--events", type=BURST["events"].flag(), required=True, metavar="N",
                   help=f"events to produce; {BURST['events'].describe()}")
    p.add_argument("--per-call", type=BURST["per_call"].flag(), default=4096, metavar="K",
                   help="events per program run (bounded: a long run is not preempted); "
                        f"{BURST['per_call'].describe()}")
    p.add_argument("--pin-dir", metavar="DIR",
                   help="the run's pin directory (default: the only running pipeline's)")


def main(args: argparse.Namespace) -> int:
    check_privileges()
    if args.pin_dir:
        pin = check_run_dir(args.pin_dir, "burst")
    else:
        with PinRoot.open(Config().pin_dir, create=False) as root:
            live = root.live_runs("burst")
        if len(live) != 1:
            raise KernelError(f"found {len(live)} running pipelines under {Config().pin_dir}; "
                              "name one with --pin-dir")
        pin = live[0]
    from . import _core

    try:
        published, dropped = _core.burst_pinned(f"{pin}/burst", args.events, args.per_call)
    except _core.CoreError as e:
        raise KernelError(str(e.args[1] if len(e.args) > 1 else e)) from None
    print(json.dumps({"published": published, "dropped": dropped}))
    return 0
