"""Tell an API caller who it is: its role and, for a service token, its project."""

from __future__ import annotations

from sqlalchemy import select

from feedback.db.engine import Database
from feedback.db.models import Project
from feedback.schemas import MeOut
from feedback.services.users import Principal


def describe(db: Database, principal: Principal) -> MeOut:
    """Describe the caller; a service token names the one project it may use."""
    project = None
    if principal.project_id is not None:
        with db.read() as session:
            project = session.scalar(select(Project.slug).where(Project.id == principal.project_id))
    return MeOut(role=principal.role, project=project, email=principal.email)
