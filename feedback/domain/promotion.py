"""The promotion rule: a candidate replaces the champion only if it is clearly better."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

LOWER_IS_BETTER = frozenset({"log_loss"})
LOG_LOSS_SLACK = 0.01  # near-perfect models have tiny log-losses; ignore noise below this
METRICS = ("macro_f1", "accuracy", "log_loss")
# Chance, over all classes together, that a candidate as good as the champion is blocked by
# the per-class rule through holdout sampling noise alone (split evenly over the classes).
CLASS_FALSE_ALARM = 0.10


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
    """Holdout metrics of one model.

    `per_class` holds the F1 of each label; `support` how many holdout examples have that
    label (unknown when empty: the per-class rule then uses the tolerance alone).
    """

    metrics: Mapping[str, float]
    per_class: Mapping[str, float]
    support: Mapping[str, int] = field(default_factory=dict)


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
        reasons.extend(_within_noise(candidate, champion, policy.class_tolerance))
    return PromotionDecision(True, tuple(reasons))


def _within_noise(candidate: Scores, champion: Scores, tolerance: float) -> list[str]:
    """Say which classes fell by more than the tolerance yet within their holdout's noise."""
    noisy = [d for d in class_drops(candidate, champion) if tolerance < d.drop <= d.bound]
    if not noisy:
        return []
    return [
        f"classes that fell by more than {tolerance} but within what their holdout examples "
        f"resolve ({bound_formula(champion)}): {', '.join(d.describe() for d in noisy)}"
    ]


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
    worse = worse_classes(candidate, champion, policy.class_tolerance)
    if worse:
        problems.append(
            "classes worse than the champion by more than both the tolerance "
            f"{policy.class_tolerance} and what their holdout examples resolve "
            f"({bound_formula(champion)}): {', '.join(d.describe() for d in worse)}"
        )
    return problems


def class_z(classes: int) -> float:
    """The one-sided normal quantile for one of `classes` tests (Bonferroni)."""
    return NormalDist().inv_cdf(1.0 - CLASS_FALSE_ALARM / max(classes, 1))


def bound_formula(champion: Scores) -> str:
    """The per-class bound in words, with this comparison's z."""
    classes = len(champion.per_class)
    return (
        f"bound = z * sqrt(2 p (1 - p) / n), z {class_z(classes):.2f} for {classes} classes, "
        "p the mean of the two F1s, n the class's holdout examples"
    )


@dataclass(frozen=True)
class ClassDrop:
    """How far one class's F1 fell from the champion's, and the fall its holdout resolves."""

    label: str
    champion: float
    candidate: float
    examples: int | None  # holdout examples of the class; None when unknown
    bound: float  # the largest fall that sampling noise alone explains (0 when unknown)

    @property
    def drop(self) -> float:
        return self.champion - self.candidate

    def describe(self) -> str:
        counted = "examples unknown" if self.examples is None else f"{self.examples} examples"
        return (
            f"{self.label} (F1 {self.champion:.2f} -> {self.candidate:.2f}, "
            f"bound {self.bound:.2f}, {counted})"
        )


def class_drops(candidate: Scores, champion: Scores) -> list[ClassDrop]:
    """Every class whose F1 fell, with the fall its holdout support can resolve.

    Two-proportion z-test per class, Bonferroni-corrected over the K classes: a fall is
    sampling noise unless it exceeds z * sqrt(2 p (1 - p) / n), with p the mean of the two
    F1s, n the class's holdout examples and z the normal quantile of 1 - 0.10 / K (one-sided).
    """
    z = class_z(len(champion.per_class))
    support = candidate.support or champion.support
    drops = []
    for label, before in champion.per_class.items():
        after = candidate.per_class.get(label, 0.0)
        if after >= before:
            continue
        examples = support.get(label)
        drops.append(ClassDrop(label, before, after, examples, _bound(z, before, after, examples)))
    return drops


def _bound(z: float, before: float, after: float, examples: int | None) -> float:
    if examples is None:
        return 0.0
    if examples <= 0:
        return math.inf  # no holdout example of the class: nothing to compare
    p = (before + after) / 2.0
    return z * math.sqrt(2.0 * p * (1.0 - p) / examples)


def worse_classes(candidate: Scores, champion: Scores, tolerance: float) -> list[ClassDrop]:
    """Classes that fell by more than both the tolerance and their holdout's noise."""
    return [d for d in class_drops(candidate, champion) if d.drop > max(tolerance, d.bound)]


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
