"""Reviewers' work: the escalation queue, deciding escalated items, history and corrections."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from feedback.db.engine import Database
from feedback.db.models import (
    AuditEvent,
    Decision,
    Item,
    Lease,
    Project,
    User,
    Vote,
    naive_utcnow,
)
from feedback.domain.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from feedback.services import audit_trail
from feedback.services.projects import visible_project
from feedback.services.queue import announce_label, decide
from feedback.services.users import Principal

REVIEW_ROLES = ("admin", "reviewer")
ESCALATION_PAGE = 100
HISTORY_ACTIONS = ("escalation_decided", "decision_corrected", "gold_marked", "gold_cleared")


def require_reviewer(principal: Principal) -> int:
    """Return the caller's user id if they are an admin or a reviewer."""
    if principal.user_id is None or principal.role not in REVIEW_ROLES:
        raise Forbidden("only admins and reviewers may do this")
    return principal.user_id


@dataclass(frozen=True)
class VoteRow:
    email: str | None
    answer: str
    seconds: float
    created_at: datetime


@dataclass(frozen=True)
class Escalated:
    item_id: int
    external_id: str
    input: dict[str, Any]
    display: dict[str, Any] | None
    votes: list[VoteRow]


def escalations(db: Database, principal: Principal, slug: str) -> tuple[Project, list[Escalated]]:
    """The project's escalated items, oldest first, each with the votes it got."""
    require_reviewer(principal)
    with db.read() as session:
        project = visible_project(session, principal, slug)
        items = session.scalars(
            select(Item)
            .where(Item.project_id == project.id, Item.status == "escalated")
            .order_by(Item.id)
            .limit(ESCALATION_PAGE)
        ).all()
        return project, [
            Escalated(i.id, i.external_id, i.input, i.display, _votes(session, i.id)) for i in items
        ]


def _votes(session: Session, item_id: int) -> list[VoteRow]:
    rows = session.execute(
        select(User.email, Vote.answer, Vote.seconds, Vote.created_at)
        .outerjoin(User, User.id == Vote.user_id)
        .where(Vote.item_id == item_id)
        .order_by(Vote.id)
    )
    return [VoteRow(r.email, r.answer, r.seconds, r.created_at) for r in rows]


@dataclass(frozen=True)
class Event:
    when: datetime
    who: str | None
    action: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class ItemHistory:
    project: Project
    item: Item
    decision: Decision | None
    votes: list[VoteRow]
    events: list[Event]


def item_history(db: Database, principal: Principal, slug: str, item_id: int) -> ItemHistory:
    """Everything that happened to one item: votes, decision, reviews and corrections."""
    require_reviewer(principal)
    with db.read() as session:
        project, item = _project_item(session, principal, slug, item_id)
        decision = session.scalar(select(Decision).where(Decision.item_id == item.id))
        rows = session.execute(
            select(AuditEvent.created_at, User.email, AuditEvent.action, AuditEvent.detail)
            .outerjoin(User, User.id == AuditEvent.actor_id)
            .where(
                AuditEvent.project_id == project.id,
                AuditEvent.action.in_(HISTORY_ACTIONS),
                AuditEvent.detail["item_id"].as_integer() == item.id,
            )
            .order_by(AuditEvent.id)
        )
        events = [Event(r.created_at, r.email, r.action, dict(r.detail)) for r in rows]
        return ItemHistory(project, item, decision, _votes(session, item.id), events)


def _project_item(
    session: Session, principal: Principal, slug: str, item_id: int
) -> tuple[Project, Item]:
    project = visible_project(session, principal, slug)
    item = session.get(Item, item_id)
    if item is None or item.project_id != project.id:
        raise NotFound(f"no item {item_id} in project '{slug}'")
    return project, item


def _check_label(project: Project, label: str) -> None:
    if label not in project.labels:
        raise InvalidInput(
            "not a label of this project",
            [FieldError("label", f"must be one of {', '.join(project.labels)}")],
        )


def decide_escalated(
    db: Database, principal: Principal, slug: str, item_id: int, label: str
) -> None:
    """Decide an escalated item with the reviewer's label; end any leases still on it."""
    user_id = require_reviewer(principal)
    with db.transaction() as session:
        project, item = _project_item(session, principal, slug, item_id)
        _check_label(project, label)
        if item.status != "escalated":
            raise Conflict("this item is not waiting in the escalation queue")
        decide(session, item, label, "review")
        session.execute(
            update(Lease)
            .where(Lease.item_id == item.id, Lease.state == "active")
            .values(state="ended")
        )
        audit_trail.record(
            session, user_id, project.id, "escalation_decided", item_id=item.id, label=label
        )


def correct_decision(
    db: Database, principal: Principal, slug: str, item_id: int, label: str
) -> bool:
    """Replace a decision's label (training reads it at the next retrain); return if changed.

    The old label is kept in `previous_label`, who and when in `corrected_by/at`, and the
    change goes to the audit trail and, as a new `label_decided`, to the model service.
    """
    user_id = require_reviewer(principal)
    with db.transaction() as session:
        project, item = _project_item(session, principal, slug, item_id)
        _check_label(project, label)
        decision = session.scalar(select(Decision).where(Decision.item_id == item.id))
        if decision is None:
            raise Conflict("this item has no decision yet; decide it from the escalation queue")
        if decision.label == label:
            return False
        previous = decision.label
        decision.previous_label, decision.label = previous, label
        decision.corrected_by, decision.corrected_at = user_id, naive_utcnow()
        announce_label(session, item, label)
        audit_trail.record(
            session,
            user_id,
            project.id,
            "decision_corrected",
            item_id=item.id,
            previous=previous,
            label=label,
        )
        return True
