"""The benchmark's parts and what each gets and gives.

A part is a module of this package with
  - TITLE: str, one line saying what it measures;
  - run(ctx: Context) -> PartResult: its questions (tables of figures, each figure every
    round's value, targets judged on the median), baselines it had to leave out and why,
    and its raw data (every round as measured) for results.json;
  - optionally plots(res: PartResult) -> list[Plot]: matplotlib figures, saved as
    <name>.png and <name>.svg.
It registers with one line in PARTS below. Parts run in that order; a part that fails is
reported with its error and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, cast

from .figures import PartResult
from .progress import Progress

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

# name -> module, in the order they run: one line registers a part
PARTS: dict[str, str] = {
    "transport": ".part_transport",
    "e2e": ".part_e2e",
    "latency": ".part_latency",
    "idle": ".part_idle",
    "startup": ".part_startup",
    "ds": ".part_ds",
    "scaling": ".part_scaling",
    "overhead": ".part_overhead",
    "race": ".part_race",
    "nats": ".part_nats",
    "kcost": ".part_kcost",
    "proccost": ".part_proccost",
    "linearize": ".part_linearize",
}


@dataclass
class Context:
    """What a part gets: the mode, the rounds it must run, a private scratch directory, the
    progress display and every flag (a part reads its own)."""

    quick: bool
    rounds: int
    tmp: Path
    progress: Progress
    args: argparse.Namespace

    def pick(self, quick: float, full: float) -> float:
        """A size for the mode: quick runs check that the part works, not how fast."""
        return quick if self.quick else full


@dataclass
class Plot:
    name: str  # file stem: <name>.png and <name>.svg
    figure: MplFigure


@dataclass(frozen=True)
class Part:
    name: str
    title: str
    run: Callable[[Context], PartResult]
    plots: Callable[[PartResult], list[Plot]] | None


def load(name: str) -> Part:
    mod: ModuleType = importlib.import_module(PARTS[name], __package__)
    plots = getattr(mod, "plots", None)
    return Part(name, cast(str, mod.TITLE), cast(Callable[[Context], PartResult], mod.run),
                cast(Callable[[PartResult], list[Plot]] | None, plots))
