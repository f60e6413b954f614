"""Where a prediction goes: the review queue, auto-accepted, or audited into the holdout."""

from __future__ import annotations

from enum import StrEnum


class Route(StrEnum):
    REVIEW = "review"
    AUTO = "auto"
    AUDIT = "audit"


def route(uncertainty: float, threshold: float, audit_rate: float, draw: float) -> Route:
    """Route one prediction.

    Args:
        uncertainty: score in [0, 1] from the project's strategy.
        threshold: confidence threshold; confidence is `1 - uncertainty`.
        audit_rate: share of the confident predictions sent to review as holdout.
        draw: a uniform random number in [0, 1) chosen by the caller.
    """
    if 1.0 - uncertainty < threshold:
        return Route.REVIEW
    if draw < audit_rate:
        return Route.AUDIT
    return Route.AUTO
