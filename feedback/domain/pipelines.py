"""Building the one scikit-learn Pipeline a project trains, from its model spec."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from feedback.domain.errors import InvalidInput

SEED = 0
BUILTIN_SPECS = ("auto", "text-logreg", "features-logreg", "features-hgb")


def build_pipeline(spec: str, input_kind: str) -> Pipeline:
    """Return an unfitted pipeline for `spec` ("auto", a built-in, or `module:function`)."""
    if spec == "auto":
        spec = "text-logreg" if input_kind == "text" else "features-logreg"
    if spec == "text-logreg":
        return Pipeline(
            [
                ("tfidf", TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)),
                ("model", LogisticRegression(max_iter=1000, random_state=SEED)),
            ]
        )
    if spec == "features-logreg":
        return Pipeline(
            [
                ("scale", StandardScaler()),
                ("model", LogisticRegression(max_iter=2000, random_state=SEED)),
            ]
        )
    if spec == "features-hgb":
        return Pipeline([("model", HistGradientBoostingClassifier(random_state=SEED))])
    return _from_factory(spec)


def _from_factory(spec: str) -> Pipeline:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InvalidInput("unknown model spec", [])
    factory = getattr(importlib.import_module(module_name), attribute)
    estimator = clone(factory())
    return estimator if isinstance(estimator, Pipeline) else Pipeline([("model", estimator)])


def baseline() -> DummyClassifier:
    """The model every candidate must beat: always predict the most frequent class."""
    return DummyClassifier(strategy="most_frequent")


def as_model_input(inputs: Sequence[Any], input_kind: str) -> Any:
    """Turn stored inputs (text strings or feature lists) into what the pipeline takes."""
    if input_kind == "text":
        return list(inputs)
    return np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1)
