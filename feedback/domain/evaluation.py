"""Scoring fitted models on the holdout."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss
from sklearn.pipeline import Pipeline

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
    return _scores(aligned_probabilities(model, inputs, labels), truth, labels)


def evaluate_all(
    models: Mapping[str, Any], inputs: Any, truth: Sequence[str], labels: Sequence[str]
) -> dict[str, Scores]:
    """Score several models on the same holdout, as `evaluate` scores each one (see `Holdout`)."""
    holdout = Holdout(inputs, truth, labels)
    return {name: holdout.score(model) for name, model in models.items()}


class Holdout:
    """One run's holdout, scoring each model as `evaluate` does, with less repeated work.

    Pipelines that open with the same stateless step (a hashing vectorizer with the same
    parameters: the candidate and the champion of one spec) share its output, so the holdout
    is tokenised and hashed once per run instead of once per model. `prepare` puts it through
    a candidate's fitted transforms ahead of time (while its final step is still fitting), and
    `score` then only runs the final step. Each model (the same object) is scored once, so a
    model must not be refitted after it was scored here. Not for two threads at once.

    `featurised` hands over what `featurised()` returned for the same inputs before (a later
    run on the same holdout), so a stateless first step does not run on them again.
    """

    def __init__(
        self,
        inputs: Any,
        truth: Sequence[str],
        labels: Sequence[str],
        featurised: Sequence[tuple[Any, Any]] = (),
    ) -> None:
        self.inputs, self.truth, self.labels = inputs, truth, labels
        self._first: list[tuple[Any, Any]] = list(featurised)  # (stateless first step, output)
        self._prepared: list[tuple[list[Any], Any]] = []  # (fitted head steps, their output)
        self._scored: list[tuple[Any, Scores]] = []

    def score(self, model: Any) -> Scores:
        """Score `model`: the same numbers `evaluate` gives."""
        done = next((scores for known, scores in self._scored if known is model), None)
        if done is None:
            done = self._score(model)
            self._scored.append((model, done))
        return done

    def _score(self, model: Any) -> Scores:
        head_steps = _steps(model)[:-1]
        prepared = next((out for s, out in self._prepared if _same_objects(s, head_steps)), None)
        if prepared is not None:
            return self._final_scores(model[-1], prepared)
        first = _stateless_head(model)
        if first is None:
            return evaluate(model, self.inputs, self.truth, self.labels)
        return self._final_scores(model[1:], self._through_first(first))

    def prepare(self, head: Pipeline) -> None:
        """Put the holdout through `head`, a candidate's fitted steps before its final one."""
        steps = _steps(head)
        if not _stateless(steps[0]):
            output = head.transform(self.inputs)
        elif len(steps) == 1:
            output = self._through_first(steps[0])
        else:
            output = head[1:].transform(self._through_first(steps[0]))
        self._prepared.append((steps, output))

    def featurised(self) -> list[tuple[Any, Any]]:
        """The stateless first steps run on these inputs so far, each with its output."""
        return list(self._first)

    @cached_property
    def digest(self) -> str:
        """sha256 of the inputs (texts, or the feature matrix), to know them again."""
        return inputs_digest(self.inputs)

    def _through_first(self, first: Any) -> Any:
        done = next((out for step, out in self._first if _same_step(step, first)), None)
        if done is None:
            done = first.transform(self.inputs)
            self._first.append((first, done))
        return done

    def _final_scores(self, model: Any, transformed: Any) -> Scores:
        probabilities = aligned_probabilities(model, transformed, self.labels)
        return _scores(probabilities, self.truth, self.labels)


def inputs_digest(inputs: Any) -> str:
    """sha256 of model inputs: each text prefixed by its length (so no two lists of texts
    share a digest), or an array's type, shape and bytes."""
    hasher = hashlib.sha256()
    if isinstance(inputs, np.ndarray):
        hasher.update(f"{inputs.dtype.str}{inputs.shape}".encode())
        hasher.update(np.ascontiguousarray(inputs).tobytes())
        return hasher.hexdigest()
    for text in inputs:
        data = str(text).encode("utf-8", "surrogatepass")
        hasher.update(b"%d:" % len(data))
        hasher.update(data)
    return hasher.hexdigest()


def _steps(model: Any) -> list[Any]:
    """The estimators of a pipeline in order (a bare estimator is a pipeline of one)."""
    return [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]


def _same_objects(one: list[Any], other: list[Any]) -> bool:
    if not one or len(one) != len(other):
        return False
    return all(a is b for a, b in zip(one, other, strict=True))


def _stateless_head(model: Any) -> Any | None:
    """The first step of a pipeline of two or more steps, if it learns nothing when fitted."""
    if not isinstance(model, Pipeline) or len(model.steps) < 2:
        return None
    first = model.steps[0][1]
    return first if _stateless(first) else None


def _stateless(step: Any) -> bool:
    """Whether a step transforms without having learnt anything (fitting it is a no-op)."""
    try:
        stateless = not step.__sklearn_tags__().requires_fit
    except AttributeError:
        return False
    return stateless and hasattr(step, "transform")


def _same_step(one: Any, other: Any) -> bool:
    """Whether two stateless steps transform alike: same type, same parameters."""
    if one is other:
        return True
    if type(one) is not type(other):
        return False
    try:
        return bool(one.get_params(deep=False) == other.get_params(deep=False))
    except (TypeError, ValueError):  # a parameter that does not compare (an array): not shared
        return False


def _scores(probabilities: np.ndarray, truth: Sequence[str], labels: Sequence[str]) -> Scores:
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    per_class = f1_score(truth, predicted, labels=list(labels), average=None, zero_division=0.0)
    metrics = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(np.mean(per_class)),  # what average="macro" computes, without a rerun
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
