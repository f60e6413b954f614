"""What the labeling page shows: the held item, the labeler's progress, the project's labels."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from feedback.db.engine import Database
from feedback.db.models import Item, Project, Vote, naive_utcnow
from feedback.services.projects import visible_project
from feedback.services.queue import Claim, require_labeler, to_claim
from feedback.services.queue_select import held_lease
from feedback.services.users import Principal

LEFT_CAP = 1000  # counting a million queued rows on every answer would cost more than the claim


@dataclass(frozen=True)
class Progress:
    labeled_today: int
    left: int
    more_left: bool  # True when at least LEFT_CAP items wait (the count stops there)


@dataclass(frozen=True)
class LabelingPage:
    project: Project
    claim: Claim | None
    progress: Progress


def labeling_page(db: Database, principal: Principal, slug: str) -> LabelingPage:
    """Read the labeler's held item (if any) and their progress line, without claiming."""
    user_id = require_labeler(principal)
    with db.read() as session:
        project = visible_project(session, principal, slug)
        held = held_lease(session, project.id, user_id)
        claim = None if held is None else to_claim(session, project, held)
        return LabelingPage(project, claim, progress(session, project.id, user_id))


def progress(session: Session, project_id: int, user_id: int) -> Progress:
    """Votes this labeler cast today (UTC) in the project, and items left in the queue."""
    midnight = datetime.combine(naive_utcnow().date(), time())
    today = session.scalar(
        select(func.count(Vote.id))
        .join(Item, Item.id == Vote.item_id)
        .where(Vote.user_id == user_id, Vote.created_at >= midnight, Item.project_id == project_id)
    )
    waiting = (
        select(Item.id)
        .where(Item.project_id == project_id, Item.status == "queued")
        .limit(LEFT_CAP)
        .subquery()
    )
    left = session.scalar(select(func.count()).select_from(waiting)) or 0
    return Progress(today or 0, left, left >= LEFT_CAP)
