"""The JSON events a webhook receives, built from an outbox message and the rows it names."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from feedback.db.models import Decision, Item, ModelVersion, OutboxMessage, Project


def build(session: Session, message: OutboxMessage) -> tuple[Project, bytes] | None:
    """The project and the exact body to send; None when there is nothing to send."""
    found = _label_decided(session, message) if message.kind == "label_decided" else None
    if message.kind == "promoted":
        found = _promoted(session, message)
    if found is None:
        return None
    project, data = found
    if not project.webhook_url or not project.webhook_secret:
        return None
    event = {
        "id": f"evt_{message.id}",
        "type": message.kind,
        "created_at": _iso(message.created_at),
        "project": project.slug,
        "data": data,
    }
    return project, event_json(event)


def event_json(event: dict[str, Any]) -> bytes:
    """Serialise an event exactly as it is signed and sent."""
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()


def _label_decided(session: Session, message: OutboxMessage) -> tuple[Project, Any] | None:
    item = session.get(Item, message.payload.get("item_id"))
    if item is None:
        return None
    decision = session.scalar(select(Decision).where(Decision.item_id == item.id))
    if decision is None:
        return None
    label = message.payload.get("label") or decision.label
    correction = label == decision.label and decision.corrected_at is not None
    data = {
        "item_id": item.id,
        "external_id": item.external_id,
        "label": label,
        "current_label": decision.label,  # differs when a later correction superseded this
        "source": decision.source,
        "decided_at": _iso(decision.decided_at),
        "previous_label": decision.previous_label if correction else None,
        "corrected_at": _iso(decision.corrected_at)
        if correction and decision.corrected_at
        else None,
        "route": item.route,
        "holdout": item.is_holdout,
    }
    return session.get_one(Project, item.project_id), data


def _promoted(session: Session, message: OutboxMessage) -> tuple[Project, Any] | None:
    project = session.get(Project, message.payload.get("project_id"))
    if project is None:
        return None
    version = session.scalar(
        select(ModelVersion).where(
            ModelVersion.project_id == project.id,
            ModelVersion.version == message.payload.get("version"),
        )
    )
    if version is None:
        return None
    data = {
        "version": version.version,
        "created_at": _iso(version.created_at),
        "metrics": version.metrics,
        "baseline_metrics": version.baseline_metrics,
        "train_size": version.train_size,
        "holdout_size": version.holdout_size,
        "sha256": version.sha256,
        "reason": version.reason,
    }
    return project, data


def _iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"
