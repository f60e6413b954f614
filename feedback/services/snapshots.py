"""Snapshots: the exact examples of one run, up to a watermark, with digests for lineage.

Training = every decided, non-holdout example whose label is still one of the project's
classes, with its current label (a correction replaces the old one). Holdout = the seed
slice and the decided audit items; never trained on. The digest covers each training
example's decision id, item id and label in decision order, so two runs trained on the same
examples have the same digest, and a correction or a removed class changes it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple

from sqlalchemy import Integer, case, func, null, or_, select, type_coerce
from sqlalchemy.orm import Session

from feedback.db.clock import utcnow
from feedback.db.models import Decision, Item, Project
from feedback.domain.pipelines import input_key

DIGEST_CHUNK = 10_000  # examples hashed per update: fewer calls, bounded memory


class Example(NamedTuple):
    decision_id: int
    item_id: int
    label: str


@dataclass(frozen=True)
class Labels:
    """The project's decided labels up to the watermark, split and digested.

    `inputs` holds the inputs already read (by decision id): those of the holdout and of the
    training examples after the `since` the labels were read for.
    """

    train: list[Example]
    holdout: list[Example]
    excluded: dict[str, int]
    watermark: int
    taken_at: datetime
    inputs: dict[int, Any] = field(default_factory=dict, repr=False)
    inputs_after: int = 0

    @cached_property
    def digest(self) -> str:
        return digest(self.train)

    @cached_property
    def holdout_digest(self) -> str:
        return digest(self.holdout)

    def digest_upto(self, watermark: int) -> str:
        """The digest of the training examples a run at `watermark` would have had."""
        return digest([e for e in self.train if e.decision_id <= watermark])


def digest(examples: list[Example]) -> str:
    """sha256 over `decision_id:item_id:label` lines, in decision order."""
    hasher = hashlib.sha256()
    for start in range(0, len(examples), DIGEST_CHUNK):
        chunk = examples[start : start + DIGEST_CHUNK]
        hasher.update("".join(f"{d}:{i}:{label}\n" for d, i, label in chunk).encode())
    return hasher.hexdigest()


def read_labels(session: Session, project: Project, inputs_after: int = 0) -> Labels:
    """Read every decided label, and the inputs of the holdout and of decisions after
    `inputs_after`, in one pass (the input value only, through a JSON path)."""
    taken_at = session.scalar(select(utcnow()))
    watermark = session.scalar(
        select(func.max(Decision.id)).where(Decision.project_id == project.id)
    )
    wanted = or_(Decision.id > inputs_after, Item.is_holdout.is_(True))
    rows = (
        session.connection()
        .execute(  # Core rows: no ORM bookkeeping per example
            select(
                Decision.id,
                Decision.item_id,
                Decision.label,
                type_coerce(Item.is_holdout, Integer),  # truthy as it comes: no bool per row
                case((wanted, _input_value(project)), else_=null()).label("value"),
            )
            .join(Item, Item.id == Decision.item_id)
            .where(Decision.project_id == project.id, Decision.id <= (watermark or 0))
            .order_by(Decision.id)
        )
        .all()
    )
    return _split(project, rows, watermark or 0, taken_at or datetime.min, inputs_after)


def _input_value(project: Project) -> Any:
    value = Item.input[input_key(project.input_kind)]
    return value.as_string() if project.input_kind == "text" else value


def _split(
    project: Project, rows: Sequence[Any], watermark: int, taken_at: datetime, after: int
) -> Labels:
    """One pass over the rows (a snapshot can hold 100,000 of them: no per-row attribute
    lookups, no second or third pass)."""
    classes = set(project.labels)
    excluded: Counter[str] = Counter()
    train: list[Example] = []
    holdout: list[Example] = []
    inputs: dict[int, Any] = {}
    for decision_id, item_id, label, is_holdout, value in rows:
        if label not in classes:
            excluded[label] += 1
            continue
        (holdout if is_holdout else train).append(Example(decision_id, item_id, label))
        if decision_id > after or is_holdout:
            inputs[decision_id] = value
    return Labels(
        train=train,
        holdout=holdout,
        excluded=dict(sorted(excluded.items())),
        watermark=watermark,
        taken_at=taken_at,
        inputs=inputs,
        inputs_after=after,
    )


@dataclass(frozen=True)
class Snapshot:
    """What a run trains and judges on: inputs of the new training examples, and the holdout.

    `since` is 0 for a full refit; for an incremental update it is the champion's
    watermark, and `train_*` hold only the examples after it.
    """

    labels: Labels
    since: int
    train_inputs: list[Any] = field(repr=False)
    train_labels: list[str]
    holdout_inputs: list[Any] = field(repr=False)
    holdout_labels: list[str]

    def report(self) -> dict[str, Any]:
        """The lineage part of the run report."""
        return {
            "watermark": self.labels.watermark,
            "snapshot_at": self.labels.taken_at.isoformat(),
            "snapshot_digest": self.labels.digest,
            "holdout_digest": self.labels.holdout_digest,
            "train_size": len(self.labels.train),
            "holdout_size": len(self.labels.holdout),
            "excluded": self.labels.excluded,
            "excluded_total": sum(self.labels.excluded.values()),
            "fitted_on": len(self.train_labels),
            "since_watermark": self.since,
        }


def read_inputs(session: Session, project: Project, labels: Labels, since: int = 0) -> Snapshot:
    """The snapshot for training on the examples after `since` (reading inputs still missing)."""
    inputs = labels.inputs
    if since < labels.inputs_after:
        inputs = {**inputs, **_more_inputs(session, project, since, labels.inputs_after)}
    train = [e for e in labels.train if e.decision_id > since]
    return Snapshot(
        labels=labels,
        since=since,
        train_inputs=[inputs[e.decision_id] for e in train],
        train_labels=[e.label for e in train],
        holdout_inputs=[inputs[e.decision_id] for e in labels.holdout],
        holdout_labels=[e.label for e in labels.holdout],
    )


def _more_inputs(session: Session, project: Project, low: int, high: int) -> dict[int, Any]:
    rows = session.connection().execute(
        select(Decision.id, _input_value(project).label("value"))
        .join(Item, Item.id == Decision.item_id)
        .where(Decision.project_id == project.id, Decision.id > low, Decision.id <= high)
    )
    return {row.id: row.value for row in rows}
