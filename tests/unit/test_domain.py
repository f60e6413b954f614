"""The pure core: uncertainty, routing, consensus and the promotion rule, no database."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedback.domain import routing, uncertainty
from feedback.domain.consensus import Outcome, majority
from feedback.domain.promotion import PromotionPolicy, Scores, decide


@pytest.mark.parametrize("strategy", list(uncertainty.Strategy))
def test_uniform_is_most_uncertain_and_certain_is_least(strategy: str) -> None:
    scores = uncertainty.score(strategy, np.array([[1 / 3] * 3, [1.0, 0.0, 0.0], [0.6, 0.3, 0.1]]))
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(0.0)
    assert 0.0 < scores[2] < 1.0


def test_margin_ranks_close_calls_above_clear_ones() -> None:
    scores = uncertainty.score("margin", np.array([[0.5, 0.45, 0.05], [0.7, 0.2, 0.1]]))
    assert scores[0] > scores[1]


def test_entropy_is_normalised_for_any_class_count() -> None:
    for k in (2, 5, 10):
        assert uncertainty.score("entropy", np.full((1, k), 1 / k))[0] == pytest.approx(1.0)


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="bogus"):
        uncertainty.score("bogus", np.array([[0.5, 0.5]]))


def test_routing_by_threshold_and_audit_draw() -> None:
    assert routing.route(0.5, threshold=0.8, audit_rate=0.1, draw=0.0) is routing.Route.REVIEW
    assert routing.route(0.1, threshold=0.8, audit_rate=0.1, draw=0.05) is routing.Route.AUDIT
    assert routing.route(0.1, threshold=0.8, audit_rate=0.1, draw=0.5) is routing.Route.AUTO
    assert routing.route(0.1, threshold=0.8, audit_rate=0.0, draw=0.0) is routing.Route.AUTO


def test_consensus() -> None:
    assert majority(["a"], 1).outcome is Outcome.DECIDED
    assert majority(["a"], 2).outcome is Outcome.PENDING
    assert majority(["a", "b"], 2).outcome is Outcome.ESCALATED
    assert majority(["a", "a", "b"], 3).label == "a"
    assert majority(["unsure"], 1).outcome is Outcome.ESCALATED


def _scores(value: float, per_class: dict[str, float] | None = None) -> Scores:
    return Scores(
        {"macro_f1": value, "accuracy": value, "log_loss": 1 - value},
        per_class or {"a": value, "b": value},
    )


POLICY = PromotionPolicy(min_holdout=10)


def test_first_model_is_promoted_when_it_beats_the_baseline() -> None:
    verdict = decide(_scores(0.8), _scores(0.3), None, 50, (), POLICY)
    assert verdict.promote
    assert "no champion yet" in verdict.summary


def test_worse_than_champion_or_baseline_is_not_promoted() -> None:
    assert not decide(_scores(0.7), _scores(0.3), _scores(0.8), 50, (), POLICY).promote
    assert not decide(_scores(0.3), _scores(0.3), None, 50, (), POLICY).promote
    equal = decide(_scores(0.8), _scores(0.3), _scores(0.8), 50, (), POLICY)
    assert not equal.promote
    assert "does not beat champion" in equal.summary


def test_nan_tiny_holdout_missing_class_and_class_regression_block_promotion() -> None:
    assert "not a number" in decide(_scores(math.nan), _scores(0.3), None, 50, (), POLICY).summary
    assert "holdout has 5" in decide(_scores(0.9), _scores(0.3), None, 5, (), POLICY).summary
    assert (
        "missing from training: b"
        in decide(_scores(0.9), _scores(0.3), None, 50, ("b",), POLICY).summary
    )
    worse_b = _scores(0.9, {"a": 1.0, "b": 0.5})
    verdict = decide(worse_b, _scores(0.3), _scores(0.85, {"a": 0.8, "b": 0.9}), 50, (), POLICY)
    assert not verdict.promote
    assert "classes worse than the champion" in verdict.summary


def test_log_loss_is_lower_is_better() -> None:
    policy = PromotionPolicy(metric="log_loss", min_holdout=10)
    better = decide(_scores(0.9), _scores(0.3), _scores(0.8), 50, (), policy)
    assert better.promote
