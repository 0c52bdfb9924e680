"""`python -m pipeline linearize --kind KIND FILE`: check a saved history for linearizability.

FILE holds 40-byte records (include/ds/history.h), as the stress command and
tests/c/lin_driver.c write them. Exit status: 0 linearizable; 1 not linearizable, or
undecided (the search budget ran out; the output says which); 2 bad input (no such file,
not a regular file, not whole records, a record the kind cannot have).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys

from .errors import ConfigError
from .linearize import DEFAULT_BUDGET, KINDS, HistoryError, check

BUDGET_MAX = (1 << 63) - 1
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _budget(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= n <= BUDGET_MAX:
        raise argparse.ArgumentTypeError(f"{n} is outside 0..{BUDGET_MAX}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Check a recorded history (40-byte struct ds_hist_rec records) for "
                     "linearizability. Exit 0: linearizable; 1: not, or undecided; 2: bad "
                     "input.")
    p.add_argument("file", metavar="FILE", help="the history: records as the stress "
                   "command writes them")
    p.add_argument("--kind", required=True, choices=KINDS,
                   help="map, set (keyed: hash, skiplist, list), queue (msqueue, mpmc, mpsc, "
                   "spsc, evq) or stack")
    p.add_argument("--budget", type=_budget, default=DEFAULT_BUDGET, metavar="STEPS",
                   help=f"search steps before the answer is undecided (maps, sets, stacks); "
                   f"0: no limit; 0..{BUDGET_MAX} (default {DEFAULT_BUDGET})")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text (the default) or one JSON object")


def read_history(path: str) -> bytes:
    """The file's bytes: a regular file, opened without following a link at its name."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as e:
        raise ConfigError(f"history {path}: {e.strerror}; give the file the stress run "
                          "wrote (a symbolic link is not followed)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"history {path}: not a regular file; give the file the stress "
                              "run wrote")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def main(args: argparse.Namespace) -> int:
    data = read_history(args.file)
    try:
        res = check(args.kind, data, budget=args.budget)
    except HistoryError as e:
        raise ConfigError(f"history {args.file}: {e}") from None
    if args.format == "json":
        sys.stdout.write(json.dumps(res.as_dict()) + "\n")
    else:
        sys.stdout.write(res.explain() + "\n")
    return 0 if res.ok else 1
