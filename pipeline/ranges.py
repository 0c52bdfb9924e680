"""The accepted range of every number a user can give: config keys, flags,
stress keys, bench and burst flags. Each range is defined once, here (sink
options carry theirs in their own `Option(check=...)`, built from `Range` too),
and checked before anything starts: a value outside it never reaches C, a
sleep or a timer, where it would overflow or flood.

The bounds are sane limits, not hardware ones: a year for durations, the
kernel's PID_MAX_LIMIT for pids, what an arena's 4 GiB and the C side's u32
counters hold for sizes. README's flag table and docs/ds.md show them.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

YEAR = 365 * 24 * 3600


@dataclass(frozen=True)
class Range:
    """lo <= value <= hi (lo < value when open_lo), of kind int or float; with
    `zero`, 0 is accepted too as an "off" value below lo. Calling it returns what
    is wrong with a value ("must be ...") or None, so it serves as a sink
    Option's `check`."""

    kind: type
    lo: float
    hi: float
    unit: str = ""
    open_lo: bool = False
    zero: bool = False
    power_of_two: bool = False

    def describe(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else repr(float(x))

        low = f"> {num(self.lo)}" if self.open_lo else f">= {num(self.lo)}"
        text = f"{low} and <= {num(self.hi)}"
        if self.power_of_two:
            text = f"a power of two {text}"
        if self.zero:
            text = f"0 or {text}"
        return f"{text} {self.unit}".rstrip()

    def __call__(self, value: Any) -> str | None:
        want = "an integer" if self.kind is int else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be {want}"
        if self.kind is int and not isinstance(value, int):
            return f"must be {want}"
        if not math.isfinite(value):
            return f"must be a finite number ({self.describe()})"
        if self.zero and value == 0:
            return None
        too_low = value <= self.lo if self.open_lo else value < self.lo
        if too_low or value > self.hi:
            return f"must be {self.describe()}"
        if self.power_of_two and int(value) & (int(value) - 1):
            return f"must be {self.describe()}"
        return None

    def parse(self, text: str) -> int | float:
        """A flag's text as this range's kind, in range, or ArgumentTypeError."""
        raw = text.strip()
        try:
            value: int | float = int(raw, 10) if self.kind is int else float(raw)
        except ValueError:
            want = "an integer" if self.kind is int else "a number"
            shown = raw if len(raw) <= 40 else raw[:40] + "..."
            raise argparse.ArgumentTypeError(
                f"must be {want} ({self.describe()}), not {shown!r}") from None
        problem = self(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{problem}, not {text.strip()!r}")
        return value

    def flag(self) -> Callable[[str], int | float]:
        """An argparse `type=` for this range."""
        return self.parse


# ---- the pipeline (config keys; each has a flag of the same name) ----
PIPELINE: dict[str, Range] = {
    "duration": Range(float, 0, YEAR, "seconds"),
    "max_events": Range(int, 0, 2**63 - 1),
    "filter_pid": Range(int, 0, 4_194_304),
    # below 0.1 s the statistics lines would flood stderr
    "stats": Range(float, 0.1, 24 * 3600, "seconds", zero=True),
    "queue_capacity": Range(int, 2, 1 << 22, "events", power_of_two=True),
    "arena_pages": Range(int, 64, 1 << 20, "pages"),
    "batch": Range(int, 1, 65536, "events"),
    "spin_us": Range(int, 0, 1_000_000, "microseconds"),
    "nap_us": Range(int, 0, 1_000_000, "microseconds"),
    "metrics_linger": Range(float, 0, 3600, "seconds"),
    "ancestors": Range(int, 0, 64, "levels"),
}

# ---- the built-in sinks' options (used as their Option checks) ----
SINK_JSONL: dict[str, Range] = {
    "rotate_bytes": Range(int, 0, 1 << 50, "bytes"),
    "rotate_keep": Range(int, 0, 1000, "files"),
}
SINK_SOCKET: dict[str, Range] = {
    "buffer_events": Range(int, 1, 1 << 24, "events"),
    "backoff_initial": Range(float, 0, 3600, "seconds", open_lo=True),
    "backoff_max": Range(float, 0, 3600, "seconds", open_lo=True),
    "connect_timeout": Range(float, 0, 3600, "seconds", open_lo=True),
    "close_timeout": Range(float, 0, 3600, "seconds"),
}

SINK_NATS: dict[str, Range] = {
    "buffer_events": Range(int, 1, 1 << 24, "events"),
    "batch_events": Range(int, 1, 65536, "events"),
    # 0: the server's max_payload; below 4 KiB a batch would hold a handful of events
    "batch_bytes": Range(int, 4096, 64 << 20, "bytes", zero=True),
    "in_flight": Range(int, 1, 1024, "messages"),
    "ack_timeout": Range(float, 0, 3600, "seconds", open_lo=True),
    "backoff_initial": Range(float, 0, 3600, "seconds", open_lo=True),
    "backoff_max": Range(float, 0, 3600, "seconds", open_lo=True),
    "connect_timeout": Range(float, 0, 3600, "seconds", open_lo=True),
    "close_timeout": Range(float, 0, 3600, "seconds"),
    # the server keeps every id of the window in memory: a week is plenty
    "duplicate_window": Range(float, 1, 7 * 24 * 3600, "seconds"),
    "max_bytes": Range(int, 1 << 20, 1 << 50, "bytes", zero=True),
    "max_age": Range(float, 1, 100 * YEAR, "seconds", zero=True),
    "replicas": Range(int, 1, 5, "servers"),
}

# ---- python -m pipeline stress (keys of [stress], flags of the same names) ----
STRESS: dict[str, Range] = {
    "workers": Range(int, 0, 32, "processes"),
    "threads": Range(int, 1, 64, "threads"),
    "kernel_threads": Range(int, 0, 32, "threads"),
    "consumers": Range(int, 0, 32, "processes"),
    "kernel_consumers": Range(int, 0, 32, "threads"),
    "operations": Range(int, 0, 10**12, "ops"),
    "duration": Range(float, 0, 24 * 3600, "seconds", open_lo=True),
    "keys": Range(int, 1, 1 << 24, "keys"),
    "prefill": Range(float, 0, 1),
    "seed": Range(int, 0, 2**64 - 1),
    "history_limit": Range(int, 1, 1 << 24, "records"),
    "kill_worker": Range(int, 0, 64),
    "capacity": Range(int, 0, 1 << 24),
    "pages": Range(int, 64, 1 << 20, "pages"),
    "batch": Range(int, 1, 65536, "ops"),
}
STRESS_MIX_WEIGHT = Range(int, 0, 1_000_000)

# ---- python -m pipeline consume (flags) ----
CONSUME: dict[str, Range] = {
    "batch": Range(int, 1, 4096, "messages"),
    "idle_exit": Range(float, 0, YEAR, "seconds"),
    "max_events": Range(int, 0, 2**63 - 1, "events"),
}

# ---- python -m pipeline bench and burst (flags) ----
BENCH: dict[str, Range] = {
    "events": Range(int, 1, 10**9, "events"),
    "rounds": Range(int, 5, 100, "rounds"),
    "seconds": Range(float, 0, 600, "seconds", open_lo=True),
}
BURST: dict[str, Range] = {
    "events": Range(int, 0, 1 << 40, "events"),
    "per_call": Range(int, 1, 65536, "events"),
}

# ---- scripts/vm-cost.py (flags) ----
VM_COST: dict[str, Range] = {
    "files": Range(int, 1, 1_000_000, "creations"),
    "rounds": Range(int, 1, 100, "rounds"),
}
