"""Incremental mode: fold only the new labels into the champion, refit in full now and then.

A pipeline can learn incrementally when its last step has `partial_fit` and every step
before it either has `partial_fit` too (a scaler) or learns nothing (a hashing vectorizer).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from feedback.domain.promotion import gain

MAX_HOLDOUT_GAP = 0.01  # an update this much worse than the champion triggers a full refit


@dataclass(frozen=True)
class Parent:
    """What a run knows about the champion it could continue from."""

    spec: str
    supports_partial_fit: bool
    classes: frozenset[str]
    chain: int  # incremental updates since the last full refit, counting the champion
    unchanged: bool  # the examples it was trained on still carry the same labels


@dataclass(frozen=True)
class Plan:
    """Whether this run updates the champion or refits from scratch, and why."""

    incremental: bool
    reason: str


def plan(
    enabled: bool,
    parent: Parent | None,
    spec: str,
    labels: Sequence[str],
    full_refit_every: int,
    new_examples: int,
) -> Plan:
    """Decide between an incremental update and a full refit."""
    if not enabled:
        return Plan(False, "incremental mode is off")
    reason = _refit_reason(parent, spec, labels, full_refit_every, new_examples)
    if reason:
        return Plan(False, reason)
    return Plan(True, f"folding {new_examples} new labels into the champion")


def _refit_reason(
    parent: Parent | None,
    spec: str,
    labels: Sequence[str],
    full_refit_every: int,
    new_examples: int,
) -> str:
    if parent is None:
        return "no champion to continue from"
    if parent.spec != spec:
        return "the model spec changed since the champion"
    if not parent.supports_partial_fit:
        return "the champion's pipeline has no partial_fit"
    if parent.classes != frozenset(labels):
        return "the project's classes changed since the champion"
    if not parent.unchanged:
        return "labels the champion learned from changed (corrections or removed classes)"
    if parent.chain + 1 >= max(full_refit_every, 1):
        return f"a full refit is due every {full_refit_every} runs"
    if new_examples == 0:
        return "no new labels to fold in"
    return ""


def supports_partial_fit(model: Any) -> bool:
    """Whether `model` (a pipeline or one estimator) can be updated with `partial_fit`."""
    steps = [s for _, s in model.steps] if isinstance(model, Pipeline) else [model]
    steps = [s for s in steps if s is not None and s != "passthrough"]
    if not steps or not hasattr(steps[-1], "partial_fit"):
        return False
    return all(hasattr(step, "partial_fit") or _stateless(step) for step in steps[:-1])


def _stateless(step: Any) -> bool:
    try:
        return not step.__sklearn_tags__().requires_fit
    except AttributeError:
        return False


def partial_fit(model: Any, inputs: Any, labels: Sequence[str], classes: Sequence[str]) -> Any:
    """Return a copy of a fitted model updated with new examples; the original is untouched."""
    updated = copy.deepcopy(model)
    steps = [s for _, s in updated.steps] if isinstance(updated, Pipeline) else [updated]
    steps = [s for s in steps if s is not None and s != "passthrough"]
    data = inputs
    for step in steps[:-1]:
        if hasattr(step, "partial_fit"):
            step.partial_fit(data)
        data = step.transform(data)
    steps[-1].partial_fit(data, np.asarray(labels), classes=np.asarray(sorted(classes)))
    return updated


def gap_too_big(metric: str, champion: float, candidate: float) -> bool:
    """Whether an incremental candidate trails the champion by more than `MAX_HOLDOUT_GAP`."""
    if math.isnan(candidate):
        return True
    if math.isnan(champion):
        return False
    return gain(metric, candidate, champion) < -MAX_HOLDOUT_GAP
