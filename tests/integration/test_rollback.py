"""Rollback and model-file safety, on SQLite and PostgreSQL: the older model's routing and queue
order come back; planted pickle gadgets and foreign skops types are refused with no effect.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import skops.io as sio
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from feedback import artifacts
from feedback.cli import main
from feedback.config import Settings
from feedback.db.engine import Database
from feedback.db.models import AuditEvent, ModelVersion, OutboxMessage, Project, RetrainRun
from feedback.domain.errors import Conflict, Forbidden, InvalidInput, Unavailable
from feedback.services import models, predict, rollback, users
from tests.conftest import People, login
from tests.integration import lifecycle_data as data
from tests.integration.test_lifecycle import run_once, version_of

pytestmark = pytest.mark.usefixtures("backend")
SLUG = "order"


class Gadget:
    """Builds itself by creating a file: what a malicious model file would smuggle in."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:  # the pickle route
        return (Path.touch, (Path(self.marker),))  # type: ignore[return-value]

    def __setstate__(self, state: dict[str, str]) -> None:  # the skops route
        Path(state["marker"]).touch()


@pytest.fixture
def two_versions(
    db: Database, settings: Settings, people: People
) -> tuple[ModelVersion, ModelVersion]:
    """v1 (biased first labels, routing 0.8 / least confidence) and a better v2 (0.6 / margin)."""
    data.order_project(db, SLUG)
    v1 = version_of(db, run_once(db, settings, people, SLUG))
    data.set_project(db, SLUG, threshold=0.6, strategy="margin", audit_rate=0.02)
    data.add_decisions(db, SLUG, data.as_inputs(data.blobs(600, seed=12)))
    v2 = version_of(db, run_once(db, settings, people, SLUG))
    assert (v1.decision, v2.decision) == ("promoted", "promoted"), v2.reason
    data.queue_points(db, SLUG)
    return v1, v2


def champion(db: Database) -> int | None:
    with db.read() as session:
        return session.scalar(select(Project.champion_id).where(Project.slug == SLUG))


def counts(db: Database) -> tuple[int, int]:
    """Audit events and outbox re-scores so far."""
    with db.read() as session:
        audits = session.scalar(
            select(func.count(AuditEvent.id)).where(AuditEvent.action == "rollback")
        )
        rescores = session.scalar(
            select(func.count(OutboxMessage.id)).where(OutboxMessage.kind == "rescore")
        )
    return int(audits or 0), int(rescores or 0)


def test_rollback_brings_back_routing_is_audited_and_the_queue_follows_the_older_model(
    db: Database, people: People, two_versions: tuple[ModelVersion, ModelVersion]
) -> None:
    v1, v2 = two_versions
    pid = data.project_id(db, SLUG)
    models.rescore_queue(db, pid)
    newer = data.order_by_model(models.load_version(v2), "margin")
    assert data.queue_order(db, SLUG) == newer
    assert data.queue_versions(db, SLUG) == {"2"}
    audits, rescores = counts(db)
    done = rollback.rollback(db, people.admin, SLUG, 1)
    assert (done.previous, done.current, done.changed) == (2, 1, True)
    assert done.routing == {"threshold": 0.8, "strategy": "least_confidence", "audit_rate": 0.0}
    assert champion(db) == v1.id
    assert counts(db) == (audits + 1, rescores + 1)
    with db.read() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "rollback")).one()
    assert event.actor_id == people.admin.user_id
    assert event.detail["from_version"] == 2
    assert event.detail["routing_before"]["strategy"] == "margin"
    assert models.rescore_queue(db, pid) == len(data.ORDER_POINTS)  # what the outbox row asks for
    older = data.order_by_model(models.load_version(v1), "least_confidence")
    assert older != newer, "the two models must disagree for this test to mean anything"
    assert data.queue_order(db, SLUG) == older
    assert data.queue_versions(db, SLUG) == {"1"}
    again = rollback.rollback(db, people.admin, SLUG, 1)
    assert not again.changed
    assert counts(db) == (audits + 1, rescores + 1)


