"""Uncertainty scores of predicted class probabilities, each in [0, 1] (1 = most unsure)."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

Probabilities = NDArray[np.float64]


class Strategy(StrEnum):
    LEAST_CONFIDENCE = "least_confidence"
    MARGIN = "margin"
    ENTROPY = "entropy"


def least_confidence(probabilities: Probabilities) -> NDArray[np.float64]:
    """Score one minus the top probability, rescaled so a uniform guess scores 1."""
    k = probabilities.shape[1]
    return np.asarray((1.0 - probabilities.max(axis=1)) * k / max(k - 1, 1))


def margin(probabilities: Probabilities) -> NDArray[np.float64]:
    """Score one minus the gap between the two most likely classes."""
    if probabilities.shape[1] < 2:
        return np.zeros(probabilities.shape[0])
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return 1.0 - (top_two[:, 1] - top_two[:, 0])


def entropy(probabilities: Probabilities) -> NDArray[np.float64]:
    """Score the Shannon entropy, normalised by its maximum for this many classes."""
    k = probabilities.shape[1]
    if k < 2:
        return np.zeros(probabilities.shape[0])
    clipped = np.clip(probabilities, 1e-12, 1.0)
    return np.asarray(-(probabilities * np.log(clipped)).sum(axis=1) / np.log(k))


STRATEGIES: dict[Strategy, Callable[[Probabilities], NDArray[np.float64]]] = {
    Strategy.LEAST_CONFIDENCE: least_confidence,
    Strategy.MARGIN: margin,
    Strategy.ENTROPY: entropy,
}


def score(strategy: Strategy | str, probabilities: Probabilities) -> NDArray[np.float64]:
    """Score each row of `probabilities` (n x k) with the named strategy."""
    matrix = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    return np.clip(STRATEGIES[Strategy(strategy)](matrix), 0.0, 1.0)
