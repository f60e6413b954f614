"""The learning-curve geometry the project page draws."""

from __future__ import annotations

import math

from feedback.domain import curve


def version(number: int, size: int, score: float | None, promoted: bool = True) -> curve.Version:
    return curve.Version(number, size, score, 0.2, promoted)


def test_no_scored_version_no_chart() -> None:
    assert curve.chart([]) is None
    assert curve.chart([version(1, 10, None), version(2, 20, math.nan)]) is None


def test_points_grow_right_with_examples_and_up_with_score() -> None:
    chart = curve.chart([version(2, 200, 0.9), version(1, 100, 0.5), version(3, 300, 0.7, False)])
    assert chart is not None
    left, top, right, bottom = chart.plot
    dots = {d.version: d for d in chart.dots}
    assert dots[1].x == left
    assert dots[3].x == right
    assert left < dots[2].x < right
    assert dots[2].y < dots[3].y < dots[1].y  # higher score, higher on the page
    assert top <= min(d.y for d in chart.dots)
    assert max(d.y for d in chart.dots) <= bottom
    assert chart.promoted_line == f"{dots[1].x},{dots[1].y} {dots[2].x},{dots[2].y}"
    assert not dots[3].promoted
    assert len(chart.baseline_line.split()) == 3
    assert [t.text for t in chart.y_ticks] == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    assert chart.x_ticks[0].text == "100"
    assert chart.x_ticks[-1].text == "300"


def test_one_version_and_a_loss_metric_still_fit_the_plot() -> None:
    chart = curve.chart([version(1, 50, 2.5)], lower_is_better=True)
    assert chart is not None
    left, top, right, bottom = chart.plot
    (dot,) = chart.dots
    assert left <= dot.x <= right
    assert top <= dot.y <= bottom
    assert chart.y_ticks[-1].text == "2.50"