def test_rollback_refuses_callers_unknown_or_rejected_versions_and_a_moved_champion(
    db: Database,
    settings: Settings,
    people: People,
    two_versions: tuple[ModelVersion, ModelVersion],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _v1, _v2 = two_versions
    before = counts(db)
    service = users.Principal(user_id=None, role="service", project_id=data.project_id(db, SLUG))
    for caller in (people.labeler, service):
        with pytest.raises(Forbidden):
            rollback.rollback(db, caller, SLUG, 1)
    with pytest.raises(InvalidInput) as caught:
        rollback.rollback(db, people.admin, SLUG, 9)
    assert caught.value.details[0].field == "version"
    rejected = version_of(db, run_once(db, settings, people, SLUG))  # nothing new: not better
    assert rejected.decision == "rejected"
    with pytest.raises(InvalidInput, match="never promoted"):
        rollback.rollback(db, people.admin, SLUG, rejected.version)
    original = rollback._verify

    def another_admin_meanwhile(target: rollback._Target) -> None:
        original(target)
        with db.transaction() as session:
            session.execute(update(Project).where(Project.slug == SLUG).values(champion_id=None))

    monkeypatch.setattr(rollback, "_verify", another_admin_meanwhile)
    with pytest.raises(Conflict):
        rollback.rollback(db, people.admin, SLUG, 1)
    assert champion(db) is None
    assert counts(db) == before


def test_a_file_tampered_after_it_was_cached_is_refused_by_a_rollback(
    db: Database, people: People, two_versions: tuple[ModelVersion, ModelVersion]
) -> None:
    v1, _v2 = two_versions
    rollback.rollback(db, people.admin, SLUG, 1)  # v1's model is now in this process's cache
    rollback.rollback(db, people.admin, SLUG, 2)
    Path(v1.artifact_path).write_bytes(Path(v1.artifact_path).read_bytes() + b"tampered")
    before = counts(db)
    with pytest.raises(InvalidInput, match="model file of v1 was refused"):
        rollback.rollback(db, people.admin, SLUG, 1)
    assert counts(db) == before


def plant(version: ModelVersion, payload: bytes, db: Database, forge_digest: bool) -> None:
    """Replace a version's file; with `forge_digest`, also the digest in the database."""
    Path(version.artifact_path).write_bytes(payload)
    if forge_digest:
        with db.transaction() as session:
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.id == version.id)
                .values(sha256=hashlib.sha256(payload).hexdigest())
            )
    models._cache.clear()


@pytest.mark.parametrize("forge_digest", [False, True])
@pytest.mark.parametrize("kind", ["pickle", "skops"])
def test_a_planted_gadget_is_refused_with_no_side_effect_and_the_champion_stays(
    kind: str,
    forge_digest: bool,
    db: Database,
    people: People,
    tmp_path: Path,
    two_versions: tuple[ModelVersion, ModelVersion],
) -> None:
    v1, v2 = two_versions
    before = counts(db)
    marker = tmp_path / "gadget-ran"
    gadget = Gadget(str(marker))
    payload = pickle.dumps(gadget) if kind == "pickle" else sio.dumps(gadget)
    plant(v1, payload, db, forge_digest)
    expected = (
        "does not match"
        if not forge_digest
        else (
            "not a valid skops file"
            if kind == "pickle"
            else "tests.integration.test_rollback.Gadget"
        )
    )
    with pytest.raises(InvalidInput, match=expected) as caught:
        rollback.rollback(db, people.admin, SLUG, 1)
    assert caught.value.details[0].field == "version"
    with db.read() as session:
        stored = session.get_one(ModelVersion, v1.id)
    with pytest.raises(artifacts.ArtifactError):
        artifacts.load(stored.artifact_path, stored.sha256)
    assert not marker.exists()  # nothing was unpickled or built
    assert champion(db) == v2.id
    assert counts(db) == before


