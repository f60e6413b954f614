"""The review queue through its services, on SQLite and PostgreSQL.

Overlap and consensus, escalation and reviewers, retries, heartbeats, batch-aware picks,
gold items, corrections, history, force release and the admin's users and tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from sqlalchemy import func, select, update

from feedback.db.engine import Database
from feedback.db.models import AuditEvent, Decision, Item, Lease, Project, Vote
from feedback.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from feedback.services import admin, gold, ingest, labeling, projects, queue, review, users
from feedback.services.users import Principal
from tests.conftest import PASSWORD, People

pytestmark = pytest.mark.usefixtures("backend")


def add_items(db: Database, slug: str, scores: Sequence[float], prefix: str = "i") -> list[int]:
    """Queue one item per pos-probability (0.5 is the most uncertain); return their ids."""
    with db.read() as session:
        project_id = session.scalar(select(Project.id).where(Project.slug == slug))
    caller = Principal(user_id=None, role="service", project_id=project_id)
    rows = [
        {
            "external_id": f"{prefix}{n}",
            "input": {"text": f"text {prefix}{n}"},
            "probabilities": {"neg": round(1 - p, 6), "pos": p},
        }
        for n, p in enumerate(scores)
    ]
    results = ingest.submit_predictions(db, caller, slug, rows)
    assert {r.status for r in results} == {"queued"}
    return [r.id for r in results]


def set_project(db: Database, slug: str, **values: object) -> None:
    with db.transaction() as session:
        session.execute(update(Project).where(Project.slug == slug).values(**values))


def member(db: Database, email: str, role: str = "labeler", slug: str = "demo") -> Principal:
    user_id = users.create_user(db, email, PASSWORD, role)
    projects.add_member(db, slug, email)
    return Principal(user_id=user_id, role=role, email=email)


class Draws:
    """A stand-in for random.Random that returns the given draws in turn."""

    def __init__(self, *draws: float) -> None:
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0)


def test_overlap_two_offers_an_item_to_two_labelers_then_decides(
    db: Database, project: str, people: People
) -> None:
    set_project(db, project, overlap=2)
    [item_id] = add_items(db, project, [0.5])
    third = member(db, "third@test.io")
    first = queue.claim_next(db, people.labeler, project, 300)
    second = queue.claim_next(db, people.admin, project, 300)
    assert first is not None
    assert second is not None
    assert first.item_id == second.item_id == item_id
    assert second.fence == first.fence + 1
    assert queue.claim_next(db, third, project, 300) is None  # two slots, both taken
    assert queue.cast_vote(db, people.labeler, item_id, "pos", first.fence, 1).outcome == "pending"
    result = queue.cast_vote(db, people.admin, item_id, "pos", second.fence, 1)
    assert (result.outcome, result.label) == ("decided", "pos")
    with db.read() as session:
        assert session.scalars(select(Decision.label).where(Decision.item_id == item_id)).all() == [
            "pos"
        ]


def test_a_tie_escalates_and_only_a_reviewer_decides(
    db: Database, project: str, people: People
) -> None:
    set_project(db, project, overlap=2)
    [item_id] = add_items(db, project, [0.5])
    reviewer = member(db, "reviewer@test.io", "reviewer")
    for who, label in ((people.labeler, "pos"), (people.admin, "neg")):
        claim = queue.claim_next(db, who, project, 300)
        assert claim is not None
        queue.cast_vote(db, who, item_id, label, claim.fence, 1)
    _, escalated = review.escalations(db, reviewer, project)
    assert [(e.item_id, sorted(v.answer for v in e.votes)) for e in escalated] == [
        (item_id, ["neg", "pos"])
    ]
    with pytest.raises(Forbidden):
        review.escalations(db, people.labeler, project)
    with pytest.raises(Forbidden):
        review.decide_escalated(db, people.labeler, project, item_id, "pos")
    with pytest.raises(InvalidInput) as bad:
        review.decide_escalated(db, reviewer, project, item_id, "maybe")
    assert bad.value.details[0].field == "label"
    review.decide_escalated(db, reviewer, project, item_id, "neg")
    with pytest.raises(Conflict):
        review.decide_escalated(db, reviewer, project, item_id, "pos")  # decided once only
    with db.read() as session:
        decision = session.scalars(select(Decision).where(Decision.item_id == item_id)).one()
        assert (decision.label, decision.source) == ("neg", "review")
        assert session.scalar(
            select(AuditEvent.action).where(AuditEvent.action == "escalation_decided")
        )


def test_unsure_escalates_at_once_and_a_reviewer_outside_the_project_sees_nothing(
    db: Database, project: str, people: People
) -> None:
    [item_id] = add_items(db, project, [0.5])
    claim = queue.claim_next(db, people.labeler, project, 300)
    assert claim is not None
    assert (
        queue.cast_vote(db, people.labeler, item_id, "unsure", claim.fence, 1).outcome
        == "escalated"
    )
    assert (
        queue.claim_next(db, people.admin, project, 300) is None
    )  # escalated items leave the queue
    stranger = Principal(
        user_id=users.create_user(db, "rev2@test.io", PASSWORD, "reviewer"), role="reviewer"
    )
    with pytest.raises(NotFound):
        review.escalations(db, stranger, project)


def test_a_retried_answer_is_reported_as_saved_and_counted_once(
    db: Database, project: str, people: People
) -> None:
    add_items(db, project, [0.5, 0.6])
    claim = queue.claim_next(db, people.labeler, project, 300)
    assert claim is not None
    result, following = queue.vote_and_claim(
        db, people.labeler, claim.item_id, ("pos", claim.fence, 2.0), 300
    )
    assert result.outcome == "decided"
    assert following is not None
    assert following.item_id != claim.item_id
    with pytest.raises(queue.AlreadyVoted):
        queue.vote_and_claim(db, people.labeler, claim.item_id, ("pos", claim.fence, 2.0), 300)
    with pytest.raises(Conflict) as stale:
        queue.cast_vote(db, people.labeler, claim.item_id, "pos", claim.fence + 7, 2.0)
    assert not isinstance(stale.value, queue.AlreadyVoted)
    assert queue.current_claim(db, people.labeler, project) == following
    with db.read() as session:
        assert session.scalar(select(func.count(Vote.id))) == 1


def test_heartbeat_extends_a_live_lease_but_not_an_expired_one(
    db: Database, project: str, people: People
) -> None:
    add_items(db, project, [0.5, 0.6])
    claim = queue.claim_next(db, people.labeler, project, 60)
    assert claim is not None
    later = queue.extend(db, people.labeler, claim.item_id, claim.fence, 3600)
    assert (later - claim.expires_at).total_seconds() > 3000
    with pytest.raises(Conflict):
        queue.extend(db, people.labeler, claim.item_id, claim.fence + 1, 3600)
    stale = queue.claim_next(db, people.admin, project, -1)
    assert stale is not None
    with pytest.raises(Conflict):
        queue.extend(db, people.admin, stale.item_id, stale.fence, 3600)


def test_skip_hides_the_item_from_me_only(db: Database, project: str, people: People) -> None:
    first, second = add_items(db, project, [0.5, 0.7])
    claim = queue.claim_next(db, people.labeler, project, 300)
    assert claim is not None
    assert claim.item_id == first
    queue.release(db, people.labeler, first, claim.fence)
    mine = queue.claim_next(db, people.labeler, project, 300)
    assert mine is not None
    assert mine.item_id == second
    theirs = queue.claim_next(db, people.admin, project, 300)
    assert theirs is not None
    assert theirs.item_id == first


def test_random_share_serves_a_uniformly_random_item_by_its_random_key(
    db: Database, project: str, people: People
) -> None:
    ids = add_items(db, project, [0.5, 0.6, 0.7, 0.75])  # most to least uncertain
    with db.read() as session:
        keys: dict[int, float] = dict(
            session.execute(select(Item.id, Item.random_key).where(Item.id.in_(ids))).all()
        )
    assert len(set(keys.values())) == 4
    assert all(0.0 <= k < 1.0 for k in keys.values())
    top = queue.claim_next(db, people.admin, project, 300, rng=Draws(0.99))  # type: ignore[arg-type]
    assert top is not None
    assert top.item_id == ids[0]
    set_project(db, project, random_share=1.0)
    # A draw lands on the first free item at or after it in random-key order: here the least
    # uncertain item, which the top of the queue would serve last.
    low = queue.claim_next(db, people.labeler, project, 300, rng=Draws(0.3, keys[ids[3]]))  # type: ignore[arg-type]
    assert low is not None
    assert low.item_id == ids[3]
    # Past the largest free key, the walk wraps around to the smallest.
    third = member(db, "third@test.io")
    free = {i: keys[i] for i in ids[1:3]}
    wrapped = queue.claim_next(db, third, project, 300, rng=Draws(0.3, max(free.values()) + 1e-9))  # type: ignore[arg-type]
    assert wrapped is not None
    assert wrapped.item_id == min(free, key=free.__getitem__)


def test_gold_items_are_served_once_to_each_labeler_and_scored(
    db: Database, project: str, people: People
) -> None:
    gold_id, plain_id = add_items(db, project, [0.7, 0.5])
    with pytest.raises(Forbidden):
        gold.set_gold(db, people.labeler, project, gold_id, "pos")
    gold.set_gold(db, people.admin, project, gold_id, "pos")
    set_project(db, project, gold_rate=1.0)
    served = queue.claim_next(db, people.labeler, project, 300, rng=Draws(0.0))  # type: ignore[arg-type]
    assert served is not None
    assert served.item_id == gold_id
    result = queue.cast_vote(db, people.labeler, gold_id, "neg", served.fence, 1)
    assert (result.outcome, result.label) == ("decided", "neg")  # looks like any other answer
    again = queue.claim_next(db, people.labeler, project, 300, rng=Draws(0.0))  # type: ignore[arg-type]
    assert again is not None
    assert again.item_id == plain_id
    other = queue.claim_next(db, people.admin, project, 300, rng=Draws(0.0))  # type: ignore[arg-type]
    assert other is not None
    assert other.item_id == gold_id
    queue.cast_vote(db, people.admin, gold_id, "pos", other.fence, 1)
    stats = {s.email: s for s in gold.labeler_stats(db, people.admin, project).labelers}
    assert (stats["labeler@test.io"].gold.correct, stats["labeler@test.io"].gold.total) == (0, 1)
    assert stats["admin@test.io"].gold.rate == 1.0
    with db.read() as session:
        decision = session.scalars(select(Decision).where(Decision.item_id == gold_id)).one()
        assert (decision.label, decision.source) == ("pos", "gold")  # votes on gold decide nothing


def test_correction_is_what_training_reads_and_is_audited(
    db: Database, project: str, people: People
) -> None:
    [item_id] = add_items(db, project, [0.5])
    reviewer = member(db, "reviewer@test.io", "reviewer")
    claim = queue.claim_next(db, people.labeler, project, 300)
    assert claim is not None
    queue.cast_vote(db, people.labeler, item_id, "pos", claim.fence, 1)
    with pytest.raises(Forbidden):
        review.correct_decision(db, people.labeler, project, item_id, "neg")
    assert review.correct_decision(db, reviewer, project, item_id, "neg") is True
    assert review.correct_decision(db, reviewer, project, item_id, "neg") is False
    with db.read() as session:
        decision = session.scalars(select(Decision).where(Decision.item_id == item_id)).one()
        assert (decision.label, decision.previous_label, decision.corrected_by) == (
            "neg",
            "pos",
            reviewer.user_id,
        )
        assert decision.corrected_at is not None
        assert (
            session.scalar(
                select(Decision.label).where(
                    Decision.project_id == decision.project_id, Decision.item_id == item_id
                )
            )
            == "neg"
        )  # training reads this
    history = review.item_history(db, reviewer, project, item_id)
    assert [(v.email, v.answer) for v in history.votes] == [("labeler@test.io", "pos")]
    assert [(e.who, e.action, e.detail["previous"], e.detail["label"]) for e in history.events] == [
        ("reviewer@test.io", "decision_corrected", "pos", "neg")
    ]
    with pytest.raises(Forbidden):
        review.item_history(db, people.labeler, project, item_id)


def test_admin_force_release_returns_the_item_and_refuses_the_late_vote(
    db: Database, project: str, people: People
) -> None:
    [item_id] = add_items(db, project, [0.5])
    claim = queue.claim_next(db, people.labeler, project, 300)
    assert claim is not None
    [row] = admin.leases_in_flight(db, people.admin, project)
    assert (row.item_id, row.email, row.fence) == (item_id, "labeler@test.io", claim.fence)
    with pytest.raises(Forbidden):
        admin.force_release(db, people.labeler, project, row.id)
    admin.force_release(db, people.admin, project, row.id)
    assert admin.leases_in_flight(db, people.admin, project) == []
    with pytest.raises(Conflict):
        queue.cast_vote(db, people.labeler, item_id, "pos", claim.fence, 1)
    taken = queue.claim_next(db, people.admin, project, 300)
    assert taken is not None
    assert taken.item_id == item_id


def test_admin_manages_membership_and_tokens(db: Database, project: str, people: People) -> None:
    with pytest.raises(Forbidden):
        admin.list_users(db, people.labeler)
    with pytest.raises(InvalidInput) as bad:
        admin.create_user(db, people.admin, "not-an-email", "short", "boss")
    assert {d.field for d in bad.value.details} == {"email", "password", "role"}
    new_id = admin.create_user(db, people.admin, "new@test.io", PASSWORD, "reviewer")
    newcomer = Principal(user_id=new_id, role="reviewer", email="new@test.io")
    with pytest.raises(NotFound):
        labeling.labeling_page(db, newcomer, project)
    admin.set_membership(db, people.admin, new_id, project, True)
    assert labeling.labeling_page(db, newcomer, project).claim is None
    rows, slugs = admin.list_users(db, people.admin)
    assert ("new@test.io", "reviewer", ["demo"]) in [(r.email, r.role, r.projects) for r in rows]
    assert slugs == ["demo"]
    admin.set_membership(db, people.admin, new_id, project, False)
    with pytest.raises(NotFound):
        labeling.labeling_page(db, newcomer, project)
    token = admin.create_token(db, people.admin, "ci", project, None)
    assert users.principal_for_token(db, token) is not None
    [listed] = [t for t in admin.list_tokens(db, people.admin) if t.name == "ci"]
    admin.revoke_token(db, people.admin, listed.id)
    assert users.principal_for_token(db, token) is None
    with pytest.raises(Conflict):
        admin.revoke_token(db, people.admin, listed.id)


def test_progress_counts_my_answers_today_and_what_is_left(
    db: Database, project: str, people: People
) -> None:
    add_items(db, project, [0.5, 0.6, 0.7])
    claim = queue.claim_next(db, people.labeler, project, 300)
    assert claim is not None
    queue.cast_vote(db, people.labeler, claim.item_id, "pos", claim.fence, 1)
    page = labeling.labeling_page(db, people.labeler, project)
    assert (page.progress.labeled_today, page.progress.left, page.progress.more_left) == (
        1,
        2,
        False,
    )
    assert page.claim is None


def test_one_labeler_in_two_tabs_holds_one_lease(
    db: Database, project: str, people: People
) -> None:
    add_items(db, project, [0.5, 0.6, 0.7, 0.8])
    claims: list[int] = []
    barrier = threading.Barrier(4)

    def take() -> None:
        barrier.wait()
        found = queue.claim_next(db, people.labeler, project, 300)
        assert found is not None
        claims.append(found.item_id)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(claims) == 4
    assert len(set(claims)) == 1
    with db.read() as session:
        assert session.scalar(select(func.count(Lease.id))) == 1


def test_labeler_stats_measure_agreement_with_consensus(
    db: Database, project: str, people: People
) -> None:
    set_project(db, project, overlap=2)
    ids = add_items(db, project, [0.5, 0.55, 0.6, 0.65])
    answers = {
        people.labeler: ["pos", "neg", "pos", "neg"],
        people.admin: ["pos", "neg", "neg", "neg"],
    }
    for who, labels in answers.items():
        for _ in ids:
            claim = queue.claim_next(db, who, project, 300)
            assert claim is not None
            queue.cast_vote(
                db, who, claim.item_id, labels[ids.index(claim.item_id)], claim.fence, 2
            )
    report = gold.labeler_stats(db, people.admin, project)
    stats = {s.email: s for s in report.labelers}
    assert stats["labeler@test.io"].votes == 4
    assert stats["labeler@test.io"].mean_seconds == 2
    assert stats["admin@test.io"].kappa == 1.0
    assert stats["admin@test.io"].compared == 3
    assert report.alpha is not None
    assert 0 < report.alpha < 1
