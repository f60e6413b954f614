"""Admin work: users and membership, API tokens, leases in flight."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, delete, select, update
from sqlalchemy.orm import Session

from feedback.db.clock import utcnow
from feedback.db.engine import Database
from feedback.db.models import ApiToken, Item, Lease, Membership, Project, User
from feedback.domain.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from feedback.services import audit_trail, users
from feedback.services.projects import visible_project
from feedback.services.users import Principal

MAX_TOKEN_NAME = 100


def require_admin(principal: Principal) -> int:
    """Return the caller's user id if they are an admin."""
    if principal.user_id is None or not principal.is_admin:
        raise Forbidden("only admins may do this")
    return principal.user_id


@dataclass(frozen=True)
class UserRow:
    id: int
    email: str
    role: str
    is_active: bool
    projects: list[str]


def list_users(db: Database, principal: Principal) -> tuple[list[UserRow], list[str]]:
    """Every user with the projects they belong to, and every project slug."""
    require_admin(principal)
    with db.read() as session:
        member_of: dict[int, list[str]] = {}
        for user_id, slug in session.execute(
            select(Membership.user_id, Project.slug).join(Project).order_by(Project.slug)
        ):
            member_of.setdefault(user_id, []).append(slug)
        rows = [
            UserRow(u.id, u.email, u.role, u.is_active, member_of.get(u.id, []))
            for u in session.scalars(select(User).order_by(User.email))
        ]
        return rows, list(session.scalars(select(Project.slug).order_by(Project.slug)))


def create_user(db: Database, principal: Principal, email: str, password: str, role: str) -> int:
    """Create a user with a role (validated and hashed by the users service); audit it."""
    actor = require_admin(principal)
    user_id = users.create_user(db, email, password, role)
    with db.transaction() as session:
        audit_trail.record(session, actor, None, "user_created", user_id=user_id, role=role)
    return user_id


def set_membership(
    db: Database, principal: Principal, user_id: int, slug: str, member: bool
) -> None:
    """Add a user to a project, or remove them from it."""
    actor = require_admin(principal)
    with db.transaction() as session:
        project = visible_project(session, principal, slug)
        if session.get(User, user_id) is None:
            raise NotFound(f"no user {user_id}")
        present = session.get(Membership, (user_id, project.id)) is not None
        if member and not present:
            session.add(Membership(user_id=user_id, project_id=project.id))
        elif not member and present:
            session.execute(
                delete(Membership).where(
                    Membership.user_id == user_id, Membership.project_id == project.id
                )
            )
        action = "member_added" if member else "member_removed"
        audit_trail.record(session, actor, project.id, action, user_id=user_id)


@dataclass(frozen=True)
class TokenRow:
    id: int
    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None


def list_tokens(db: Database, principal: Principal) -> list[TokenRow]:
    """Every API token (never its secret): name, project or user, created, revoked."""
    require_admin(principal)
    with db.read() as session:
        rows = session.execute(
            select(ApiToken, Project.slug, User.email)
            .outerjoin(Project, Project.id == ApiToken.project_id)
            .outerjoin(User, User.id == ApiToken.user_id)
            .order_by(ApiToken.id.desc())
        )
        return [
            TokenRow(
                t.id,
                t.name,
                f"project {slug}" if slug else f"user {email}",
                t.created_at,
                t.revoked_at,
            )
            for t, slug, email in rows
        ]


def create_token(
    db: Database, principal: Principal, name: str, slug: str | None, email: str | None
) -> str:
    """Create a service token (project) or personal token (user); the secret is returned once."""
    actor = require_admin(principal)
    if not 1 <= len(name.strip()) <= MAX_TOKEN_NAME:
        raise InvalidInput(
            "the token is not valid", [FieldError("name", f"give 1-{MAX_TOKEN_NAME} characters")]
        )
    token = users.create_token(db, name.strip(), slug, email)
    with db.transaction() as session:
        audit_trail.record(session, actor, None, "token_created", name=name, scope=slug or email)
    return token


def revoke_token(db: Database, principal: Principal, token_id: int) -> None:
    """Revoke a token at once; requests bearing it get 401 from now on."""
    actor = require_admin(principal)
    with db.transaction() as session:
        token = session.get(ApiToken, token_id)
        if token is None:
            raise NotFound(f"no token {token_id}")
        if token.revoked_at is not None:
            raise Conflict("this token is revoked already")
        session.execute(update(ApiToken).where(ApiToken.id == token_id).values(revoked_at=utcnow()))
        audit_trail.record(
            session, actor, token.project_id, "token_revoked", token_id=token_id, name=token.name
        )


@dataclass(frozen=True)
class LeaseRow:
    id: int
    item_id: int
    external_id: str
    email: str
    fence: int
    expires_at: datetime


def leases_in_flight(db: Database, principal: Principal, slug: str) -> list[LeaseRow]:
    """Live leases in the project: who holds which item, with which fence, until when."""
    require_admin(principal)
    with db.read() as session:
        project = visible_project(session, principal, slug)
        rows = session.execute(_live_leases(project.id))
        return [LeaseRow(*row) for row in rows]


def _live_leases(project_id: int) -> Select[int, int, str, str, int, datetime]:
    return (
        select(Lease.id, Item.id, Item.external_id, User.email, Lease.fence, Lease.expires_at)
        .join(Item, Item.id == Lease.item_id)
        .join(User, User.id == Lease.user_id)
        .where(Item.project_id == project_id, Lease.state == "active", Lease.expires_at > utcnow())
        .order_by(Lease.expires_at)
        .limit(500)
    )


def force_release(db: Database, principal: Principal, slug: str, lease_id: int) -> None:
    """End a labeler's lease now: the item returns to the pool and their late vote gets 409."""
    actor = require_admin(principal)
    with db.transaction() as session:
        project = visible_project(session, principal, slug)
        lease = _project_lease(session, project.id, lease_id)
        if lease.state != "active":
            raise Conflict("this lease has ended already")
        lease.state = "revoked"
        audit_trail.record(
            session, actor, project.id, "lease_released", lease_id=lease.id, item_id=lease.item_id
        )


def _project_lease(session: Session, project_id: int, lease_id: int) -> Lease:
    lease = session.scalar(
        select(Lease)
        .join(Item, Item.id == Lease.item_id)
        .where(Lease.id == lease_id, Item.project_id == project_id)
    )
    if lease is None:
        raise NotFound(f"no lease {lease_id} in this project")
    return lease
