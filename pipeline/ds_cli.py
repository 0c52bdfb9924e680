"""`python -m pipeline ds list [--format json]`: the registered data structures."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .ds import Meta, registry


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def table(metas: Sequence[Meta]) -> str:
    head = ("name", "description", "node", "lock-free", "bounded", "model", "ops")
    rows = [(m.name, m.description, f"{m.node_size} B", _yes(m.lock_free), _yes(m.bounded),
             m.model_name, ",".join(m.op_names)) for m in metas]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in (head, *rows))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "The data structures in the BPF arena."
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{list}")
    ls = sub.add_parser("list", help="registered structures and their metadata",
                        description="The registered structures and their metadata.")
    ls.add_argument("--format", choices=("table", "json"), default="table")


def main(args: argparse.Namespace) -> int:
    metas = registry()
    if args.format == "json":
        sys.stdout.write(json.dumps([m.describe() for m in metas], indent=2) + "\n")
    else:
        sys.stdout.write(table(metas) + "\n")
    return 0
