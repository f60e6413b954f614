"""The demo: scikit-learn's bundled digits, a first champion, and a queue ready to label."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sqlalchemy import select

from feedback.config import Settings
from feedback.db.engine import Database
from feedback.db.models import Item, ModelVersion, Project
from feedback.domain.errors import Conflict
from feedback.services import ingest, projects, retrain, users
from feedback.services.models import predict_probabilities
from feedback.services.seed_files import Example

SLUG = "digits"
ADMIN, LABELER = "admin@example.com", "labeler@example.com"
SEED_TRAIN, SEED_HOLDOUT = 60, 400
DATA_SEED = 7
SYSTEM = users.Principal(user_id=None, role="admin")


@dataclass(frozen=True)
class Credentials:
    admin_email: str
    admin_password: str
    labeler_email: str
    labeler_password: str


def ensure_demo(db: Database, settings: Settings) -> Credentials:
    """Create the demo once; finish any step an interrupted first run left undone."""
    credentials = _credentials(settings.instance_path)
    with db.read() as session:
        project = session.scalar(select(Project).where(Project.slug == SLUG))
        untrained = project is None or project.champion_id is None
        pooled = (
            project is not None
            and session.scalar(
                select(Item.id).where(Item.project_id == project.id, Item.route != "seed").limit(1)
            )
            is not None
        )
    if not pooled:
        _create(db, settings, credentials, project is None, untrained)
    return credentials


def _credentials(instance: Path) -> Credentials:
    """Read the generated logins, creating random passwords on the first run."""
    path = instance / "credentials.json"
    if path.exists():
        return Credentials(**json.loads(path.read_text()))
    made = Credentials(ADMIN, secrets.token_urlsafe(12), LABELER, secrets.token_urlsafe(12))
    instance.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(made.__dict__, handle)
    return made


def _create(
    db: Database, settings: Settings, credentials: Credentials, new: bool, untrained: bool
) -> None:
    digits = load_digits()
    order = np.random.default_rng(DATA_SEED).permutation(len(digits.target))
    seed_rows, pool_rows = order[: SEED_TRAIN + SEED_HOLDOUT], order[SEED_TRAIN + SEED_HOLDOUT :]
    _ensure_user(db, credentials.admin_email, credentials.admin_password, "admin")
    _ensure_user(db, credentials.labeler_email, credentials.labeler_password, "labeler")
    spec = projects.ProjectSpec(
        slug=SLUG,
        name="Handwritten digits (demo)",
        labels=[str(d) for d in range(10)],
        input_kind="features",
        features=list(digits.feature_names),
        threshold=0.9,
        retrain_min_decisions=20,
        holdout_share=SEED_HOLDOUT / (SEED_TRAIN + SEED_HOLDOUT),
    )
    seed = [
        Example({"features": digits.data[i].tolist()}, str(digits.target[i])) for i in seed_rows
    ]
    if new:
        projects.create_project(db, spec, seed)
    projects.add_member(db, SLUG, credentials.labeler_email)
    if untrained:
        run = retrain.request_retrain(db, SYSTEM, SLUG, trigger="seed")
        retrain.execute_retrain(db, settings, run)
    post_pool(db, [(f"digit-{i}", digits.data[i]) for i in pool_rows])


def _ensure_user(db: Database, email: str, password: str, role: str) -> None:
    with contextlib.suppress(Conflict):  # made by an earlier, interrupted first run
        users.create_user(db, email, password, role)


def post_pool(db: Database, pool: list[tuple[str, np.ndarray]]) -> None:
    """Play the model service: post the champion's predictions for unseen digits."""
    with db.read() as session:
        project = session.scalars(select(Project).where(Project.slug == SLUG)).one()
        if project.champion_id is None:  # still training: the next start posts the pool
            return
        champion = session.get_one(ModelVersion, project.champion_id)
    inputs = [{"features": row.tolist()} for _, row in pool]
    probabilities = predict_probabilities(champion, project, inputs)
    items: list[dict[str, Any]] = [
        {
            "external_id": external_id,
            "input": {"features": row.tolist()},
            "probabilities": _rounded(project.labels, p),
            "model_version": str(champion.version),
            "display": {"image": digit_png(row)},
        }
        for (external_id, row), p in zip(pool, probabilities, strict=True)
    ]
    ingest.submit_predictions(db, SYSTEM, SLUG, items)


def _rounded(labels: list[str], probabilities: np.ndarray) -> dict[str, float]:
    return dict(zip(labels, map(float, probabilities / probabilities.sum()), strict=True))


def digit_png(pixels: np.ndarray) -> str:
    """Encode an 8x8 digit (values 0-16) as a grayscale PNG data URI, dark ink on white."""
    values = (255 - np.clip(pixels, 0, 16) * 255 / 16).astype(np.uint8).reshape(8, 8)
    raw = b"".join(b"\x00" + bytes(row) for row in values)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()
