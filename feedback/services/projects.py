"""Creating projects, seeding them, and reading what the pages show about them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from feedback.db.engine import Database
from feedback.db.models import Decision, Item, Membership, ModelVersion, Project, RetrainRun, User
from feedback.domain.errors import FieldError as F
from feedback.domain.errors import InvalidInput, NotFound
from feedback.domain.pipelines import BUILTIN_SPECS
from feedback.domain.uncertainty import Strategy
from feedback.services.seed_files import Example
from feedback.services.users import Principal

SLUG_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")
HOLDOUT_SEED = 1234


@dataclass
class ProjectSpec:
    """What an admin says when creating a project."""

    slug: str
    labels: list[str]
    input_kind: str = "text"
    features: list[str] | None = None
    name: str = ""
    threshold: float = 0.8
    strategy: str = "margin"
    audit_rate: float = 0.05
    overlap: int = 1
    retrain_min_decisions: int = 20
    retrain_interval_seconds: int | None = None
    model_spec: str = "auto"
    show_prediction: bool = False
    promotion_metric: str = "macro_f1"
    promotion_min_gain: float = 0.0
    promotion_min_holdout: int = 20
    promotion_class_tolerance: float = 0.10
    random_share: float = 0.0
    holdout_share: float = 0.25
    extra: dict[str, object] = field(default_factory=dict)


def spec_problems(spec: ProjectSpec) -> list[F]:
    """List everything wrong with a project spec (empty when it is fine)."""
    problems = []
    if not spec.slug or not set(spec.slug) <= SLUG_CHARS or len(spec.slug) > 64:
        problems.append(F("slug", "use 1-64 lowercase letters, digits, '-' or '_'"))
    if len(spec.labels) < 2 or len(set(spec.labels)) != len(spec.labels):
        problems.append(F("labels", "give at least two distinct labels"))
    if "unsure" in spec.labels:
        problems.append(F("labels", "'unsure' is reserved"))
    if spec.input_kind not in ("text", "features"):
        problems.append(F("input", "must be 'text' or 'features'"))
    if spec.input_kind == "features" and not spec.features:
        problems.append(F("features", "a features project names its feature columns"))
    if not 0.0 <= spec.threshold <= 1.0:
        problems.append(F("threshold", "must be between 0 and 1"))
    if spec.strategy not in set(Strategy):
        problems.append(F("strategy", f"must be one of {', '.join(Strategy)}"))
    if not 0.0 <= spec.audit_rate <= 1.0:
        problems.append(F("audit_rate", "must be between 0 and 1"))
    if spec.overlap < 1:
        problems.append(F("overlap", "must be at least 1"))
    if not 0.0 <= spec.random_share <= 1.0:
        problems.append(F("random_share", "must be between 0 and 1"))
    if spec.promotion_metric not in ("macro_f1", "accuracy", "log_loss"):
        problems.append(F("promotion_metric", "must be macro_f1, accuracy or log_loss"))
    if spec.model_spec not in BUILTIN_SPECS and ":" not in spec.model_spec:
        problems.append(F("model_spec", "a built-in name or 'package.module:function'"))
    return problems


def create_project(db: Database, spec: ProjectSpec, seed: Sequence[Example] = ()) -> int:
    """Create a project and store its seed examples as decided items (a slice held out)."""
    problems = spec_problems(spec) + _seed_problems(spec, seed)
    if problems:
        raise InvalidInput("the project is not valid", problems)
    values = {k: v for k, v in asdict(spec).items() if k not in ("holdout_share", "extra")}
    with db.transaction() as session:
        if session.scalar(select(Project.id).where(Project.slug == spec.slug)) is not None:
            raise InvalidInput("the project is not valid", [F("slug", "is taken")])
        project = Project(**{**values, "name": spec.name or spec.slug})
        session.add(project)
        session.flush()
        _store_seed(session, project, seed, spec.holdout_share)
        return project.id


def _seed_problems(spec: ProjectSpec, seed: Sequence[Example]) -> list[F]:
    labels = set(spec.labels)
    return [
        F("label", f"'{example.label}' is not one of the project's labels", index)
        for index, example in enumerate(seed)
        if example.label not in labels
    ][:50]


def _store_seed(session: Session, project: Project, seed: Sequence[Example], share: float) -> None:
    """Insert seed items and their decisions; a fixed random slice becomes holdout."""
    rng = random.Random(HOLDOUT_SEED)
    rows = [
        {
            "project_id": project.id,
            "external_id": f"seed-{index}",
            "input": example.input,
            "route": "seed",
            "status": "decided",
            "is_holdout": rng.random() < share,
            "uncertainty": 0.0,
            "priority": 0.0,
            "fence": 0,
        }
        for index, example in enumerate(seed)
    ]
    if not rows:
        return
    ids = session.scalars(insert(Item).returning(Item.id, sort_by_parameter_order=True), rows).all()
    session.execute(
        insert(Decision),
        [
            {"item_id": item_id, "project_id": project.id, "label": example.label, "source": "seed"}
            for item_id, example in zip(ids, seed, strict=True)
        ],
    )


def add_member(db: Database, slug: str, email: str) -> None:
    """Give a user access to a project."""
    with db.transaction() as session:
        project_id = session.scalar(select(Project.id).where(Project.slug == slug))
        user_id = session.scalar(select(User.id).where(User.email == email.strip().lower()))
        if project_id is None or user_id is None:
            raise NotFound("no such project or user")
        if session.get(Membership, (user_id, project_id)) is None:
            session.add(Membership(user_id=user_id, project_id=project_id))


def visible_project(session: Session, principal: Principal, slug: str) -> Project:
    """Return the project if this caller may see it; otherwise NotFound (no existence leak)."""
    project = session.scalar(select(Project).where(Project.slug == slug))
    if project is None or not _may_see(session, principal, project.id):
        raise NotFound(f"no project '{slug}'")
    return project


def _may_see(session: Session, principal: Principal, project_id: int) -> bool:
    return principal.may_see(
        project_id, lambda: session.get(Membership, (principal.user_id, project_id)) is not None
    )


@dataclass(frozen=True)
class ProjectSummary:
    slug: str
    name: str
    queued: int
    oldest: datetime | None
    decided: int
    champion_version: int | None


def list_projects(db: Database, principal: Principal) -> list[ProjectSummary]:
    """Projects this user may see, with queue depth and the age of the oldest queued item."""
    with db.read() as session:
        query = select(Project).order_by(Project.slug)
        if not principal.is_admin:
            query = query.join(Membership).where(Membership.user_id == principal.user_id)
        return [_summary(session, project) for project in session.scalars(query)]


def _summary(session: Session, project: Project) -> ProjectSummary:
    queued, oldest = session.execute(
        select(func.count(Item.id), func.min(Item.created_at)).where(
            Item.project_id == project.id, Item.status == "queued"
        )
    ).one()
    decided = session.scalar(
        select(func.count(Decision.id)).where(Decision.project_id == project.id)
    )
    version = session.scalar(
        select(ModelVersion.version).where(ModelVersion.id == project.champion_id)
    )
    return ProjectSummary(project.slug, project.name, queued, oldest, decided or 0, version)


@dataclass(frozen=True)
class ProjectDetail:
    project: Project
    summary: ProjectSummary
    versions: list[ModelVersion]
    runs: list[RetrainRun]


def project_detail(db: Database, principal: Principal, slug: str) -> ProjectDetail:
    """Everything the project page shows: queue, model versions with metrics, recent runs."""
    with db.read() as session:
        project = visible_project(session, principal, slug)
        versions = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.project_id == project.id)
            .order_by(ModelVersion.version.desc())
        ).all()
        runs = session.scalars(
            select(RetrainRun)
            .where(RetrainRun.project_id == project.id)
            .order_by(RetrainRun.id.desc())
            .limit(20)
        ).all()
        return ProjectDetail(project, _summary(session, project), list(versions), list(runs))
