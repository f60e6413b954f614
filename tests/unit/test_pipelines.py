"""Pipelines from specs (built-ins and user factories), incremental updates, evaluation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from feedback import artifacts
from feedback.domain import incremental, pipelines
from feedback.domain.errors import InvalidInput
from feedback.domain.evaluation import aligned_probabilities, evaluate, no_scores
from feedback.domain.incremental import Parent, plan

TEXTS = ["good fine great", "bad awful poor", "great value good", "poor bad junk"] * 5
TEXT_LABELS = ["pos", "neg", "pos", "neg"] * 5


def forest() -> RandomForestClassifier:
    """A user factory returning an unfitted estimator (documented in docs/retraining.md)."""
    return RandomForestClassifier(n_estimators=5)


def scaled_forest() -> Pipeline:
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [("scale", StandardScaler()), ("forest", RandomForestClassifier(n_estimators=5))]
    )


def fitted_logreg() -> LogisticRegression:
    return LogisticRegression().fit([[0.0], [1.0]], ["a", "b"])


def not_an_estimator() -> str:
    return "nope"


def no_probabilities() -> SVC:
    return SVC()


class Custom(ClassifierMixin, BaseEstimator):
    """A user's own classifier type (not on skops' default allowlist)."""

    def fit(self, x: object, y: object) -> Custom:
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict_proba(self, x: object) -> np.ndarray:
        return np.full((len(x), len(self.classes_)), 1 / len(self.classes_))  # type: ignore[arg-type]


def custom() -> Custom:
    return Custom()


@pytest.mark.parametrize("spec", ["auto", "text-logreg", "text-sgd"])
def test_text_builtins_fit_and_predict_probabilities(spec: str) -> None:
    model = pipelines.build_pipeline(spec, "text").fit(TEXTS, TEXT_LABELS)
    assert list(model.predict(["great good", "awful junk"])) == ["pos", "neg"]
    assert model.predict_proba(["good"]).shape == (1, 2)


@pytest.mark.parametrize("spec", ["auto", "features-logreg", "features-hgb", "features-sgd"])
def test_feature_builtins_are_seeded_so_two_fits_agree(spec: str) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 3)), np.where(rng.random(80) < 0.5, "a", "b")
    first = pipelines.build_pipeline(spec, "features").fit(x, y).predict_proba(x)
    second = pipelines.build_pipeline(spec, "features").fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(first, second)
    params = pipelines.build_pipeline(spec, "features").get_params()
    assert all(v == pipelines.SEED for k, v in params.items() if k.endswith("random_state"))


def test_a_factory_estimator_is_wrapped_seeded_and_cloned() -> None:
    model = pipelines.build_pipeline("tests.unit.test_pipelines:forest", "features")
    assert isinstance(model, Pipeline)
    assert model.steps[0][0] == "model"
    assert model.get_params()["model__random_state"] == pipelines.SEED
    pipeline = pipelines.build_pipeline("tests.unit.test_pipelines:scaled_forest", "features")
    assert [name for name, _ in pipeline.steps] == ["scale", "forest"]
    unfitted = pipelines.build_pipeline("tests.unit.test_pipelines:fitted_logreg", "features")
    assert not hasattr(unfitted.steps[-1][1], "coef_")  # state fitted elsewhere is dropped


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonsense", "neither a built-in"),
        ("tests.unit.nowhere:forest", "cannot import"),
        ("tests.unit.test_pipelines:absent", "cannot import"),
        ("tests.unit.test_pipelines:not_an_estimator", "must return a scikit-learn estimator"),
        ("tests.unit.test_pipelines:no_probabilities", "predict_proba"),
    ],
)
def test_unusable_specs_are_refused_naming_the_field(spec: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        pipelines.build_pipeline(spec, "features")
    assert caught.value.details[0].field == "model_spec"
    assert message in caught.value.details[0].message


def test_which_pipelines_can_learn_incrementally() -> None:
    assert incremental.supports_partial_fit(pipelines.build_pipeline("text-sgd", "text"))
    assert incremental.supports_partial_fit(pipelines.build_pipeline("features-sgd", "features"))
    assert not incremental.supports_partial_fit(pipelines.build_pipeline("text-logreg", "text"))
    assert not incremental.supports_partial_fit(
        pipelines.build_pipeline("features-hgb", "features")
    )


def test_partial_fit_updates_a_copy_and_leaves_the_champion_untouched() -> None:
    champion = pipelines.build_pipeline("text-sgd", "text").fit(TEXTS, TEXT_LABELS)
    before = champion.steps[-1][1].coef_.copy()
    updated = incremental.partial_fit(champion, ["brilliant"] * 20, ["pos"] * 20, ["pos", "neg"])
    np.testing.assert_array_equal(champion.steps[-1][1].coef_, before)
    assert not np.array_equal(updated.steps[-1][1].coef_, before)
    assert updated.predict_proba(["brilliant"])[0, 1] > champion.predict_proba(["brilliant"])[0, 1]


PARENT = Parent(
    spec="features-sgd",
    supports_partial_fit=True,
    classes=frozenset({"a", "b"}),
    chain=0,
    unchanged=True,
)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"enabled": False}, "incremental mode is off"),
        ({"parent": None}, "no champion"),
        ({"spec": "features-logreg"}, "model spec changed"),
        (
            {"parent": Parent("features-sgd", False, frozenset({"a", "b"}), 0, True)},
            "no partial_fit",
        ),
        ({"labels": ["a", "b", "c"]}, "classes changed"),
        ({"parent": Parent("features-sgd", True, frozenset({"a", "b"}), 0, False)}, "corrections"),
        ({"parent": Parent("features-sgd", True, frozenset({"a", "b"}), 2, True)}, "every 3 runs"),
        ({"new": 0}, "no new labels"),
    ],
)
def test_plan_refits_in_full_for_every_reason(changes: dict[str, object], reason: str) -> None:
    given: dict[str, object] = {
        "enabled": True,
        "parent": PARENT,
        "spec": "features-sgd",
        "labels": ["a", "b"],
        "every": 3,
        "new": 10,
        **changes,
    }
    chosen = plan(
        given["enabled"],
        given["parent"],
        given["spec"],
        given["labels"],  # type: ignore[arg-type]
        given["every"],
        given["new"],
    )  # type: ignore[arg-type]
    assert not chosen.incremental
    assert reason in chosen.reason
    assert plan(True, PARENT, "features-sgd", ["a", "b"], 3, 10).incremental


def test_holdout_gap_in_the_metrics_direction() -> None:
    assert incremental.gap_too_big("macro_f1", champion=0.90, candidate=0.88)
    assert not incremental.gap_too_big("macro_f1", champion=0.90, candidate=0.895)
    assert incremental.gap_too_big("log_loss", champion=0.30, candidate=0.32)
    assert incremental.gap_too_big("macro_f1", champion=0.9, candidate=float("nan"))


def test_probabilities_follow_project_label_order_and_fill_missing_classes() -> None:
    model = pipelines.build_pipeline("text-logreg", "text").fit(TEXTS, TEXT_LABELS)
    probabilities = aligned_probabilities(model, ["great"], ["pos", "mid", "neg"])
    assert probabilities[0, 1] == 0.0
    assert probabilities[0, 0] > probabilities[0, 2]
    assert probabilities.sum() == pytest.approx(1.0)


def test_log_loss_is_right_whatever_the_label_order() -> None:
    model = pipelines.build_pipeline("text-logreg", "text").fit(TEXTS, TEXT_LABELS)
    truth = ["pos", "neg"]
    sorted_order = evaluate(model, ["great good", "bad awful"], truth, ["neg", "pos"])
    other_order = evaluate(model, ["great good", "bad awful"], truth, ["pos", "neg", "mid"])
    assert other_order.metrics["log_loss"] == pytest.approx(sorted_order.metrics["log_loss"])
    assert np.isnan(no_scores().metrics["macro_f1"])


def test_a_users_own_type_is_stored_and_loaded_only_when_trusted(tmp_path: Path) -> None:
    model = pipelines.build_pipeline("tests.unit.test_pipelines:custom", "features")
    model.fit(np.zeros((4, 1)), ["a", "b", "a", "b"])
    with pytest.raises(artifacts.ArtifactError, match=r"tests\.unit\.test_pipelines\.Custom"):
        artifacts.save(model, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written
    trusted = ["tests.unit.test_pipelines.Custom"]
    stored = artifacts.save(model, tmp_path, trusted)
    with pytest.raises(artifacts.ArtifactError, match="not allowed"):
        artifacts.load(stored.path, stored.sha256)
    loaded = artifacts.load(stored.path, stored.sha256, trusted)
    assert isinstance(loaded.steps[-1][1], Custom)


def test_the_baseline_fitted_from_counts_predicts_like_the_one_fitted_on_every_label() -> None:
    from feedback.services import snapshots
    from feedback.services.training import fit_baseline

    labels = ["b"] * 3 + ["a"] * 5 + ["c"]
    train = [snapshots.Example(i, i, label) for i, label in enumerate(labels)]
    found = snapshots.Labels(train, [], {}, len(labels), datetime.min)
    reference = pipelines.baseline().fit(np.zeros((len(labels), 1)), labels)
    counted = fit_baseline(found)
    x = np.zeros((2, 1))
    np.testing.assert_array_equal(counted.predict_proba(x), reference.predict_proba(x))
    assert list(counted.predict(x)) == ["a", "a"]
