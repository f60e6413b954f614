"""The settings of a project that ingest obeys, read with one Core statement (no ORM).

Ingest reads them twice a request (to validate before the write lock, and again inside the
write transaction), so the statement is built once and returns plain values.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, exists, select

from feedback.db.models import Membership, Project
from feedback.domain.errors import NotFound
from feedback.services.users import Principal


class ProjectRules(NamedTuple):
    """What routes and checks a prediction: labels, inputs, strategy, threshold, queue cap.

    Hashable: ingest keys the work it did before the write transaction by the rules it used.
    """

    id: int
    labels: tuple[Any, ...]
    input_kind: str
    features: tuple[Any, ...] | None
    strategy: str
    threshold: float
    audit_rate: float
    max_queue: int | None
    queue_full: str


_RULES = select(
    *(Project.id, Project.labels, Project.input_kind, Project.features, Project.strategy),
    *(Project.threshold, Project.audit_rate, Project.max_queue, Project.queue_full),
    exists()
    .where(Membership.project_id == Project.id, Membership.user_id == bindparam("user_id"))
    .label("member"),
).where(Project.slug == bindparam("slug"))


def visible_rules(connection: Connection, principal: Principal, slug: str) -> ProjectRules:
    """The project's rules if this caller may see it (`Principal.may_see`, the rule of
    `projects.visible_project`); otherwise NotFound (no existence leak)."""
    row = connection.execute(_RULES, {"slug": slug, "user_id": principal.user_id}).first()
    if row is None or not principal.may_see(row.id, lambda: bool(row.member)):
        raise NotFound(f"no project '{slug}'")
    project_id, labels, input_kind, features, *routing, _ = row
    features = None if features is None else tuple(features)
    return ProjectRules(project_id, tuple(labels), input_kind, features, *routing)
