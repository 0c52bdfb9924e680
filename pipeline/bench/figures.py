"""Figures and the questions they answer: what every part hands to the report.

A figure is one measured quantity, kept as the value of every round; the report shows its
median and its min-max, and judges its target (if it has one) on the median alone, so that
one noisy round can neither make nor break it. A question groups the figures that answer it
and becomes one table in report.md.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# How a target compares the median with its value.
CMP = (">=", "<=", "<", ">")


@dataclass(frozen=True)
class Target:
    cmp: str
    value: float

    def __post_init__(self) -> None:
        if self.cmp not in CMP:
            raise ValueError(f"target comparison {self.cmp!r} is not one of {CMP}")

    def met(self, x: float) -> bool:
        return {">=": x >= self.value, "<=": x <= self.value, "<": x < self.value,
                ">": x > self.value}[self.cmp]

    def text(self, unit: str) -> str:
        return f"{self.cmp} {_num(self.value)}{_unit(unit)}"


@dataclass
class Figure:
    """One quantity, every round's value in `rounds` (in the order measured)."""

    name: str
    unit: str
    rounds: list[float]
    target: Target | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if not self.rounds:
            raise ValueError(f"figure {self.name!r} has no rounds")

    @property
    def median(self) -> float:
        return float(statistics.median(self.rounds))

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.median)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "rounds": [float(x) for x in self.rounds],
            "median": self.median,
            "min": float(min(self.rounds)),
            "max": float(max(self.rounds)),
            "target": (None if self.target is None
                       else {"cmp": self.target.cmp, "value": self.target.value}),
            "met": self.met,
            "note": self.note,
        }


@dataclass
class Question:
    """One table of the report: a question and the figures that answer it."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    note: str = ""

    def add(self, name: str, unit: str, rounds: Sequence[float], target: Target | None = None,
            note: str = "") -> Figure:
        f = Figure(name, unit, [float(x) for x in rounds], target, note)
        self.figures.append(f)
        return f

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "note": self.note,
                "figures": [f.to_json() for f in self.figures]}


@dataclass
class Skipped:
    """A contender or baseline that could not run, and why (the rest ran without it)."""

    what: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"what": self.what, "reason": self.reason}


@dataclass
class PartResult:
    """What a part returns: its questions, what it skipped, and its raw data (every round's
    figures as measured, for results.json and the plots)."""

    questions: list[Question] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def question(self, title: str, note: str = "") -> Question:
        q = Question(title, note=note)
        self.questions.append(q)
        return q


def ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Round by round: both sides of each ratio measured in the same round. A zero
    denominator (nothing measured on that side) gives a huge but finite ratio, which JSON
    can hold."""
    return [a / (b if b else 1e-12) for a, b in zip(num, den, strict=True)]


def _num(x: float) -> str:
    if x == 0 or 0.01 <= abs(x) < 1e6:
        return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"
    return f"{x:.3g}"


def _unit(unit: str) -> str:
    return "" if not unit else (unit if unit in ("x", "%") else f" {unit}")


def fmt(x: float, unit: str) -> str:
    """A value with its unit, as the report shows it."""
    return f"{_num(x)}{_unit(unit)}"


def fmt_range(lo: float, hi: float, unit: str) -> str:
    """min-max with the unit once: "1.2 - 3.4 ms"."""
    return f"{_num(lo)} - {fmt(hi, unit)}"
