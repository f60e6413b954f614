"""The cheaper parts of a retrain run: shared holdout featurisation, the digest, the champion
checked on every load."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.feature_extraction.text import HashingVectorizer

from feedback import artifacts
from feedback.db.models import ModelVersion
from feedback.domain import pipelines
from feedback.domain.evaluation import Holdout, evaluate, evaluate_all, inputs_digest
from feedback.services import models, snapshots
from feedback.services.training import fit_baseline

TEXTS = ["good fine great", "bad awful poor", "great value good", "poor bad junk", "fine"] * 8
LABELS = ["pos", "neg", "pos", "neg", "neg"] * 8
HOLDOUT = ["good great", "awful junk", "fine value", "poor", "great poor", "bad"]
TRUTH = ["pos", "neg", "pos", "neg", "pos", "neg"]
CLASSES = ["neg", "pos"]


def counting_transforms(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count how many times any hashing vectorizer transforms a batch of texts."""
    calls: list[int] = []
    original = HashingVectorizer.transform

    def counted(self: HashingVectorizer, x: Any) -> Any:
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(HashingVectorizer, "transform", counted)
    return calls


def test_models_of_one_spec_share_the_holdout_featurisation_and_score_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    candidate = pipelines.build_pipeline("text-logreg", "text").fit(TEXTS, LABELS)
    champion = pipelines.build_pipeline("text-logreg", "text").fit(TEXTS[:20], LABELS[:20])
    train = [snapshots.Example(i, i, y) for i, y in enumerate(LABELS)]
    baseline = fit_baseline(snapshots.Labels(train, [], {}, len(LABELS), datetime.min))
    scored = {"candidate": candidate, "baseline": baseline, "champion": champion}
    one_by_one = {name: evaluate(model, HOLDOUT, TRUTH, CLASSES) for name, model in scored.items()}
    calls = counting_transforms(monkeypatch)
    together = evaluate_all(scored, HOLDOUT, TRUTH, CLASSES)
    assert calls == [len(HOLDOUT)]  # hashed once for both pipelines
    assert together == one_by_one
    assert together["candidate"].metrics != together["baseline"].metrics


def test_pipelines_that_hash_differently_featurise_the_holdout_each_their_own_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logreg = pipelines.build_pipeline("text-logreg", "text").fit(TEXTS, LABELS)
    sgd = pipelines.build_pipeline("text-sgd", "text").fit(TEXTS, LABELS)  # l2-normed hashing
    expected = {
        "a": evaluate(logreg, HOLDOUT, TRUTH, CLASSES),
        "b": evaluate(sgd, HOLDOUT, TRUTH, CLASSES),
    }
    calls = counting_transforms(monkeypatch)
    assert evaluate_all({"a": logreg, "b": sgd}, HOLDOUT, TRUTH, CLASSES) == expected
    assert len(calls) == 2


def test_features_models_without_a_stateless_first_step_are_scored_whole() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), np.where(rng.random(60) < 0.5, "neg", "pos")
    model = pipelines.build_pipeline("features-logreg", "features").fit(x, y)
    truth = list(y[:20])
    assert evaluate_all({"m": model}, x[:20], truth, CLASSES) == {
        "m": evaluate(model, x[:20], truth, CLASSES)
    }


def test_the_snapshot_digest_is_sha256_of_one_line_per_example_across_chunks() -> None:
    examples = [
        snapshots.Example(i, 10 * i, "neg" if i % 3 else "pos")
        for i in range(snapshots.DIGEST_CHUNK * 2 + 7)
    ]
    lines = "".join(f"{e.decision_id}:{e.item_id}:{e.label}\n" for e in examples)
    assert snapshots.digest(examples) == hashlib.sha256(lines.encode()).hexdigest()
    assert snapshots.digest([]) == hashlib.sha256(b"").hexdigest()


def test_a_champion_file_tampered_with_after_it_was_cached_is_refused(tmp_path: Path) -> None:
    model = pipelines.build_pipeline("text-logreg", "text").fit(TEXTS, LABELS)
    stored = artifacts.save(model, tmp_path)
    version = ModelVersion(artifact_path=stored.path, sha256=stored.sha256)
    first = models.load_checked(version)
    assert models.load_checked(version) is first  # intact: the built model is reused
    assert models.load_version(version) is first
    Path(stored.path).write_bytes(b"not the model we wrote")
    with pytest.raises(artifacts.ArtifactError, match="sha256"):
        models.load_checked(version)
    Path(stored.path).unlink()
    with pytest.raises(artifacts.ArtifactError, match="cannot be read"):
        models.load_checked(version)


