"""Data for the lifecycle tests: decided labels written straight to the tables, and datasets.

The decisions stand for labels the queue produced; writing them directly keeps the tests
about retraining, not labeling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import insert, select, update

from feedback.db.engine import Database
from feedback.db.models import Decision, Item, Project, naive_utcnow
from feedback.services import projects
from feedback.services.seed_files import Example
from tests.conftest import text_seed

SWAP = {"neg": "pos", "pos": "neg"}


def project_id(db: Database, slug: str) -> int:
    with db.read() as session:
        found = session.scalar(select(Project.id).where(Project.slug == slug))
    assert found is not None
    return found


def add_decisions(
    db: Database,
    slug: str,
    examples: Sequence[tuple[dict[str, Any], str]],
    holdout: bool = False,
    status: str = "decided",
    prefix: str = "added",
) -> list[int]:
    """Store decided items (input, label) in one commit; return the decision ids."""
    pid = project_id(db, slug)
    with db.transaction() as session:
        start = session.scalar(select(Item.id).order_by(Item.id.desc()).limit(1)) or 0
        rows = [
            {
                "project_id": pid,
                "external_id": f"{prefix}-{start + i}",
                "input": given,
                "route": "audit" if holdout else "review",
                "status": status,
                "is_holdout": holdout,
                "uncertainty": 0.5,
                "priority": 0.5,
                "fence": 1,
            }
            for i, (given, _) in enumerate(examples)
        ]
        ids = session.scalars(
            insert(Item).returning(Item.id, sort_by_parameter_order=True), rows
        ).all()
        if status != "decided":
            return list(ids)
        decided = session.scalars(
            insert(Decision).returning(Decision.id, sort_by_parameter_order=True),
            [
                {"item_id": item_id, "project_id": pid, "label": label, "source": "consensus"}
                for item_id, (_, label) in zip(ids, examples, strict=True)
            ],
        )
        return list(decided.all())


def fresh_texts(count: int, offset: int = 1000) -> list[tuple[dict[str, Any], str]]:
    """Texts the seed data does not contain, with their true labels."""
    return [(e.input, e.label) for e in text_seed(offset + count)[offset:]]


def correct(db: Database, decision_id: int, label: str) -> None:
    """What the correction service does to a decision: the new label replaces the old."""
    with db.transaction() as session:
        old = session.get_one(Decision, decision_id)
        session.execute(
            update(Decision)
            .where(Decision.id == decision_id)
            .values(previous_label=old.label, label=label, corrected_at=naive_utcnow())
        )


def blobs(
    count: int, seed: int, shift: float = 0.0, noise: float = 0.0
) -> list[tuple[list[float], str]]:
    """Two overlapping Gaussian classes in 4 features; `noise` flips that share of labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    centres = np.where(labels[:, None] == 1, 1.0, -1.0) * np.array([1.0, 0.6, 0.0, 0.0])
    points = centres + rng.normal(0, 1.0, (count, 4)) + np.array([shift, 0, 0, 0])
    flip = rng.random(count) < noise
    names = np.where(labels ^ flip, "pos", "neg")
    return [(p.round(5).tolist(), str(n)) for p, n in zip(points, names, strict=True)]


def features_project(
    db: Database,
    slug: str,
    seed_examples: list[tuple[list[float], str]],
    labels: Sequence[str] = ("neg", "pos"),
    **options: Any,
) -> None:
    """A features project (4 columns) whose seed data is `seed_examples`."""
    spec = projects.ProjectSpec(
        slug=slug,
        labels=list(labels),
        input_kind="features",
        features=["a", "b", "c", "d"],
        audit_rate=0.0,
        promotion_min_holdout=10,
        **options,
    )
    projects.create_project(
        db, spec, [Example({"features": f}, label) for f, label in seed_examples]
    )


def set_project(db: Database, slug: str, **values: Any) -> None:
    """Change project columns directly (settings another engineer's pages will edit)."""
    with db.transaction() as session:
        session.execute(update(Project).where(Project.slug == slug).values(**values))


