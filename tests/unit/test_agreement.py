"""Pure rules of the queue: consensus, agreement statistics, what a claim serves."""

from __future__ import annotations

import pytest
from sklearn.metrics import cohen_kappa_score

from feedback.domain.agreement import (
    cohen_kappa,
    gold_accuracy,
    kappa_of_pairs,
    krippendorff_alpha,
)
from feedback.domain.consensus import Outcome, majority
from feedback.domain.selection import Pick, choose_pick


def test_kappa_matches_scikit_learn() -> None:
    a = ["x", "y", "x", "x", "y", "z", "z", "x", "y", "y"]
    b = ["x", "y", "y", "x", "z", "z", "z", "x", "x", "y"]
    assert kappa_of_pairs(zip(a, b, strict=True)) == pytest.approx(cohen_kappa_score(a, b))


def test_kappa_edge_cases() -> None:
    assert cohen_kappa({}) is None
    assert cohen_kappa({("a", "a"): 5}) == 1.0  # one label, always agreed
    assert cohen_kappa({("a", "b"): 3, ("b", "a"): 3}) == pytest.approx(-1.0)


def test_krippendorff_alpha_reproduces_the_published_nominal_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal data: 0.743.
    units = [
        ["1", "1", "1"],
        ["2", "2", "3", "2"],
        ["3", "3", "3", "3"],
        ["3", "3", "3", "3"],
        ["2", "2", "2", "2"],
        ["1", "2", "3", "4"],
        ["4", "4", "4", "4"],
        ["1", "1", "2", "1"],
        ["2", "2", "2", "2"],
        ["5", "5", "5"],
        ["1", "1"],
        ["3"],
    ]
    alpha = krippendorff_alpha(units)
    assert alpha is not None
    assert round(alpha, 3) == 0.743


def test_krippendorff_alpha_edge_cases() -> None:
    assert krippendorff_alpha([["a"], []]) is None  # nothing pairable
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) == 1.0
    assert krippendorff_alpha([["a", "b"], ["b", "a"]]) < 0


def test_gold_accuracy_counts_matches() -> None:
    score = gold_accuracy({("pos", "pos"): 3, ("neg", "pos"): 1})
    assert (score.correct, score.total, score.rate) == (3, 4, 0.75)
    assert gold_accuracy({}).rate is None


def test_majority_needs_more_than_half_of_the_votes() -> None:
    assert majority(["a", "a", "a", "b"], 4).outcome is Outcome.DECIDED
    assert majority(["a", "a", "b", "c"], 4).outcome is Outcome.ESCALATED  # plurality, not majority
    assert majority(["a", "a", "b", "b"], 4).outcome is Outcome.ESCALATED
    assert majority(["a", "a", "b", "c", "d"], 5).outcome is Outcome.ESCALATED  # 2 of 5
    assert majority(["a", "b", "c"], 3).outcome is Outcome.ESCALATED
    assert majority(["a", "unsure"], 3).outcome is Outcome.ESCALATED  # unsure escalates at once
    assert majority([], 0).outcome is Outcome.PENDING  # no crash on a bad overlap


def test_choose_pick_splits_the_unit_interval() -> None:
    assert choose_pick(0.0, 0.0, 0.999) is Pick.TOP
    assert choose_pick(0.1, 0.0, 0.05) is Pick.GOLD
    assert choose_pick(0.1, 0.5, 0.2) is Pick.RANDOM  # 0.1 + 0.9 * 0.5 = 0.55
    assert choose_pick(0.1, 0.5, 0.6) is Pick.TOP
    assert choose_pick(2.0, -1.0, 0.99) is Pick.GOLD  # out-of-range shares are clamped
