"""The sink plugin interface: what the reader hands a sink, and what a sink reports back.

A sink receives batches of whole JSON lines, in order, from a single asyncio task. It never
raises for a runtime fault (a full disk, a dead peer): it counts the events it could not
hand on as dropped, with a reason, so that at the end

    stats.delivered + stats.dropped_total() == sum of batch.count written to it

and `delivered` counts only events the destination is known to have received.
"""

from __future__ import annotations

import abc
import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from pipeline import log


@dataclass(frozen=True)
class Batch:
    """`count` JSON lines, each ending in b"\\n", as one bytes object."""

    data: bytes
    count: int


class SinkError(Exception):
    """A sink cannot start: str(e) is one line for people, saying what is wrong and what to do."""


@dataclass
class SinkStats:
    delivered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    failed: str | None = None

    def drop(self, reason: str, events: int) -> None:
        if events > 0:
            self.dropped[reason] = self.dropped.get(reason, 0) + events

    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "dropped": dict(self.dropped),
            "dropped_total": self.dropped_total(),
            "failed": self.failed,
        }


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
"""Default of an option that has none: the config must set it."""


@dataclass(frozen=True)
class Option:
    """One configuration key of a sink.

    `type` is int, float, str or bool. Strings are accepted for numbers and booleans too,
    because options may come from a command line. `coerce` replaces the type conversion
    (e.g. a file mode written in octal); `check` returns what is wrong with a converted
    value ("must be >= 0") or None.
    """

    type: type
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None
    coerce: Callable[[Any], Any] | None = None
    # a credential: never printed (--check-config, -v), only said to be set
    secret: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def convert(self, raw: Any) -> Any:
        """Return `raw` as this option's type; ValueError says what was expected."""
        if self.coerce is not None:
            return self.coerce(raw)
        return _convert(self.type, raw)


def _convert(want: type, raw: Any) -> Any:
    # bool is an int subclass: `rotate_bytes = true` is a mistake, not 1.
    if want is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "yes", "no", "1", "0"):
            return raw.lower() in ("true", "yes", "1")
        raise ValueError("must be true or false")
    if want is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip(), 10)
            except ValueError:
                pass
        raise ValueError("must be an integer")
    if want is float:
        value: float | None = None
        try:
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                value = float(raw)
            elif isinstance(raw, str):
                value = float(raw.strip())
        except (ValueError, OverflowError):
            value = None
        if value is None:
            raise ValueError("must be a number")
        # nan passes no comparison and inf passes every upper bound: neither is a setting
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value
    if want is str:
        if isinstance(raw, str):
            return raw
        raise ValueError("must be a string")
    raise TypeError(f"unsupported option type {want!r}")


class Sink(abc.ABC):
    """Base of every sink: subclasses set `name` and `options`, and implement the coroutines."""

    name: ClassVar[str]
    options: ClassVar[dict[str, Option]]

    def __init__(self, **options: Any) -> None:
        # Validating again is idempotent and lets tests and plugins build a sink directly.
        self.config: dict[str, Any] = type(self).validate_options(options)
        self.stats = SinkStats()
        # Receives whole lines ("pipeline: sink <name>: <msg>"); tests may replace it. By
        # default they go to the package's log, as warnings: a failing sink is news even with -q.
        self.reporter: Callable[[str], None] = _log_report
        # Called once when the sink fails for good; the reader uses it to stop the run when
        # no sink is left (a failure can come while the reader sleeps, not only on a write).
        self.on_fail: Callable[[Sink], None] | None = None
        # The failure was the destination's reader going away (a closed pipe), not an error.
        self.reader_gone = False

    @classmethod
    def validate_options(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Return every option with defaults filled in, or raise SinkError naming the bad key."""
        unknown = sorted(set(raw) - set(cls.options))
        if unknown:
            known = ", ".join(cls.options) or "none"
            raise SinkError(
                f"sink {cls.name}: unknown option {unknown[0]!r}; known options: {known}"
            )
        out: dict[str, Any] = {}
        for key, opt in cls.options.items():
            if key not in raw:
                if opt.required:
                    raise SinkError(
                        f"sink {cls.name}: option {key!r} is required ({opt.help}); "
                        "set it in the sink config"
                    )
                out[key] = opt.default
                continue
            try:
                value = opt.convert(raw[key])
                problem = opt.check(value) if opt.check is not None else None
            except ValueError as e:
                problem = str(e)
            if problem is not None:
                raise SinkError(
                    f"sink {cls.name}: option {key!r} {problem}, got {raw[key]!r}; "
                    "fix it in the sink config"
                )
            out[key] = value
        return out

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> dict[str, str]:
        """Command-line flags of this sink: add them to `group` (the run's "sinks" group)
        and return {flag's dest: option name}. A flag left at its default None is not
        given; any other value becomes `[sink.NAME] option`, overriding the config file,
        and is validated like the file's value. Flags must not clash with the run's own
        or another sink's. None by default."""
        del group
        return {}

    @classmethod
    def create(cls, **options: Any) -> Sink:
        """The sink a run uses for these options (already validated); a sink whose options
        pick another implementation (jsonl's output "-") overrides it."""
        return cls(**options)

    def use_arena(self, arena: Any) -> None:
        """The run's data-structure space (a pipeline.ds.Arena in the arena that holds the
        event queue), given once the kernel side is loaded, before the first batch, and
        usable until close() returns: a sink may keep structures there and look things up
        without a system call. Ignored by default."""
        del arena

    @abc.abstractmethod
    async def start(self) -> None:
        """Open or connect; raise SinkError (one line) if the destination is unusable."""

    @abc.abstractmethod
    async def write(self, batch: Batch) -> None:
        """Hand on one batch, in order. Never raises for runtime faults: count them as dropped."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush what is pending within a bounded time, close, count the rest as dropped."""

    def skip(self, batch: Batch) -> bool:
        """True when `batch` needs no work: it is empty, or the sink has failed for good
        (then its events are counted as dropped, `write_failed`)."""
        if batch.count == 0:
            return True
        if self.stats.failed is not None:
            self.stats.drop("write_failed", batch.count)
            return True
        return False

    def report(self, msg: str) -> None:
        self.reporter(f"pipeline: sink {self.name}: {msg}")

    def fail(self, msg: str, *, reader_gone: bool = False) -> None:
        """Mark the sink failed for good; the first failure is reported, later ones are not.
        `reader_gone`: the destination's reader closed it (`| head`), which is not an error."""
        if self.stats.failed is None:
            self.stats.failed = msg
            self.reader_gone = reader_gone
            self.report(msg)
            if self.on_fail is not None:
                self.on_fail(self)


def _log_report(line: str) -> None:
    # the log's handler puts the "pipeline: " prefix back
    log.setup(None)
    log.get("pipeline.sinks").warning("%s", line.removeprefix("pipeline: "))


def at_least(lo: float) -> Callable[[Any], str | None]:
    """A `check` for Option: value >= lo."""

    def check(value: Any) -> str | None:
        return None if value >= lo else f"must be >= {lo:g}"

    return check


def greater_than(lo: float) -> Callable[[Any], str | None]:
    """A `check` for Option: value > lo."""

    def check(value: Any) -> str | None:
        return None if value > lo else f"must be > {lo:g}"

    return check
