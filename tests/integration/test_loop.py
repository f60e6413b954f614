"""The loop through the services, on SQLite and PostgreSQL: ingest, claim, vote, retrain."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from feedback.config import Settings
from feedback.db.engine import Database
from feedback.db.models import Decision, Item, ModelVersion, Project, RetrainRun, Vote
from feedback.domain.errors import Conflict, InvalidInput, NotFound
from feedback.services import ingest, queue, retrain, users
from tests.conftest import People

pytestmark = pytest.mark.usefixtures("backend")


def prediction(external_id: str, pos: float, text: str = "some text") -> dict[str, object]:
    return {
        "external_id": external_id,
        "input": {"text": text},
        "probabilities": {"neg": round(1 - pos, 6), "pos": pos},
        "model_version": "ext-1",
    }


def service(db: Database, project: str) -> users.Principal:
    with db.read() as session:
        project_id = session.scalar(select(Project.id).where(Project.slug == project))
    return users.Principal(user_id=None, role="service", project_id=project_id)


def test_ingest_routes_by_threshold_and_dedupes(db: Database, project: str) -> None:
    caller = service(db, project)
    results = ingest.submit_predictions(
        db, caller, project, [prediction("a", 0.55), prediction("b", 0.99)]
    )
    assert [r.route for r in results] == ["review", "auto"]
    assert [r.status for r in results] == ["queued", "auto"]
    again = ingest.submit_predictions(
        db, caller, project, [prediction("a", 0.55), prediction("c", 0.5), prediction("c", 0.5)]
    )
    assert [r.duplicate for r in again] == [True, False, True]
    assert again[0].id == results[0].id
    with db.read() as session:
        assert session.scalar(select(func.count(Item.id)).where(Item.route != "seed")) == 3


def test_invalid_batch_stores_nothing_and_names_every_bad_item(db: Database, project: str) -> None:
    bad = [
        prediction("ok", 0.5),
        {"external_id": "x", "input": {"text": "t"}, "probabilities": {"neg": 0.5}},
        {**prediction("y", 0.5), "probabilities": {"neg": 0.9, "pos": 0.9}},
    ]
    with pytest.raises(InvalidInput) as caught:
        ingest.submit_predictions(db, service(db, project), project, bad)
    assert sorted({d.index for d in caught.value.details}) == [1, 2]
    with db.read() as session:
        assert session.scalar(select(func.count(Item.id)).where(Item.route != "seed")) == 0


def test_a_token_of_another_project_sees_nothing(db: Database, project: str) -> None:
    stranger = users.Principal(user_id=None, role="service", project_id=9999)
    with pytest.raises(NotFound):
        ingest.submit_predictions(db, stranger, project, [prediction("a", 0.5)])


def test_claim_gives_most_uncertain_first_and_vote_needs_the_fence(
    db: Database, project: str, people: People
) -> None:
    ingest.submit_predictions(
        db, service(db, project), project, [prediction("mild", 0.7), prediction("coin", 0.5)]
    )
    claim = queue.claim_next(db, people.labeler, project, 300)
    assert claim is not None
    assert claim.input == {"text": "some text"}
    with db.read() as session:
        assert session.get_one(Item, claim.item_id).external_id == "coin"
    assert (
        queue.claim_next(db, people.labeler, project, 300) == claim
    )  # reload returns the same lease
    with pytest.raises(Conflict):
        queue.cast_vote(db, people.labeler, claim.item_id, "pos", claim.fence + 1, 1.0)
    with pytest.raises(InvalidInput):
        queue.cast_vote(db, people.labeler, claim.item_id, "maybe", claim.fence, 1.0)
    result = queue.cast_vote(db, people.labeler, claim.item_id, "pos", claim.fence, 1.0)
    assert result.outcome == "decided"
    with pytest.raises(Conflict):
        queue.cast_vote(db, people.labeler, claim.item_id, "pos", claim.fence, 1.0)
    with db.read() as session:
        assert (
            session.scalar(select(Decision.label).where(Decision.item_id == claim.item_id)) == "pos"
        )
        assert session.scalar(select(func.count(Vote.id))) == 1


def test_two_labelers_never_get_the_same_item(db: Database, project: str, people: People) -> None:
    projects_admin = people.admin
    ingest.submit_predictions(db, service(db, project), project, [prediction("one", 0.5)])
    first = queue.claim_next(db, people.labeler, project, 300)
    assert first is not None
    assert queue.claim_next(db, projects_admin, project, 300) is None


def test_skip_hides_the_item_from_me_but_not_from_others(
    db: Database, project: str, people: People
) -> None:
    ingest.submit_predictions(db, service(db, project), project, [prediction("one", 0.5)])
    claim = queue.claim_next(db, people.labeler, project, 300)
    assert claim is not None
    queue.release(db, people.labeler, claim.item_id, claim.fence)
    assert queue.claim_next(db, people.labeler, project, 300) is None
    other = queue.claim_next(db, people.admin, project, 300)
    assert other is not None
    assert other.item_id == claim.item_id
    assert other.fence == claim.fence + 1


def test_expired_lease_returns_the_item_and_refuses_the_late_vote(
    db: Database, project: str, people: People
) -> None:
    ingest.submit_predictions(db, service(db, project), project, [prediction("one", 0.5)])
    stale = queue.claim_next(db, people.labeler, project, -1)  # already expired
    assert stale is not None
    fresh = queue.claim_next(db, people.admin, project, 300)
    assert fresh is not None
    assert fresh.item_id == stale.item_id
    with pytest.raises(Conflict):
        queue.cast_vote(db, people.labeler, stale.item_id, "neg", stale.fence, 1.0)
    assert (
        queue.cast_vote(db, people.admin, fresh.item_id, "neg", fresh.fence, 1.0).outcome
        == "decided"
    )


def test_retrain_promotes_first_model_then_coalesces_requests(
    db: Database, settings: Settings, project: str, people: People
) -> None:
    run = retrain.request_retrain(db, people.admin, project)
    assert retrain.request_retrain(db, people.admin, project) == run
    assert retrain.execute_retrain(db, settings, run) == "succeeded"
    assert (
        retrain.execute_retrain(db, settings, run) == "succeeded"
    )  # a second delivery does nothing
    with db.read() as session:
        version = session.scalars(select(ModelVersion)).one()
        assert version.decision == "promoted"
        assert session.scalar(select(Project.champion_id)) == version.id
        assert version.holdout_size > 0
        assert version.train_size > 0
        assert session.scalar(select(func.count(RetrainRun.id))) == 1
