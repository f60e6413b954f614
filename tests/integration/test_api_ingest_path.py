"""The single-item ingest path: who may post, duplicates, rules that change, and its cost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, select, update

from feedback.db.engine import Database, make_engine
from feedback.db.models import ApiToken, Item, Project, User, naive_utcnow
from feedback.services import users
from tests.conftest import People

pytestmark = pytest.mark.usefixtures("backend")
PREDICTIONS = "/api/v1/projects/demo/predictions"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def item(external_id: str, pos: float = 0.5) -> dict[str, object]:
    return {
        "external_id": external_id,
        "input": {"text": f"text {external_id}"},
        "probabilities": {"neg": round(1 - pos, 6), "pos": pos},
    }


def post(client: FlaskClient, token: str, *items: dict[str, object]) -> Any:
    return client.post(PREDICTIONS, json={"items": list(items)}, headers=bearer(token))


def stored(db: Database) -> dict[str, tuple[str, float]]:
    with db.read() as session:
        rows = session.execute(
            select(Item.external_id, Item.route, Item.uncertainty).where(Item.route != "seed")
        )
        return {row.external_id: (row.route, row.uncertainty) for row in rows}


def test_personal_tokens_post_where_their_user_may_see(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    member = users.create_token(db, "m", None, "labeler@test.io")
    outsider = users.create_token(db, "o", None, "other@test.io")
    admin = users.create_token(db, "a", None, "admin@test.io")
    assert post(client, member, item("m")).status_code == 200
    assert post(client, admin, item("a")).status_code == 200
    refused = post(client, outsider, item("o"))
    assert refused.status_code == 404  # not 403: a project one may not see does not exist
    assert refused.get_json()["error"]["code"] == "not_found"
    assert set(stored(db)) == {"m", "a"}


def test_revocation_and_deactivation_take_effect_at_the_next_request(
    client: FlaskClient, db: Database, project: str, service_token: str, people: People
) -> None:
    personal = users.create_token(db, "p", None, "labeler@test.io")
    assert post(client, service_token, item("1")).status_code == 200
    assert post(client, personal, item("2")).status_code == 200
    with db.transaction() as session:
        revoke = update(ApiToken).where(ApiToken.project_id.is_not(None))
        session.execute(revoke.values(revoked_at=naive_utcnow()))
        session.execute(update(User).where(User.email == "labeler@test.io").values(is_active=False))
    for token, external_id in ((service_token, "3"), (personal, "4")):
        response = post(client, token, item(external_id))
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
    assert set(stored(db)) == {"1", "2"}


@pytest.mark.parametrize("max_queue", [None, 100])
def test_known_ids_are_reported_as_stored_and_only_new_ones_are_added(
    client: FlaskClient, db: Database, service_token: str, max_queue: int | None
) -> None:
    with db.transaction() as session:
        session.execute(update(Project).values(max_queue=max_queue))
    first = post(client, service_token, item("a", 0.5)).get_json()["items"][0]
    answer = post(client, service_token, item("a", 0.99), item("b", 0.99), item("b", 0.5))
    assert answer.status_code == 200
    a, b, b_again = answer.get_json()["items"]
    assert (a["id"], a["route"], a["duplicate"]) == (first["id"], "review", True)
    assert (b["route"], b["duplicate"]) == ("auto", False)
    assert (b_again["id"], b_again["route"], b_again["duplicate"]) == (b["id"], "auto", True)
    assert stored(db) == {"a": ("review", first["uncertainty"]), "b": ("auto", b["uncertainty"])}


@pytest.fixture
def labels_change_after_the_check(db: Database, settings: Any) -> Iterator[None]:
    """Relabel the project (from another connection) once ingest has read its rules."""
    other = make_engine(settings.database_url)
    done: list[bool] = []

    def relabel(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not done and statement.startswith("SELECT projects.id, projects.labels"):
            done.append(True)
            with other.begin() as writer:
                writer.execute(update(Project).values(labels=["bad", "good"]))

    event.listen(db.engine, "after_cursor_execute", relabel)
    yield
    event.remove(db.engine, "after_cursor_execute", relabel)
    other.dispose()


# SQLite only: PostgreSQL reads the rules and validates inside the write transaction.
@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.usefixtures("labels_change_after_the_check")
def test_sqlite_checks_a_batch_again_when_the_labels_change_before_the_write_lock(
    client: FlaskClient, db: Database, service_token: str, backend: str
) -> None:
    response = post(client, service_token, item("a"))
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["field"] == "probabilities"
    assert stored(db) == {}


def test_a_single_item_ingest_checks_the_token_and_writes_in_one_transaction(
    client: FlaskClient, db: Database, service_token: str, backend: str
) -> None:
    post(client, service_token, item("warm"))  # the pool holds its connections by now
    seen: Counter[str] = Counter()
    listeners = {
        (db.engine.pool, "checkout"): lambda *_: seen.update(["checkout"]),
        (db.engine, "commit"): lambda *_: seen.update(["commit"]),
    }
    for (target, name), listener in listeners.items():
        event.listen(target, name, listener)
    try:
        assert post(client, service_token, item("one")).status_code == 200
    finally:
        for (target, name), listener in listeners.items():
            event.remove(target, name, listener)
    # token; write (PostgreSQL validates inside it) or, on SQLite, a read before the write lock
    assert seen == {"checkout": 2 if backend == "postgresql" else 3, "commit": 1}
    assert set(stored(db)) == {"warm", "one"}
