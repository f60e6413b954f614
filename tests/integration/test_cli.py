"""The `feedback` CLI against a real database: users, projects with seed files, tokens, retrain."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, inspect, select

from feedback.cli import main
from feedback.config import Settings
from feedback.db.engine import Database
from feedback.db.models import ApiToken, Decision, Item, Project, RetrainRun, User
from feedback.services import retrain, users

pytestmark = pytest.mark.usefixtures("backend")


def invoke(settings: Settings, *args: str) -> tuple[int, str]:
    env = {
        "FEEDBACK_DATABASE_URL": settings.database_url,
        "FEEDBACK_INSTANCE_PATH": str(settings.instance_path),
    }
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_users_projects_and_tokens(settings: Settings, db: Database, tmp_path: Path) -> None:
    seed = tmp_path / "seed.csv"
    seed.write_text(
        "text,label\n" + "".join(f"good thing {i},pos\nbad thing {i},neg\n" for i in range(20))
    )
    assert (
        invoke(
            settings,
            "users",
            "create",
            "Boss@Example.com",
            "--role",
            "admin",
            "--password",
            "longpassword",
        )[0]
        == 0
    )
    code, out = invoke(
        settings, "projects", "create", "reviews", "--labels", "neg,pos", "--seed-data", str(seed)
    )
    assert code == 0
    assert "40 seed examples" in out
    code, out = invoke(settings, "tokens", "create", "--project", "reviews")
    token = out.strip()
    assert code == 0
    assert token.startswith("fb_")
    assert users.principal_for_token(db, token) is not None
    with db.read() as session:
        assert session.scalar(select(User.email)) == "boss@example.com"
        assert session.scalar(select(func.count(Decision.id))) == 40
        assert session.scalar(select(func.count(Item.id)).where(Item.is_holdout.is_(True))) > 0
        assert token not in str(session.scalars(select(ApiToken.token_hash)).all())  # stored hashed


def test_bad_input_is_a_clear_error_and_changes_nothing(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    seed = tmp_path / "seed.jsonl"
    seed.write_text(
        '{"text": "ok", "label": "pos"}\n{"text": "no label"}\n{"text": "x", "label": "maybe"}\n'
    )
    code, out = invoke(
        settings, "projects", "create", "p", "--labels", "neg,pos", "--seed-data", str(seed)
    )
    assert code != 0
    assert "row 1" in out
    code, out = invoke(settings, "projects", "create", "Bad Slug!", "--labels", "neg")
    assert code != 0
    assert "slug" in out
    assert "labels" in out
    code, out = invoke(settings, "users", "create", "x@y.z", "--password", "short")
    assert code != 0
    assert "password" in out
    with db.read() as session:
        assert session.scalar(select(func.count(Project.id))) == 0
        assert session.scalar(select(func.count(User.id))) == 0


def test_retrain_wait_reports_the_outcome(settings: Settings, db: Database, project: str) -> None:
    def worker() -> None:  # plays the Celery worker: runs the run once it is requested
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with db.read() as session:
                run_id = session.scalar(
                    select(RetrainRun.id).where(RetrainRun.status == "requested")
                )
            if run_id is not None:
                retrain.execute_retrain(db, settings, run_id)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=worker)
    thread.start()
    code, out = invoke(settings, "retrain", project, "--wait", "--timeout", "60")
    thread.join()
    assert code == 0, out
    assert "succeeded" in out


def test_project_webhook_is_set_and_cleared(settings: Settings, db: Database, project: str) -> None:
    code, out = invoke(settings, "projects", "webhook", project, "ftp://example.com/hook")
    assert code != 0
    assert "url" in out
    code, out = invoke(settings, "projects", "webhook", project, "https://hooks.example.com/x")
    assert code == 0
    secret = out.strip().rsplit(" ", 1)[-1]
    with db.read() as session:
        stored = session.scalars(select(Project)).one()
        assert (stored.webhook_url, stored.webhook_secret) == (
            "https://hooks.example.com/x",
            secret,
        )
    assert invoke(settings, "projects", "webhook", project, "--clear")[0] == 0
    with db.read() as session:
        assert session.scalars(select(Project)).one().webhook_url is None


def test_housekeeping_forgets_old_idempotency_keys(db: Database) -> None:
    from datetime import timedelta

    from feedback.db.models import IdempotencyKey, naive_utcnow
    from feedback.services import idempotency
    from workers.tasks import IDEMPOTENCY_KEEP_SECONDS

    with db.transaction() as session:
        for key, age in (("old", IDEMPOTENCY_KEEP_SECONDS + 60), ("new", 60)):
            session.add(
                IdempotencyKey(
                    scope="t",
                    key=key,
                    request_digest="d",
                    state="done",
                    created_at=naive_utcnow() - timedelta(seconds=age),
                )
            )
    assert idempotency.purge(db, IDEMPOTENCY_KEEP_SECONDS) == 1
    with db.read() as session:
        assert session.scalars(select(IdempotencyKey.key)).all() == ["new"]


def test_db_downgrade_asks_first_then_undoes_and_upgrade_redoes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {"FEEDBACK_DATABASE_URL": url, "FEEDBACK_INSTANCE_PATH": str(tmp_path)}
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    refused = runner.invoke(main, ["db", "downgrade", "base"], env=env, input="n\n")
    assert refused.exit_code == 1
    assert "Undo migrations down to base?" in refused.output
    assert "users" in inspect(create_engine(url)).get_table_names()
    done = runner.invoke(main, ["db", "downgrade", "base", "--yes"], env=env)
    assert done.exit_code == 0, done.output
    assert "users" not in inspect(create_engine(url)).get_table_names()
    assert runner.invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    assert "users" in inspect(create_engine(url)).get_table_names()


def test_a_version_number_past_32_bits_is_a_usage_error(
    settings: Settings, db: Database, project: str
) -> None:
    env = {
        "FEEDBACK_DATABASE_URL": settings.database_url,
        "FEEDBACK_INSTANCE_PATH": str(settings.instance_path),
    }
    for args in (["rollback", "demo", str(2**31)], ["changes", "demo", "1", "--until", str(2**31)]):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 2, result.output
        assert "is not in the range" in result.output