def test_a_tampered_champion_stops_serving_and_is_never_compared_against(
    db: Database,
    settings: Settings,
    people: People,
    two_versions: tuple[ModelVersion, ModelVersion],
) -> None:
    _v1, v2 = two_versions
    plant(v2, b"not the model we wrote", db, forge_digest=False)
    with pytest.raises(Unavailable, match="refused"):
        predict.predict_and_route(
            db,
            people.admin,
            SLUG,
            [{"external_id": "p1", "input": {"features": [0.0, 0.0, 0.0, 0.0]}}],
        )
    data.add_decisions(db, SLUG, data.as_inputs(data.blobs(200, seed=13)))
    refused = version_of(db, run_once(db, settings, people, SLUG))
    assert refused.decision == "rejected"
    assert "champion's model file was refused" in refused.reason
    assert champion(db) == v2.id
    with db.read() as session:
        promoting = session.scalar(
            select(RetrainRun.id).where(RetrainRun.model_version_id == v2.id)
        )
    assert models.rescore_queue(db, data.project_id(db, SLUG), promoting) == 0
    with db.read() as session:
        rescore = session.get_one(RetrainRun, promoting).report["rescore"]
    assert rescore["status"] == "failed"
    assert "refused" in rescore["error"]
    assert rollback.rollback(db, people.admin, SLUG, 1).changed  # the way out: an older version


def test_the_api_page_and_cli_roll_back_for_admins_only(
    db: Database,
    settings: Settings,
    client: FlaskClient,
    people: People,
    two_versions: tuple[ModelVersion, ModelVersion],
    labeler_token: str,
) -> None:
    v1, v2 = two_versions
    admin_token = users.create_token(db, "admin", None, "admin@test.io")
    service_token = users.create_token(db, "svc", SLUG, None)
    url = f"/api/v1/projects/{SLUG}/champion"

    def post(token: str, body: object) -> tuple[int, dict[str, object]]:
        response = client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        return response.status_code, response.get_json()

    assert post(service_token, {"version": 1})[0] == 403
    assert post(labeler_token, {"version": 1})[0] == 403  # only admins, whatever the project
    for bad in (
        {},
        {"version": "one"},
        {"version": 0},
        {"version": 1, "extra": 1},
        {"version": 99},
    ):
        status, body = post(admin_token, bad)
        assert status == 422, body
        assert body["error"]["details"][0]["field"] in ("version", "extra"), body
    assert champion(db) == v2.id
    assert post(admin_token, {"version": 1}) == (
        200,
        {
            "previous": 2,
            "current": 1,
            "changed": True,
            "routing": {"threshold": 0.8, "strategy": "least_confidence", "audit_rate": 0.0},
        },
    )
    listing = client.get(
        f"/api/v1/projects/{SLUG}/models", headers={"Authorization": f"Bearer {service_token}"}
    )
    assert [(v["version"], v["champion"]) for v in listing.get_json()["items"]] == [
        (2, False),
        (1, True),
    ]
    login(client, "admin@test.io")
    page = client.get(f"/projects/{SLUG}").get_data(as_text=True)
    assert "Roll back to v2" in page
    assert "Roll back to v1" not in page
    assert (
        client.post(f"/projects/{SLUG}/champion", data={"version": "2"}).status_code == 400
    )  # no CSRF
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert (
        client.post(
            f"/projects/{SLUG}/champion", data={"version": "2", "csrf_token": token}
        ).status_code
        == 302
    )
    assert champion(db) == v2.id
    wrong = client.post(f"/projects/{SLUG}/champion", data={"version": "7", "csrf_token": token})
    assert wrong.status_code == 422
    assert "has no version 7" in wrong.get_data(as_text=True)
    env = {
        "FEEDBACK_DATABASE_URL": settings.database_url,
        "FEEDBACK_INSTANCE_PATH": str(settings.instance_path),
    }
    result = CliRunner().invoke(main, ["rollback", SLUG, "1"], env=env)
    assert result.exit_code == 0
    assert "champion v2 -> v1" in result.output
    assert champion(db) == v1.id
    result = CliRunner().invoke(main, ["rollback", SLUG, "5"], env=env)
    assert result.exit_code != 0
    assert "no version 5" in result.output
    changes = CliRunner().invoke(main, ["changes", SLUG, "1", "--until", "2"], env=env)
    assert changes.exit_code == 0
    assert '"training": 600' in changes.output
