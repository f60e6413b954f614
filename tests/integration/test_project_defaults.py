"""New projects' queue defaults (strategy, random share), from the service and the CLI."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from feedback.config import Settings
from feedback.db.engine import Database
from feedback.db.models import Project
from feedback.domain.errors import InvalidInput
from feedback.services import projects
from tests.integration.test_cli import invoke

pytestmark = pytest.mark.usefixtures("backend")


def stored(db: Database, slug: str) -> tuple[str, float]:
    with db.read() as session:
        project = session.scalars(select(Project).where(Project.slug == slug)).one()
        return project.strategy, project.random_share


def test_a_new_project_ranks_by_margin_and_serves_the_top_unless_told(
    settings: Settings, db: Database
) -> None:
    projects.create_project(db, projects.ProjectSpec(slug="plain", labels=["neg", "pos"]))
    assert stored(db, "plain") == ("margin", 0.0)
    code, out = invoke(settings, "projects", "create", "cli", "--labels", "a,b,c")
    assert code == 0, out
    assert stored(db, "cli") == ("margin", 0.0)
    code, out = invoke(
        settings,
        "projects",
        "create",
        "mixed",
        "--labels",
        "a,b",
        "--random-share",
        "0.2",
        "--strategy",
        "least_confidence",
    )
    assert code == 0, out
    assert stored(db, "mixed") == ("least_confidence", 0.2)


def test_a_random_share_outside_0_to_1_is_refused_and_creates_nothing(
    settings: Settings, db: Database
) -> None:
    spec = projects.ProjectSpec(slug="bad", labels=["neg", "pos"], random_share=1.5)
    with pytest.raises(InvalidInput) as refused:
        projects.create_project(db, spec)
    assert [f.field for f in refused.value.details] == ["random_share"]
    code, out = invoke(
        settings, "projects", "create", "bad", "--labels", "a,b", "--random-share", "-0.1"
    )
    assert code != 0
    assert "random-share" in out
    with db.read() as session:
        assert session.scalar(select(func.count(Project.id))) == 0
