"""The promotion rule: a candidate replaces the champion only if it is clearly better."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

LOWER_IS_BETTER = frozenset({"log_loss"})


@dataclass(frozen=True)
class PromotionPolicy:
    """How much better a candidate must be, on which metric, on how large a holdout."""

    metric: str = "macro_f1"
    min_gain: float = 0.0
    min_holdout: int = 20
    class_tolerance: float = 0.10


@dataclass(frozen=True)
class Scores:
    """Holdout metrics of one model (`per_class` holds the F1 of each label)."""

    metrics: Mapping[str, float]
    per_class: Mapping[str, float]


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reasons: tuple[str, ...]

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


def gain(metric: str, candidate: float, reference: float) -> float:
    """How much better `candidate` is than `reference` (positive = better)."""
    return reference - candidate if metric in LOWER_IS_BETTER else candidate - reference


def decide(
    candidate: Scores,
    baseline: Scores,
    champion: Scores | None,
    holdout_size: int,
    missing_classes: tuple[str, ...],
    policy: PromotionPolicy,
) -> PromotionDecision:
    """Promote only when every rule of the policy holds; give every reason either way."""
    problems = _blocking_problems(
        candidate, baseline, champion, holdout_size, missing_classes, policy
    )
    if problems:
        return PromotionDecision(False, tuple(problems))
    value = candidate.metrics[policy.metric]
    reasons = [f"{policy.metric} {value:.4f} beats baseline {baseline.metrics[policy.metric]:.4f}"]
    if champion is None:
        reasons.append("no champion yet")
    else:
        reasons.append(f"beats champion {champion.metrics[policy.metric]:.4f} by the minimum gain")
    return PromotionDecision(True, tuple(reasons))


def _blocking_problems(
    candidate: Scores,
    baseline: Scores,
    champion: Scores | None,
    holdout_size: int,
    missing_classes: tuple[str, ...],
    policy: PromotionPolicy,
) -> list[str]:
    metric = policy.metric
    value = candidate.metrics.get(metric, math.nan)
    if holdout_size < policy.min_holdout:
        return [f"holdout has {holdout_size} examples, policy needs {policy.min_holdout}"]
    if math.isnan(value):
        return [f"candidate {metric} is not a number"]
    problems = []
    if missing_classes:
        problems.append(f"classes missing from training: {', '.join(missing_classes)}")
    if gain(metric, value, baseline.metrics[metric]) <= 0:
        problems.append(
            f"{metric} {value:.4f} does not beat baseline {baseline.metrics[metric]:.4f}"
        )
    if champion is not None:
        problems.extend(_champion_problems(candidate, champion, policy))
    return problems


def _champion_problems(candidate: Scores, champion: Scores, policy: PromotionPolicy) -> list[str]:
    metric = policy.metric
    value, reference = candidate.metrics[metric], champion.metrics.get(metric, math.nan)
    problems = []
    if not math.isnan(reference) and gain(metric, value, reference) <= policy.min_gain:
        problems.append(
            f"{metric} {value:.4f} does not beat champion {reference:.4f} "
            f"by more than {policy.min_gain}"
        )
    worse = [
        label
        for label, f1 in champion.per_class.items()
        if candidate.per_class.get(label, 0.0) < f1 - policy.class_tolerance
    ]
    if worse:
        problems.append(
            f"classes worse than the champion by over {policy.class_tolerance}: {', '.join(worse)}"
        )
    return problems