def test_an_overlapped_fit_fits_the_same_model_as_pipeline_fit_and_hands_over_the_head() -> None:
    plain = pipelines.build_pipeline("text-logreg", "text").fit(TEXTS, LABELS)
    seen: list[Any] = []
    overlapped = pipelines.fit_overlapped(
        pipelines.build_pipeline("text-logreg", "text"), TEXTS, LABELS, seen.append
    )
    assert np.array_equal(overlapped[-1].coef_, plain[-1].coef_)
    assert np.array_equal(overlapped.predict_proba(HOLDOUT), plain.predict_proba(HOLDOUT))
    (head,) = seen
    assert [step for _, step in head.steps] == [step for _, step in overlapped.steps[:-1]]
    assert (head.transform(HOLDOUT) != plain[:-1].transform(HOLDOUT)).nnz == 0  # fitted head


def test_an_error_in_the_overlapped_work_is_raised_after_the_fit() -> None:
    def broken(head: Any) -> None:
        raise RuntimeError("scoring failed")

    pipeline = pipelines.build_pipeline("text-logreg", "text")
    with pytest.raises(RuntimeError, match="scoring failed"):
        pipelines.fit_overlapped(pipeline, TEXTS, LABELS, broken)
    assert hasattr(pipeline[-1], "coef_")  # the final step still ended its fit


def test_a_prepared_holdout_scores_the_candidate_as_evaluate_does_hashing_once_per_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    champion = pipelines.build_pipeline("text-logreg", "text").fit(TEXTS[:20], LABELS[:20])
    expected_champion = evaluate(champion, HOLDOUT, TRUTH, CLASSES)
    calls = counting_transforms(monkeypatch)
    holdout = Holdout(HOLDOUT, TRUTH, CLASSES)

    def meanwhile(head: Any) -> None:
        holdout.score(champion)
        holdout.prepare(head)

    candidate = pipelines.fit_overlapped(
        pipelines.build_pipeline("text-logreg", "text"), TEXTS, LABELS, meanwhile
    )
    holdout_calls = [n for n in calls if n == len(HOLDOUT)]
    assert holdout_calls == [len(HOLDOUT)]  # champion and candidate share one hashing
    assert holdout.score(champion) == expected_champion  # scored once, kept
    monkeypatch.undo()
    assert holdout.score(candidate) == evaluate(candidate, HOLDOUT, TRUTH, CLASSES)


def test_a_holdout_prepared_for_a_head_without_a_stateless_step_scores_the_same() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(80, 3)), list(np.where(rng.random(80) < 0.5, "neg", "pos"))
    holdout = Holdout(x[:20], y[:20], CLASSES)
    model = pipelines.fit_overlapped(
        pipelines.build_pipeline("features-logreg", "features"), x, y, holdout.prepare
    )
    assert holdout.score(model) == evaluate(model, x[:20], y[:20], CLASSES)


def test_a_holdout_given_an_earlier_featurisation_of_the_same_inputs_hashes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    champion = pipelines.build_pipeline("text-logreg", "text").fit(TEXTS[:20], LABELS[:20])
    candidate = pipelines.build_pipeline("text-logreg", "text").fit(TEXTS, LABELS)
    expected = evaluate(candidate, HOLDOUT, TRUTH, CLASSES)
    earlier = Holdout(HOLDOUT, TRUTH, CLASSES)
    earlier.score(champion)
    calls = counting_transforms(monkeypatch)
    later = Holdout(HOLDOUT, TRUTH, CLASSES, earlier.featurised())
    assert later.score(candidate) == expected
    assert later.digest == earlier.digest == inputs_digest(list(HOLDOUT))
    assert calls == []
    assert inputs_digest(HOLDOUT[:-1]) != earlier.digest
    assert inputs_digest(["a b", "c"]) != inputs_digest(["a", "b c"])  # texts are separated
    assert inputs_digest(["a\x1fb"]) != inputs_digest(["a", "b"])  # whatever they contain
    rows = np.arange(6.0).reshape(3, 2)
    assert inputs_digest(rows) != inputs_digest(rows.reshape(2, 3))  # the shape counts
