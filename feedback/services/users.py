"""Users, login sessions and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, delete, func, select

from feedback.db.engine import Database
from feedback.db.models import ApiToken, LoginFailure, Project, User, UserSession, naive_utcnow
from feedback.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from feedback.domain.errors import FieldError as F

ROLES = ("admin", "reviewer", "labeler")
SESSION_DAYS = 14
MIN_PASSWORD = 8
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
_DUMMY_HASH = _hasher.hash("timing-equaliser")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, or a service token scoped to one project."""

    user_id: int | None
    role: str
    email: str | None = None
    project_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_see(self, project_id: int, is_member: Callable[[], bool]) -> bool:
        """The visibility rule: a service token sees its own project, an admin every project,
        anyone else the projects they are a member of (`is_member` is asked only then)."""
        if self.role == "service":
            return self.project_id == project_id
        return self.is_admin or is_member()


def digest(token: str) -> str:
    """Hash a bearer or session token for storage (tokens are long and random)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(db: Database, email: str, password: str, role: str) -> int:
    """Create a user with an argon2id password hash; return its id."""
    email = email.strip().lower()
    problems = _user_problems(email, password, role)
    if problems:
        raise InvalidInput("the user is not valid", problems)
    with db.transaction() as session:
        if session.scalar(select(User.id).where(User.email == email)) is not None:
            raise Conflict(f"a user with email {email} exists already")
        user = User(email=email, password_hash=_hasher.hash(password), role=role, is_active=True)
        session.add(user)
        session.flush()
        return user.id


def _user_problems(email: str, password: str, role: str) -> list[F]:
    problems = []
    if "@" not in email or len(email) > 254:
        problems.append(F("email", "must be an email address"))
    if len(password) < MIN_PASSWORD:
        problems.append(F("password", f"must have at least {MIN_PASSWORD} characters"))
    if role not in ROLES:
        problems.append(F("role", f"must be one of {', '.join(ROLES)}"))
    return problems


def _open_session(
    db: Database, email: str, password: str, max_failures: int, window_seconds: int
) -> str:
    email = email.strip().lower()
    with db.transaction() as session:
        since = naive_utcnow() - timedelta(seconds=window_seconds)
        failures = session.scalar(
            select(func.count(LoginFailure.id)).where(
                LoginFailure.email == email, LoginFailure.created_at > since
            )
        )
        if (failures or 0) >= max_failures:
            raise Forbidden("too many failed logins; wait a few minutes and try again")
        user = session.scalar(select(User).where(User.email == email, User.is_active.is_(True)))
        # Unknown users cost a hash check too, so timing does not tell which emails exist.
        if (
            not _verify(_DUMMY_HASH if user is None else user.password_hash, password)
            or user is None
        ):
            raise _LoginFailed()
        token = secrets.token_urlsafe(32)
        expires = naive_utcnow() + timedelta(days=SESSION_DAYS)
        session.add(UserSession(token_hash=digest(token), user_id=user.id, expires_at=expires))
        return token


class _LoginFailed(Forbidden):
    def __init__(self) -> None:
        super().__init__("unknown email or wrong password")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def login(db: Database, email: str, password: str, max_failures: int, window_seconds: int) -> str:
    """Check the password and open a new session; return the new session token.

    A failure is recorded (in its own transaction) so that guessing is rate-limited across
    every web process.

    Raises:
        Forbidden: unknown user or wrong password (the same message for both), or too many
            recent failures for this email.
    """
    try:
        return _open_session(db, email, password, max_failures, window_seconds)
    except _LoginFailed:
        with db.transaction() as session:
            session.add(LoginFailure(email=email.strip().lower()))
        raise


def logout(db: Database, token: str) -> None:
    """End one session."""
    with db.transaction() as session:
        session.execute(delete(UserSession).where(UserSession.token_hash == digest(token)))


def principal_for_session(db: Database, token: str) -> Principal | None:
    """Return the user behind a live session token, or None."""
    with db.read() as session:
        row = session.execute(
            select(User.id, User.role, User.email)
            .join(UserSession, UserSession.user_id == User.id)
            .where(
                UserSession.token_hash == digest(token),
                UserSession.expires_at > naive_utcnow(),
                User.is_active.is_(True),
            )
        ).first()
    return None if row is None else Principal(user_id=row.id, role=row.role, email=row.email)


def create_token(db: Database, name: str, project_slug: str | None, email: str | None) -> str:
    """Create a service token (for a project) or a personal token (for a user); return it once."""
    if (project_slug is None) == (email is None):
        raise InvalidInput("a token is for one project or for one user", [F("scope", "give one")])
    token = "fb_" + secrets.token_urlsafe(32)
    with db.transaction() as session:
        record = ApiToken(name=name, token_hash=digest(token))
        if project_slug is not None:
            record.project_id = _require(
                session.scalar(select(Project.id).where(Project.slug == project_slug)), "project"
            )
        else:
            record.user_id = _require(
                session.scalar(select(User.id).where(User.email == email)), "user"
            )
        session.add(record)
    return token


def _require(value: int | None, what: str) -> int:
    if value is None:
        raise NotFound(f"no such {what}")
    return value


_TOKEN_PRINCIPAL = (  # built once: a bearer token is looked up on every API request
    select(ApiToken.project_id, User.id, User.role, User.email, User.is_active)
    .outerjoin(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
)


def principal_for_token(db: Database, token: str) -> Principal | None:
    """Return who a bearer token speaks for, or None if it is unknown or revoked.

    Looked up afresh on every call (one statement, nothing written), so a revocation or a
    deactivated user takes effect at the next request.
    """
    with db.read_statements() as connection:
        row = connection.execute(_TOKEN_PRINCIPAL, {"token_hash": digest(token)}).first()
    if row is None:
        return None
    project_id, user_id, role, email, is_active = row
    if project_id is not None:
        return Principal(user_id=None, role="service", project_id=project_id)
    if user_id is None or not is_active:
        return None
    return Principal(user_id=user_id, role=role, email=email)