def shuffled(examples: list[tuple[list[float], str]], seed: int) -> list[tuple[list[float], str]]:
    """The same inputs with their labels randomly permuted."""
    labels = [label for _, label in examples]
    np.random.default_rng(seed).shuffle(labels)
    return [(given, label) for (given, _), label in zip(examples, labels, strict=True)]


def one_sided_noise(
    examples: list[tuple[list[float], str]], share: float, seed: int
) -> list[tuple[list[float], str]]:
    """`share` of all labels made wrong, every mistake a `pos` called `neg` (a careless labeler)."""
    rng = np.random.default_rng(seed)
    positives = [i for i, (_, label) in enumerate(examples) if label == "pos"]
    wrong = set(rng.choice(positives, size=int(share * len(examples)), replace=False).tolist())
    return [(given, "neg" if i in wrong else label) for i, (given, label) in enumerate(examples)]


def as_inputs(examples: list[tuple[list[float], str]]) -> list[tuple[dict[str, Any], str]]:
    return [({"features": given}, label) for given, label in examples]


ORDER_POINTS = [-1.0, -0.5, -0.2, 0.1, 0.4, 0.7, 1.0, 1.3, 1.6, 2.0]


def order_project(db: Database, slug: str) -> None:
    """A project whose first model learns a boundary shifted right (biased first labels).

    Training seed examples with `a` in (0, 1.2) are labelled `neg` although the truth is
    mostly `pos`; the holdout keeps the truth. A later model trained on more true labels
    has its boundary near 0, is better, and orders the queue differently.
    """
    features_project(db, slug, blobs(300, seed=11), holdout_share=0.4, strategy="least_confidence")
    pid = project_id(db, slug)
    with db.transaction() as session:
        rows = session.execute(
            select(Decision.id, Item.input)
            .join(Item, Item.id == Decision.item_id)
            .where(Decision.project_id == pid, Item.is_holdout.is_(False))
        ).all()
        biased = [r.id for r in rows if 0.0 < r.input["features"][0] < 1.2]
        session.execute(update(Decision).where(Decision.id.in_(biased)).values(label="neg"))


def queue_points(db: Database, slug: str) -> None:
    """Queued items along the first feature, where the two models disagree about doubt."""
    add_decisions(
        db,
        slug,
        [({"features": [a, 0.0, 0.0, 0.0]}, "") for a in ORDER_POINTS],
        status="queued",
        prefix="queued",
    )


def queue_order(db: Database, slug: str) -> list[float]:
    """The first feature of each queued item, most useful (highest priority) first."""
    pid = project_id(db, slug)
    with db.read() as session:
        rows = (
            session.execute(
                select(Item.input)
                .where(Item.project_id == pid, Item.status == "queued")
                .order_by(Item.priority.desc(), Item.id)
            )
            .scalars()
            .all()
        )
    return [row["features"][0] for row in rows]


def queue_versions(db: Database, slug: str) -> set[str | None]:
    pid = project_id(db, slug)
    with db.read() as session:
        return set(
            session.scalars(
                select(Item.model_version).where(Item.project_id == pid, Item.status == "queued")
            )
        )


def order_by_model(model: Any, strategy: str) -> list[float]:
    """The queue order a model dictates: most uncertain first."""
    from feedback.domain import uncertainty
    from feedback.domain.evaluation import aligned_probabilities

    points = np.array([[a, 0.0, 0.0, 0.0] for a in ORDER_POINTS])
    scores = uncertainty.score(strategy, aligned_probabilities(model, points, ["neg", "pos"]))
    ranked = sorted(range(len(ORDER_POINTS)), key=lambda i: (-scores[i], i))
    return [ORDER_POINTS[i] for i in ranked]


def plain_sgd() -> Any:
    """A user factory: scaling + SGD without averaging, so one bad batch moves it a lot."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("sgd", SGDClassifier(loss="log_loss"))])
