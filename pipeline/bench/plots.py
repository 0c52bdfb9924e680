"""The plots, drawn with matplotlib (Agg, no display): small helpers the parts share, and the
writer that saves each plot as PNG and SVG into the output directory."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
# text kept as text in SVG (searchable, and smaller than glyph outlines); ids stable
matplotlib.rcParams["svg.fonttype"] = "none"
matplotlib.rcParams["svg.hashsalt"] = "arena-pipeline-bench"
import matplotlib.pyplot as plt  # noqa: E402  (the backend and settings first)

from .figures import Figure  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

# (label, figure) pairs drawn as bars: median, with min-max whiskers
Bars = Sequence[tuple[str, Figure]]
# (label, xs, ys, lows, highs): one line with a min-max band
Series = tuple[str, Sequence[float], Sequence[float], Sequence[float], Sequence[float]]


def _size(panels: int) -> tuple[float, float]:
    # one panel gets room for a title as long as two panels' would
    return (max(5.2 * panels, 8.0), 4.2)


def bars(title: str, panels: Sequence[tuple[str, str, Bars]]) -> MplFigure:
    fig, axes = plt.subplots(1, len(panels), figsize=_size(len(panels)), squeeze=False)
    for ax, (sub, ylabel, items) in zip(axes[0], panels, strict=True):
        meds = [f.median for _, f in items]
        lo = [f.median - min(f.rounds) for _, f in items]
        hi = [max(f.rounds) - f.median for _, f in items]
        xs = range(len(items))
        ax.bar(xs, meds, yerr=[lo, hi], capsize=6, color="#4c72b0", edgecolor="black")
        ax.set_xticks(list(xs), [label for label, _ in items])
        ax.set_title(sub)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("contender")
        for x, f in zip(xs, (f for _, f in items), strict=True):
            label = f"{f.median:.3g}" if f.median < 1000 else f"{f.median:,.0f}"
            ax.annotate(label, (x, f.median), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def lines(title: str, panels: Sequence[tuple[str, str, str, Sequence[Series]]],
          logy: bool = False) -> MplFigure:
    """Panels of (subtitle, x label, y label, series)."""
    fig, axes = plt.subplots(1, len(panels), figsize=_size(len(panels)), squeeze=False)
    for ax, (sub, xlabel, ylabel, series) in zip(axes[0], panels, strict=True):
        for label, xs, ys, lo, hi in series:
            ax.plot(xs, ys, marker="o", label=label)
            ax.fill_between(xs, lo, hi, alpha=0.2)
        ax.set_title(sub)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def render(fig: MplFigure, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=90)
    return buf.getvalue()


def close(fig: MplFigure) -> None:
    plt.close(fig)
