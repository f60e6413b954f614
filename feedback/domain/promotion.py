"""The promotion rule: a candidate replaces the champion only if it is clearly better."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

LOWER_IS_BETTER = frozenset({"log_loss"})
LOG_LOSS_SLACK = 0.01  # near-perfect models have tiny log-losses; ignore noise below this
METRICS = ("macro_f1", "accuracy", "log_loss")


@dataclass(frozen=True)
class PromotionPolicy:
    """How much better a candidate must be, on which metric, on how large a holdout."""

    metric: str = "macro_f1"
    min_gain: float = 0.0
    min_holdout: int = 20
    class_tolerance: float = 0.10
    # Routing and the queue order read the probabilities, so a candidate whose log-loss is
    # much worse than the champion's is refused even when its argmax metric looks better
    # (shuffled or noisy labels flatten probabilities long before they move the argmax).
    max_log_loss_ratio: float = 1.2


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

    def refused(self, reason: str) -> PromotionDecision:
        """The same decision, refused for one more reason (listed first)."""
        kept = self.reasons if not self.promote else ()
        return PromotionDecision(False, (reason, *kept))


def gain(metric: str, candidate: float, reference: float) -> float:
    """How much better `candidate` is than `reference` (positive = better)."""
    return reference - candidate if metric in LOWER_IS_BETTER else candidate - reference


def missing_classes(labels: Sequence[str], trained_on: Iterable[str]) -> tuple[str, ...]:
    """The project's classes that have no training example, in the project's order."""
    present = set(trained_on)
    return tuple(label for label in labels if label not in present)


def decide(
    candidate: Scores,
    baseline: Scores,
    champion: Scores | None,
    holdout_size: int,
    missing: tuple[str, ...],
    policy: PromotionPolicy,
) -> PromotionDecision:
    """Promote only when every rule of the policy holds; give every reason either way."""
    problems = _blocking_problems(candidate, baseline, champion, holdout_size, missing, policy)
    if problems:
        return PromotionDecision(False, tuple(problems))
    metric = policy.metric
    value = candidate.metrics[metric]
    reasons = [f"{metric} {value:.4f} beats baseline {baseline.metrics[metric]:.4f}"]
    if champion is None:
        reasons.append("no champion yet")
    else:
        reasons.append(
            f"beats champion {champion.metrics[metric]:.4f} by more than {policy.min_gain}"
        )
    return PromotionDecision(True, tuple(reasons))


def _blocking_problems(
    candidate: Scores,
    baseline: Scores,
    champion: Scores | None,
    holdout_size: int,
    missing: tuple[str, ...],
    policy: PromotionPolicy,
) -> list[str]:
    metric = policy.metric
    value = candidate.metrics.get(metric, math.nan)
    if holdout_size < max(policy.min_holdout, 1):
        return [f"holdout has {holdout_size} examples, policy needs {policy.min_holdout}"]
    if math.isnan(value):
        return [f"candidate {metric} is not a number"]
    problems = []
    if missing:
        problems.append(f"classes missing from training: {', '.join(missing)}")
    reference = baseline.metrics.get(metric, math.nan)
    if math.isnan(reference) or gain(metric, value, reference) <= 0:
        problems.append(f"{metric} {value:.4f} does not beat baseline {reference:.4f}")
    if champion is not None:
        problems.extend(_champion_problems(candidate, champion, policy))
    return problems


def _champion_problems(candidate: Scores, champion: Scores, policy: PromotionPolicy) -> list[str]:
    metric = policy.metric
    value, reference = candidate.metrics[metric], champion.metrics.get(metric, math.nan)
    problems = []
    if math.isnan(reference):
        problems.append(f"champion {metric} is not a number, so the candidate cannot be compared")
    elif gain(metric, value, reference) <= policy.min_gain:
        problems.append(
            f"{metric} {value:.4f} does not beat champion {reference:.4f} "
            f"by more than {policy.min_gain}"
        )
    problems.extend(_calibration_problems(candidate, champion, policy))
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


def _calibration_problems(
    candidate: Scores, champion: Scores, policy: PromotionPolicy
) -> list[str]:
    if policy.metric == "log_loss":
        return []  # the main rule compares log-loss already
    value = candidate.metrics.get("log_loss", math.nan)
    reference = champion.metrics.get("log_loss", math.nan)
    if math.isnan(value) or math.isnan(reference):
        return []
    if value <= reference * policy.max_log_loss_ratio + LOG_LOSS_SLACK:
        return []
    return [
        f"probabilities got worse: log_loss {value:.4f} against the champion's {reference:.4f} "
        f"(more than {policy.max_log_loss_ratio}x); routing and the queue order rely on them"
    ]
