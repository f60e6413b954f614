"""The model lifecycle through the services, on SQLite and PostgreSQL: lineage, corrections,
removed classes, incremental mode and user factories. Runs execute in-process here; the
worker-process versions of the fault scenarios are in test_worker_faults.py.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from flask.testing import FlaskClient
from sklearn.feature_extraction.text import HashingVectorizer
from sqlalchemy import select

from feedback import artifacts
from feedback.config import Settings
from feedback.db.engine import Database
from feedback.db.models import ModelVersion, Project, RetrainRun
from feedback.domain.errors import Forbidden, InvalidInput
from feedback.domain.evaluation import evaluate
from feedback.services import (
    lineage,
    models,
    projects,
    retrain,
    snapshots,
    training,
    training_config,
)
from feedback.services.seed_files import Example
from feedback.services.training_config import TrainingChange
from tests.conftest import People, login, text_seed
from tests.integration import lifecycle_data as data

pytestmark = pytest.mark.usefixtures("backend")


def run_once(db: Database, settings: Settings, people: People, slug: str = "demo") -> RetrainRun:
    """Request a run, execute it in-process, return it."""
    run_id = retrain.request_retrain(db, people.admin, slug)
    retrain.execute_retrain(db, settings, run_id)
    with db.read() as session:
        return session.get_one(RetrainRun, run_id)


def version_of(db: Database, run: RetrainRun) -> ModelVersion:
    assert run.model_version_id is not None, run.error
    with db.read() as session:
        return session.get_one(ModelVersion, run.model_version_id)


def test_each_version_records_its_snapshot_and_what_changed_is_answerable(
    db: Database, settings: Settings, project: str, people: People
) -> None:
    first = run_once(db, settings, people)
    v1 = version_of(db, first)
    assert first.report is not None
    assert first.report["snapshot_digest"] == v1.snapshot_digest
    assert first.report["watermark"] == v1.watermark
    assert v1.train_size + v1.holdout_size == 80
    assert set(v1.timings) >= {"snapshot", "fit", "evaluate", "save"}
    assert v1.routing == {"threshold": 0.8, "strategy": "margin", "audit_rate": 0.0}
    assert set(v1.library_versions) >= {"python", "scikit-learn", "skops"}
    data.add_decisions(db, project, data.fresh_texts(30))
    data.add_decisions(db, project, data.fresh_texts(4, offset=2000), holdout=True)
    now = lineage.changes_since(db, people.admin, project, 1)
    assert now["new_labels"] == {
        "training": 30,
        "holdout": 4,
        "excluded": 0,
        "by_label": {"neg": 15, "pos": 15},
    }
    assert now["until"]["version"] is None
    assert now["versions"] == []
    v2 = version_of(db, run_once(db, settings, people))
    v3 = version_of(db, run_once(db, settings, people))  # no new data: the same snapshot
    assert v2.snapshot_digest != v1.snapshot_digest
    assert v3.snapshot_digest == v2.snapshot_digest
    between = lineage.changes_since(db, people.admin, project, 1, 2)
    assert between["train_size_change"] == 30
    assert between["same_training_data"] is False
    assert [v["version"] for v in between["versions"]] == [2]
    assert lineage.changes_since(db, people.admin, project, 2, 3)["same_training_data"] is True
    with pytest.raises(InvalidInput) as caught:
        lineage.changes_since(db, people.admin, project, 3, 1)
    assert caught.value.details[0].field == "until"


def test_a_corrected_decision_replaces_the_old_label_at_the_next_run(
    db: Database, settings: Settings, project: str, people: People
) -> None:
    [decision] = data.add_decisions(db, project, [({"text": "mixed feelings"}, "pos")])
    v1 = version_of(db, run_once(db, settings, people))
    data.set_project(db, project, retrain_min_decisions=1)
    assert retrain.schedule_due(db, settings) == []  # nothing new yet
    data.correct(db, decision, "neg")
    [run_id] = retrain.schedule_due(db, settings)  # the correction alone makes a run due
    retrain.execute_retrain(db, settings, run_id)
    with db.read() as session:
        v2 = session.scalars(select(ModelVersion).where(ModelVersion.version == 2)).one()
        project_row = session.scalars(select(Project)).one()
        trained = snapshots.read_labels(session, project_row).train
    assert [e.label for e in trained if e.decision_id == decision] == ["neg"]
    assert v2.snapshot_digest != v1.snapshot_digest
    assert v2.train_size == v1.train_size
    changed = lineage.changes_since(db, people.admin, project, 1, 2)
    assert changed["corrections"] == {
        "total": 1,
        "changes": [{"from": "pos", "to": "neg", "count": 1}],
    }
    assert changed["new_labels"]["training"] == 0


def test_labels_of_a_removed_class_are_excluded_and_counted(
    db: Database, settings: Settings, people: People
) -> None:
    seed = data.blobs(200, seed=31) + [([5.0, 5.0, 0.0, 0.0], "mid")] * 12
    data.features_project(db, "tri", seed, labels=("neg", "pos", "mid"))
    v1 = version_of(db, run_once(db, settings, people, "tri"))
    data.set_project(db, "tri", labels=["neg", "pos"])
    run = run_once(db, settings, people, "tri")
    v2 = version_of(db, run)
    assert run.report is not None
    assert run.report["excluded"] == {"mid": 12}
    assert run.report["excluded_total"] == 12
    assert v2.train_size + v2.holdout_size == v1.train_size + v1.holdout_size - 12
    assert set(v2.per_class) == {"neg", "pos"}


def test_incremental_mode_folds_in_new_labels_and_refits_in_full_when_due(
    db: Database, settings: Settings, people: People
) -> None:
    data.features_project(
        db, "inc", data.blobs(300, seed=41), holdout_share=0.4, model_spec="features-sgd"
    )
    data.set_project(db, "inc", incremental=True, full_refit_every=3, promotion_min_gain=-1.0)
    modes = []
    for batch in range(4):
        if batch:
            data.add_decisions(db, "inc", data.as_inputs(data.blobs(100, seed=50 + batch)))
        run = run_once(db, settings, people, "inc")
        assert run.status == "succeeded", run.error or version_of(db, run).reason
        version = version_of(db, run)
        assert run.report is not None
        modes.append((version.incremental, run.report["fitted_on"], run.report["mode_reason"]))
        assert version.train_size == run.report["train_size"]
    assert [m[:2] for m in modes] == [(False, 179), (True, 100), (True, 100), (False, 479)]
    assert "every 3 runs" in modes[3][2]
    with db.read() as session:
        chain = session.scalars(select(ModelVersion).order_by(ModelVersion.version)).all()
    assert [v.parent_id for v in chain] == [None, chain[0].id, chain[1].id, chain[2].id]


def test_corrections_or_a_trailing_update_force_a_full_refit(
    db: Database, settings: Settings, people: People
) -> None:
    data.features_project(
        db,
        "inc",
        data.blobs(300, seed=41),
        holdout_share=0.4,
        model_spec="tests.integration.lifecycle_data:plain_sgd",
    )
    data.set_project(db, "inc", incremental=True, full_refit_every=10, promotion_min_gain=-1.0)
    [example] = data.blobs(1, seed=70)
    [decision] = data.add_decisions(db, "inc", data.as_inputs([example]))
    run_once(db, settings, people, "inc")
    data.correct(db, decision, data.SWAP[example[1]])
    data.add_decisions(db, "inc", data.as_inputs(data.blobs(50, seed=71)))
    corrected = run_once(db, settings, people, "inc")
    assert corrected.report is not None
    assert corrected.report["mode"] == "full"
    assert "corrections" in corrected.report["mode_reason"]
    swapped = [(f, data.SWAP[label]) for f, label in data.blobs(300, seed=72)]
    data.add_decisions(db, "inc", data.as_inputs(swapped))
    behind = run_once(db, settings, people, "inc")
    assert behind.report is not None
    assert behind.report["mode"] == "full"
    assert "trailed the champion" in behind.report["mode_reason"]
    assert not version_of(db, behind).incremental
    assert behind.report["fitted_on"] == behind.report["train_size"]


def test_a_user_factory_trains_and_its_own_types_load_only_when_trusted(
    db: Database, settings: Settings, people: People
) -> None:
    data.features_project(db, "own", data.blobs(200, seed=81))
    with pytest.raises(InvalidInput) as caught:
        training_config.configure_training(
            db, people.admin, "own", TrainingChange(model_spec="tests.unit.test_pipelines:absent")
        )
    assert caught.value.details[0].field == "model_spec"
    change = TrainingChange(model_spec="tests.unit.test_pipelines:custom")
    training_config.configure_training(db, people.admin, "own", change)
    refused = run_once(db, settings, people, "own")
    assert refused.status == "failed"
    assert "tests.unit.test_pipelines.Custom" in (refused.error or "")
    trust = TrainingChange(trusted_types=["tests.unit.test_pipelines.Custom"])
    training_config.configure_training(db, people.admin, "own", trust)
    stored = version_of(db, run_once(db, settings, people, "own"))
    assert stored.spec == "tests.unit.test_pipelines:custom"
    models._cache.clear()
    with pytest.raises(artifacts.ArtifactError, match="not allowed"):
        models.load_version(stored)
    assert models.load_version(stored, ["tests.unit.test_pipelines.Custom"]) is not None
    forest = TrainingChange(model_spec="tests.unit.test_pipelines:forest", trusted_types=[])
    training_config.configure_training(db, people.admin, "own", forest)
    assert version_of(db, run_once(db, settings, people, "own")).spec.endswith(":forest")


def test_training_settings_are_for_admins_and_validated(
    db: Database, project: str, people: People
) -> None:
    with pytest.raises(Forbidden, match="only admins"):
        training_config.configure_training(
            db, people.labeler, project, TrainingChange(incremental=True)
        )
    with pytest.raises(InvalidInput) as caught:
        training_config.configure_training(
            db,
            people.admin,
            project,
            TrainingChange(incremental=True, full_refit_every=0, trusted_types=["not a type"]),
        )
    assert {d.field for d in caught.value.details} == {
        "incremental",
        "full_refit_every",
        "trusted_types",
    }
    done = training_config.configure_training(
        db, people.admin, project, TrainingChange(model_spec="text-sgd", incremental=True)
    )
    assert done["incremental"] is True
    assert done["model_spec"] == "text-sgd"


def test_the_api_and_the_version_page_answer_what_changed(
    db: Database, settings: Settings, client: FlaskClient, people: People, service_token: str
) -> None:
    marked = {"neg": "<b>neg</b>", "pos": "pos"}
    seed = [Example(e.input, marked[e.label]) for e in text_seed()]
    projects.create_project(
        db,
        projects.ProjectSpec(
            slug="html", labels=list(marked.values()), audit_rate=0.0, promotion_min_holdout=10
        ),
        seed,
    )
    run_once(db, settings, people, "html")
    run_once(db, settings, people, "demo")
    data.add_decisions(db, "demo", data.fresh_texts(6))
    run_once(db, settings, people, "demo")
    headers = {"Authorization": f"Bearer {service_token}"}
    detail = client.get("/api/v1/projects/demo/models/2", headers=headers).get_json()
    assert detail["parent_version"] == 1
    assert detail["run"]["report"]["fitted_on"] > 0
    changes = client.get(
        "/api/v1/projects/demo/models/1/changes?until=2", headers=headers
    ).get_json()
    assert changes["new_labels"]["training"] == 6
    assert changes["train_size_change"] == 6
    for query, field in (("?until=abc", "until"), ("?until=0", "until")):
        bad = client.get(f"/api/v1/projects/demo/models/1/changes{query}", headers=headers)
        assert bad.status_code == 422
        assert bad.get_json()["error"]["details"][0]["field"] == field
    missing = client.get("/api/v1/projects/demo/models/9", headers=headers)
    assert missing.status_code == 422
    assert missing.get_json()["error"]["details"][0]["field"] == "version"
    assert client.get("/api/v1/projects/html/models", headers=headers).status_code == 404
    login(client, "admin@test.io")
    page = client.get("/projects/demo/versions/2").get_data(as_text=True)
    assert "What changed since v1" in page
    assert "New training labels</th><td>6" in page
    assert "Snapshot digest" in page
    assert "Started from" in page
    escaped = client.get("/projects/html/versions/1").get_data(as_text=True)
    assert "&lt;b&gt;neg&lt;/b&gt;" in escaped
    assert "<b>neg</b>" not in escaped
    bad_since = client.get("/projects/demo/versions/2?since=7")
    assert bad_since.status_code == 422
    assert "has no version 7" in bad_since.get_data(as_text=True)
    assert client.get("/projects/demo/versions/9").status_code == 404


def test_a_run_on_the_same_holdout_reuses_its_hashing_and_scores_as_from_scratch(
    db: Database, settings: Settings, project: str, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "_featurised", OrderedDict())  # nothing from other tests
    hashed: list[int] = []
    original = HashingVectorizer.transform

    def counted(self: HashingVectorizer, texts: Any) -> Any:
        hashed.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(HashingVectorizer, "transform", counted)
    first = version_of(db, run_once(db, settings, people))
    assert hashed.count(first.holdout_size) == 1  # the champion-less first run hashes it once
    hashed.clear()
    second = version_of(db, run_once(db, settings, people))
    assert second.holdout_size == first.holdout_size
    assert hashed.count(second.holdout_size) == 0  # candidate and champion: reused
    model = artifacts.load(second.artifact_path, second.sha256)
    with db.read() as session:
        project_row = session.scalars(select(Project).where(Project.slug == project)).one()
        labels = snapshots.read_labels(session, project_row)
        snapshot = snapshots.read_inputs(session, project_row, labels)
        classes = list(project_row.labels)
    monkeypatch.setattr(HashingVectorizer, "transform", original)
    fresh = evaluate(model, snapshot.holdout_inputs, snapshot.holdout_labels, classes)
    assert second.metrics == pytest.approx(fresh.metrics, nan_ok=True)
    assert second.per_class == pytest.approx(fresh.per_class)
    monkeypatch.setattr(HashingVectorizer, "transform", counted)
    data.add_decisions(db, project, data.fresh_texts(3, offset=3000), holdout=True)
    third = version_of(db, run_once(db, settings, people))
    assert third.holdout_size == second.holdout_size + 3
    assert hashed.count(third.holdout_size) == 1  # new holdout: hashed once, for both models
