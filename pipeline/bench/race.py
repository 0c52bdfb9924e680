"""The race against Concurrency Kit and liburcu: runs the C harness (bench/race/race.c).

`run(quick=..., only=..., rounds=...)` builds the harness if it is missing (`make race`),
runs it and returns its figures as a dict:

    {"machine": {...}, "rounds": N, "quick": bool, "sizes": {...}, "exact": true,
     "rows": [{"structure", "workload", "contender", "ours", "memory", "unit",
               "lower_is_better", "median", "min", "max", "samples", "config",
               "does_less"}, ...],
     "table": "the human table, as the harness prints it"}

Every run inside the harness checks exactly-once delivery; a failed check raises
RaceFailed with the harness's message. `python -m pipeline.bench.race [--quick]` prints
the table (needs root: the arena is a BPF map).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "build" / "race"
SOURCES = [ROOT / "bench" / "race" / "race.c", ROOT / "bench" / "race" / "contenders.h"]
# the structures' headers are compiled into it too
HEADER_DIR = ROOT / "include"
STRUCTURES = ("spsc", "mpmc", "msqueue", "mpsc", "stack", "hash", "skiplist")


class RaceError(RuntimeError):
    """The harness could not run (not built, no arena, bad arguments)."""


class RaceFailed(RaceError):
    """A contender lost or doubled an item, or answered a keyed operation wrongly."""


def _stale() -> bool:
    if not BINARY.exists():
        return True
    built = BINARY.stat().st_mtime
    sources = [*SOURCES, *HEADER_DIR.rglob("*.h")]
    return any(s.stat().st_mtime > built for s in sources if s.exists())


def ensure_built() -> Path:
    """The harness binary, built with `make race` when missing or older than its sources."""
    if _stale():
        res = subprocess.run(["make", "-s", "race"], cwd=ROOT, capture_output=True, text=True,
                             check=False)
        if res.returncode != 0 or not BINARY.exists():
            raise RaceError(f"building the race harness failed (make race):\n{res.stderr.strip()}")
    return BINARY


def run(quick: bool = False, only: list[str] | None = None, rounds: int | None = None,
        timeout: float = 3600.0) -> dict[str, Any]:
    """Run the harness; its figures as a dict (see the module's docstring)."""
    for name in only or []:
        if name not in STRUCTURES:
            raise RaceError(f"no structure named {name} (one of {', '.join(STRUCTURES)})")
    if rounds is not None and not 1 <= rounds <= 64:
        raise RaceError(f"rounds must be 1 to 64, not {rounds}")
    cmd = [str(ensure_built()), "--json", "-"]
    if quick:
        cmd.append("--quick")
    if only:
        cmd += ["--only", ",".join(only)]
    if rounds is not None:
        cmd += ["--rounds", str(rounds)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode == 1:
        raise RaceFailed(res.stderr.strip())
    if res.returncode != 0:
        raise RaceError(res.stderr.strip() or f"the race harness exited {res.returncode}")
    figures: dict[str, Any] = json.loads(res.stdout)
    figures["table"] = res.stderr
    return figures


def _line(e: Exception) -> str:
    msg = str(e)
    return msg if msg.startswith("race:") else f"race: {msg}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.race",
                                     description="race the structures against ck and liburcu")
    parser.add_argument("--quick", action="store_true", help="small runs, 2 rounds (a smoke test)")
    parser.add_argument("--only", default="", help=f"comma-separated: {','.join(STRUCTURES)}")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per contender, 1-64 (default 5)")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)
    try:
        figures = run(quick=args.quick, only=[s for s in args.only.split(",") if s] or None,
                      rounds=args.rounds)
    except RaceFailed as e:
        print(_line(e), file=sys.stderr)
        return 1
    except RaceError as e:
        print(_line(e), file=sys.stderr)
        return 2
    sys.stdout.write(figures["table"])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
