"""Rollback: an admin points the champion at an earlier version; audited, then re-scored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from feedback import artifacts
from feedback.db.engine import Database
from feedback.db.models import AuditEvent, ModelVersion, OutboxMessage, Project
from feedback.domain.errors import Conflict, FieldError, Forbidden, InvalidInput
from feedback.services.models import load_checked
from feedback.services.projects import visible_project
from feedback.services.users import Principal

ROUTING_FIELDS = ("threshold", "strategy", "audit_rate")


@dataclass(frozen=True)
class Rollback:
    """What a rollback did: the champion before and after, and the routing now in force."""

    previous: int | None
    current: int
    routing: dict[str, Any]
    changed: bool


def rollback(db: Database, principal: Principal, slug: str, version: int) -> Rollback:
    """Make `version` the champion again, with the routing settings saved with it.

    The version's file is verified (digest and type allowlist) before anything changes, the
    swap is a compare-and-swap on the champion the caller saw, and the change is audited
    and followed by a re-score of the queue, all in one transaction.

    Raises:
        Forbidden: the caller is not an admin user.
        NotFound: no such project, or the caller may not see it.
        InvalidInput: no such version, it was never promoted, or its file was refused
            (field `version`).
        Conflict: the champion changed while this rollback was checking the file.
    """
    if not principal.is_admin:
        raise Forbidden("only admins may change the champion")
    target = _target(db, principal, slug, version)
    if target.version.id == target.champion_id:
        routing = target.version.routing or {}
        return Rollback(version, version, routing, changed=False)
    _verify(target)
    with db.transaction() as session:
        project = visible_project(session, principal, slug)
        before = {name: getattr(project, name) for name in ROUTING_FIELDS}
        _swap(session, project, target)
        routing = {name: getattr(project, name) for name in ROUTING_FIELDS}
        previous = session.get(ModelVersion, target.champion_id) if target.champion_id else None
        done = Rollback(previous.version if previous else None, version, routing, changed=True)
        _record(session, principal, project, done, before)
        return done


def _record(
    session: Session, principal: Principal, project: Project, done: Rollback, before: Any
) -> None:
    """Audit the rollback and queue the re-score, in the rollback's transaction."""
    detail = {
        "from_version": done.previous,
        "to_version": done.current,
        "routing_before": before,
        "routing_after": done.routing,
    }
    session.add(
        AuditEvent(
            actor_id=principal.user_id, project_id=project.id, action="rollback", detail=detail
        )
    )
    session.add(OutboxMessage(kind="rescore", payload={"project_id": project.id}))


@dataclass(frozen=True)
class _Target:
    version: ModelVersion
    trusted: list[str]
    champion_id: int | None


def _target(db: Database, principal: Principal, slug: str, number: int) -> _Target:
    """The version to serve, the project's allowlist, and the champion it replaces."""
    with db.read() as session:
        project = visible_project(session, principal, slug)
        target = session.scalar(
            select(ModelVersion).where(
                ModelVersion.project_id == project.id, ModelVersion.version == number
            )
        )
        if target is None:
            raise _invalid(f"project '{slug}' has no version {number}")
        if target.decision != "promoted":
            raise _invalid(
                f"v{number} was never promoted ({target.reason}); only promoted versions can serve"
            )
        return _Target(target, list(project.trusted_types or []), project.champion_id)


def _verify(target: _Target) -> None:
    try:
        load_checked(target.version, target.trusted)
    except artifacts.ArtifactError as error:
        number = target.version.version
        raise _invalid(f"the model file of v{number} was refused: {error}") from error


def _swap(session: Session, project: Project, target: _Target) -> None:
    """Compare-and-swap the champion; bring back the routing saved with the version."""
    expected = target.champion_id
    current = Project.champion_id.is_(None) if expected is None else Project.champion_id == expected
    saved = target.version.routing or {}
    routing = {k: v for k, v in saved.items() if k in ROUTING_FIELDS}
    result = session.execute(
        update(Project)
        .where(Project.id == project.id, current)
        .values(champion_id=target.version.id, **routing)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise Conflict("the champion changed meanwhile; look again and retry")
    session.refresh(project)


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, [FieldError("version", message)])
