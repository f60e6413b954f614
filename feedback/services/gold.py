"""Gold items (known answers) and how each labeler measures up: gold accuracy and agreement."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from feedback.db.engine import Database
from feedback.db.models import Decision, Item, User, Vote, naive_utcnow
from feedback.domain.agreement import Accuracy, Pair, cohen_kappa, gold_accuracy, krippendorff_alpha
from feedback.domain.consensus import UNSURE
from feedback.domain.errors import FieldError, InvalidInput, NotFound
from feedback.services import audit_trail
from feedback.services.admin import require_admin
from feedback.services.projects import visible_project
from feedback.services.queue import announce_label, decide
from feedback.services.users import Principal

ALPHA_ITEMS = 2000  # agreement across labelers is estimated on the latest items with 2+ votes


def set_gold(
    db: Database, principal: Principal, slug: str, item_id: int, label: str | None
) -> None:
    """Mark an item as gold with its known answer (None clears it); the answer becomes its label.

    A gold item is served once to each labeler at the project's gold rate; its votes measure
    the labeler and never decide anything.
    """
    actor = require_admin(principal)
    with db.transaction() as session:
        project = visible_project(session, principal, slug)
        item = session.get(Item, item_id)
        if item is None or item.project_id != project.id:
            raise NotFound(f"no item {item_id} in project '{slug}'")
        if label is not None and label not in project.labels:
            raise InvalidInput(
                "not a label of this project",
                [FieldError("label", f"must be one of {', '.join(project.labels)}")],
            )
        item.gold_label = label
        if label is not None:
            _label_as_gold(session, item, label, actor)
        action = "gold_marked" if label is not None else "gold_cleared"
        audit_trail.record(session, actor, project.id, action, item_id=item.id, label=label)


def _label_as_gold(session: Session, item: Item, label: str, actor: int) -> None:
    """The known answer is the item's decision: decide it, or correct a different decision."""
    decision = session.scalar(select(Decision).where(Decision.item_id == item.id))
    if decision is None:
        decide(session, item, label, "gold")
    elif decision.label != label:
        decision.previous_label, decision.label = decision.label, label
        decision.corrected_by, decision.corrected_at = actor, naive_utcnow()
        announce_label(session, item, label)  # a correction, as a reviewer's would be


@dataclass(frozen=True)
class LabelerStats:
    email: str
    votes: int
    votes_last_day: int
    mean_seconds: float | None
    unsure: int
    gold: Accuracy
    kappa: float | None  # Cohen's kappa of the labeler's answers against the decisions
    compared: int  # how many answers the kappa rests on


@dataclass(frozen=True)
class ProjectAgreement:
    labelers: list[LabelerStats]
    alpha: float | None  # Krippendorff's alpha over items with two or more answers


def labeler_stats(db: Database, principal: Principal, slug: str) -> ProjectAgreement:
    """Per labeler: throughput, gold accuracy, agreement with consensus; alpha for the project."""
    require_admin(principal)
    with db.read() as session:
        project = visible_project(session, principal, slug)
        gold = _pair_counts(session, project.id, Item.gold_label, Item.gold_label.is_not(None))
        agree = _pair_counts(session, project.id, Decision.label, Item.gold_label.is_(None))
        labelers = [
            LabelerStats(
                row.email,
                row.votes,
                int(row.recent or 0),
                row.seconds,
                int(row.unsure or 0),
                gold_accuracy(gold.get(row.user_id, {})),
                cohen_kappa(agree.get(row.user_id, {})),
                sum(agree.get(row.user_id, {}).values()),
            )
            for row in _throughput(session, project.id)
        ]
        return ProjectAgreement(labelers, _alpha(session, project.id))


def _throughput(session: Session, project_id: int) -> list[Any]:
    since = naive_utcnow() - timedelta(days=1)
    return list(
        session.execute(
            select(
                Vote.user_id,
                User.email,
                func.count(Vote.id).label("votes"),
                func.sum(case((Vote.created_at >= since, 1), else_=0)).label("recent"),
                func.avg(Vote.seconds).label("seconds"),
                func.sum(case((Vote.answer == UNSURE, 1), else_=0)).label("unsure"),
            )
            .join(Item, Item.id == Vote.item_id)
            .join(User, User.id == Vote.user_id)
            .where(Item.project_id == project_id)
            .group_by(Vote.user_id, User.email)
            .order_by(User.email)
        )
    )


def _pair_counts(
    session: Session, project_id: int, truth: Any, which: Any
) -> dict[int, dict[Pair, int]]:
    """Per user, counts of (their answer, the reference label) over the chosen items."""
    query = (
        select(Vote.user_id, Vote.answer, truth, func.count(Vote.id))
        .join(Item, Item.id == Vote.item_id)
        .where(Item.project_id == project_id, which, Vote.answer != UNSURE)
        .group_by(Vote.user_id, Vote.answer, truth)
    )
    if truth is Decision.label:
        query = query.join(Decision, Decision.item_id == Item.id)
    counts: dict[int, dict[Pair, int]] = defaultdict(dict)
    for user_id, answer, reference, n in session.execute(query):
        counts[user_id][(answer, reference)] = n
    return counts


def _alpha(session: Session, project_id: int) -> float | None:
    multi = (
        select(Vote.item_id)
        .join(Item, Item.id == Vote.item_id)
        .where(Item.project_id == project_id, Item.gold_label.is_(None), Vote.answer != UNSURE)
        .group_by(Vote.item_id)
        .having(func.count(Vote.id) >= 2)
        .order_by(Vote.item_id.desc())
        .limit(ALPHA_ITEMS)
    )
    units: dict[int, list[str]] = defaultdict(list)
    rows = session.execute(
        select(Vote.item_id, Vote.answer).where(
            Vote.item_id.in_(multi.scalar_subquery()), Vote.answer != UNSURE
        )
    )
    for item_id, answer in rows:
        units[item_id].append(answer)
    return krippendorff_alpha(units.values())
