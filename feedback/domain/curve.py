"""The learning curve of a project: holdout score against training examples, laid out for SVG.

Pure geometry: the page draws what this returns (no script, so the strict CSP holds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 640, 240
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 48, 16, 12, 36
TICKS = 5


@dataclass(frozen=True)
class Version:
    """One model version as the curve needs it."""

    version: int
    train_size: int
    score: float | None
    baseline: float | None
    promoted: bool


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    version: int
    train_size: int
    score: float
    promoted: bool


@dataclass(frozen=True)
class Tick:
    at: float
    text: str


@dataclass(frozen=True)
class Chart:
    """Everything an `<svg viewBox="0 0 width height">` needs, in user units."""

    width: int
    height: int
    dots: tuple[Dot, ...]
    promoted_line: str  # polyline points through the promoted versions, in version order
    baseline_line: str  # the most-frequent-class baseline each version was scored against
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    plot: tuple[float, float, float, float]  # left, top, right, bottom of the plotting area


def chart(versions: Sequence[Version], lower_is_better: bool = False) -> Chart | None:
    """Lay out every scored version; None when fewer than one has a finite score."""
    scored = sorted(
        (v for v in versions if v.score is not None and math.isfinite(v.score)),
        key=lambda v: v.version,
    )
    if not scored:
        return None
    values = [v.score for v in scored if v.score is not None]
    values += [v.baseline for v in scored if v.baseline is not None and math.isfinite(v.baseline)]
    low, high = _y_range(values, lower_is_better)
    sizes = [v.train_size for v in scored]
    left_x, right_x = min(sizes), max(sizes)
    if left_x == right_x:
        left_x, right_x = left_x - 1, right_x + 1
    left, top = MARGIN_LEFT, MARGIN_TOP
    right, bottom = WIDTH - MARGIN_RIGHT, HEIGHT - MARGIN_BOTTOM

    def x_of(size: float) -> float:
        return round(left + (size - left_x) / (right_x - left_x) * (right - left), 1)

    def y_of(value: float) -> float:
        return round(bottom - (value - low) / (high - low) * (bottom - top), 1)

    dots = tuple(
        Dot(x_of(v.train_size), y_of(v.score), v.version, v.train_size, v.score, v.promoted)
        for v in scored
        if v.score is not None
    )
    baseline = [v for v in scored if v.baseline is not None and math.isfinite(v.baseline)]
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        dots=dots,
        promoted_line=" ".join(f"{d.x},{d.y}" for d in dots if d.promoted),
        baseline_line=" ".join(
            f"{x_of(v.train_size)},{y_of(v.baseline)}" for v in baseline if v.baseline is not None
        ),
        x_ticks=tuple(
            Tick(x_of(size), str(round(size))) for size in _steps(left_x, right_x, integer=True)
        ),
        y_ticks=tuple(Tick(y_of(value), f"{value:.2f}") for value in _steps(low, high)),
        plot=(left, top, right, bottom),
    )


def _y_range(values: list[float], lower_is_better: bool) -> tuple[float, float]:
    """Scores in [0, 1] keep that scale; a loss is shown from 0 to its largest value."""
    high = max(values)
    if not lower_is_better and high <= 1.0 and min(values) >= 0.0:
        return 0.0, 1.0
    low = min(0.0, min(values))
    return low, high if high > low else low + 1.0


def _steps(low: float, high: float, integer: bool = False) -> list[float]:
    count = TICKS - 1
    found = [low + (high - low) * i / count for i in range(TICKS)]
    if integer:
        found = sorted({round(value) for value in found})
    return found
