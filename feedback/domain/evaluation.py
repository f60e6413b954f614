"""Scoring a fitted model on the holdout."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss

from feedback.domain.promotion import METRICS, Scores


def aligned_probabilities(model: Any, inputs: Any, labels: Sequence[str]) -> np.ndarray:
    """Predict probabilities with one column per project label, in the project's order."""
    raw = np.asarray(model.predict_proba(inputs), dtype=np.float64)
    out = np.zeros((raw.shape[0], len(labels)))
    index = {label: i for i, label in enumerate(labels)}
    for column, cls in enumerate(model.classes_):
        if str(cls) in index:
            out[:, index[str(cls)]] = raw[:, column]
    totals = out.sum(axis=1, keepdims=True)
    uniform = np.full_like(out, 1.0 / len(labels))
    return np.where(totals > 0, out / np.where(totals > 0, totals, 1.0), uniform)


def evaluate(model: Any, inputs: Any, truth: Sequence[str], labels: Sequence[str]) -> Scores:
    """Score `model` on the holdout: accuracy, macro-F1, log-loss and per-class F1."""
    probabilities = aligned_probabilities(model, inputs, labels)
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    per_class = f1_score(truth, predicted, labels=list(labels), average=None, zero_division=0.0)
    metrics = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(
            f1_score(truth, predicted, labels=list(labels), average="macro", zero_division=0.0)
        ),
        "log_loss": _log_loss(truth, probabilities, labels),
    }
    return Scores(
        metrics=metrics,
        per_class=dict(zip(labels, map(float, per_class), strict=True)),
        support={**dict.fromkeys(labels, 0), **Counter(truth)},
    )


def _log_loss(truth: Sequence[str], probabilities: np.ndarray, labels: Sequence[str]) -> float:
    """Log-loss with the columns put in sorted label order, as scikit-learn expects them."""
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    clipped = np.clip(probabilities[:, order], 1e-15, 1.0)
    return float(log_loss(truth, clipped, labels=[labels[i] for i in order]))


def no_scores() -> Scores:
    """Scores of a model that could not be judged (an empty holdout): every metric NaN."""
    return Scores(metrics=dict.fromkeys(METRICS, float("nan")), per_class={})
