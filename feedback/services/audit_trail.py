"""The audit trail: who changed what, recorded in the transaction that changes it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from feedback.db.models import AuditEvent


def record(
    session: Session, actor_id: int | None, project_id: int | None, action: str, **detail: Any
) -> None:
    """Add one audit event to the open transaction (it commits or rolls back with the change)."""
    session.add(AuditEvent(actor_id=actor_id, project_id=project_id, action=action, detail=detail))
