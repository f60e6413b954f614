"""The labeling page driven like app.js drives it, and the reviewers' pages."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from feedback.db.engine import Database
from feedback.db.models import Decision, Item, Project, Vote
from feedback.services import ingest, projects, users
from tests.conftest import PASSWORD, People, login

FETCH = {"X-Requested-With": "fetch"}
XSS = "<img src=x onerror=alert(1)>"
pytestmark = pytest.mark.usefixtures("backend")


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match, "the page has no CSRF token"
    return match.group(1)


def queue_texts(
    db: Database, texts: list[str], display: dict[str, object] | None = None
) -> list[int]:
    caller = users.Principal(user_id=None, role="admin")
    rows = [
        {
            "external_id": f"x{i}",
            "input": {"text": t},
            "display": display,
            "probabilities": {"neg": 0.5 - i / 100, "pos": 0.5 + i / 100},
        }
        for i, t in enumerate(texts)
    ]
    return [r.id for r in ingest.submit_predictions(db, caller, "demo", rows)]


def shown(page: str) -> tuple[int, int] | None:
    """The (item id, fence) the page shows, if any."""
    match = re.search(r'id="item" class="item" data-item-id="(\d+)" data-fence="(\d+)"', page)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def start(client: FlaskClient) -> str:
    page = client.get("/projects/demo/label").get_data(as_text=True)
    return client.post(
        "/projects/demo/label/claim", data={"csrf_token": csrf_of(page)}, follow_redirects=True
    ).get_data(as_text=True)


def answer(
    client: FlaskClient, page: str, label: str, fence: int | None = None, **extra: str
) -> tuple[int, str]:
    item_id, held = shown(page) or (0, 0)
    response = client.post(
        f"/projects/demo/items/{item_id}/vote",
        headers=FETCH,
        data={
            "csrf_token": csrf_of(page),
            "label": label,
            "fence": str(held if fence is None else fence),
            "seconds": "1.5",
            **extra,
        },
    )
    return response.status_code, response.get_data(as_text=True)


def reviewer(db: Database) -> str:
    users.create_user(db, "reviewer@test.io", PASSWORD, "reviewer")
    projects.add_member(db, "demo", "reviewer@test.io")
    return "reviewer@test.io"


def test_fetch_answer_returns_the_next_item_in_the_same_response(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    first, second = queue_texts(db, ["first", "second"])
    login(client)
    page = start(client)
    assert shown(page) is not None
    assert shown(page)[0] == first
    assert "0 labeled today" in page
    assert "2 left in the queue" in page
    status, page = answer(client, page, "pos")
    assert status == 200
    assert shown(page) is not None
    assert shown(page)[0] == second
    assert "1 labeled today" in page
    assert "1 left in the queue" in page
    with db.read() as session:
        assert [(v.item_id, v.answer, v.seconds) for v in session.scalars(select(Vote))] == [
            (first, "pos", 1.5)
        ]


def test_a_retried_answer_is_not_counted_twice_and_a_stale_one_is_refused(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    _first, _second = queue_texts(db, ["first", "second"])
    login(client)
    page = start(client)
    status, after = answer(client, page, "pos")
    assert status == 200
    status, again = answer(client, page, "pos")  # the network dropped the first response
    assert status == 200
    assert shown(again) == shown(after)
    status, stale = answer(client, after, "neg", fence=999)
    assert status == 409
    assert "expired or been taken over" in stale
    assert shown(stale) == shown(after)
    status, bad = answer(client, after, "maybe")
    assert status == 422
    assert "not a label of this project" in bad
    with db.read() as session:
        assert len(session.scalars(select(Vote)).all()) == 1


def test_reload_shows_the_same_leased_item(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    queue_texts(db, ["first", "second"])
    login(client)
    held = shown(start(client))
    assert held is not None
    assert shown(client.get("/projects/demo/label").get_data(as_text=True)) == held


def test_skip_by_fetch_shows_another_item(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    first, second = queue_texts(db, ["first", "second"])
    login(client)
    page = start(client)
    response = client.post(
        f"/projects/demo/items/{first}/skip",
        headers=FETCH,
        data={"csrf_token": csrf_of(page), "fence": str(shown(page)[1])},
    )  # type: ignore[index]
    assert response.status_code == 200
    assert shown(response.get_data(as_text=True))[0] == second


def test_the_models_guess_is_hidden_unless_the_project_shows_it(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    queue_texts(db, ["first"])
    login(client)
    assert "Model's guess" not in start(client)
    with db.transaction() as session:
        session.execute(update(Project).values(show_prediction=True))
    assert "Model's guess: neg (50%)" in client.get("/projects/demo/label").get_data(as_text=True)


def test_items_show_by_input_kind_and_only_safe_images(
    client: FlaskClient, db: Database, people: People
) -> None:
    projects.create_project(
        db,
        projects.ProjectSpec(
            slug="demo",
            labels=["a", "b"],
            input_kind="features",
            features=["width", "height"],
            audit_rate=0.0,
        ),
    )
    projects.add_member(db, "demo", "labeler@test.io")
    caller = users.Principal(user_id=None, role="admin")
    png = "data:image/png;base64,iVBORw0KGgo="
    ingest.submit_predictions(
        db,
        caller,
        "demo",
        [
            {
                "external_id": "f1",
                "input": {"features": [1.5, 2.5]},
                "probabilities": {"a": 0.5, "b": 0.5},
                "display": {"image": png, "source": "<b>camera</b>"},
            },
            {
                "external_id": "f2",
                "input": {"features": [3, 4]},
                "probabilities": {"a": 0.51, "b": 0.49},
                "display": {"image": "javascript:alert(1)"},
            },
        ],
    )
    login(client)
    page = start(client)
    assert '<th scope="row">width</th><td>1.5</td>' in page
    assert f'src="{png}"' in page
    assert "&lt;b&gt;camera&lt;/b&gt;" in page
    _, page = answer(client, page, "a")
    assert '<th scope="row">height</th><td>4.0</td>' in page
    assert "javascript:" not in page


def test_reviewer_decides_an_escalated_item_from_the_queue_page(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    [item_id] = queue_texts(db, [XSS])
    login(client)
    status, _ = answer(client, start(client), "unsure")
    assert status == 200
    assert client.get("/projects/demo/escalations").status_code == 403  # a labeler
    boss = client.application.test_client()
    login(boss, reviewer(db))
    page = boss.get("/projects/demo/escalations").get_data(as_text=True)
    assert f'id="escalated-{item_id}"' in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<img src=x" not in page
    assert (
        boss.post(f"/projects/demo/items/{item_id}/decide", data={"label": "pos"}).status_code
        == 400
    )  # no CSRF
    bad = boss.post(
        f"/projects/demo/items/{item_id}/decide", data={"label": "meh", "csrf_token": csrf_of(page)}
    )
    assert bad.status_code == 422
    assert "must be one of neg, pos" in bad.get_data(as_text=True)
    done = boss.post(
        f"/projects/demo/items/{item_id}/decide",
        data={"label": "pos", "csrf_token": csrf_of(page)},
        follow_redirects=True,
    )
    assert "Nothing is escalated." in done.get_data(as_text=True)
    with db.read() as session:
        decision = session.scalars(select(Decision).where(Decision.item_id == item_id)).one()
        assert (decision.label, decision.source) == ("pos", "review")


def test_history_shows_who_answered_and_a_reviewer_corrects(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    [item_id] = queue_texts(db, ["first"])
    login(client)
    answer(client, start(client), "pos")
    assert client.get(f"/projects/demo/items/{item_id}").status_code == 403
    boss = client.application.test_client()
    login(boss, reviewer(db))
    page = boss.get(f"/projects/demo/items/{item_id}").get_data(as_text=True)
    assert "labeler@test.io" in page
    assert "answered pos" in page
    assert 'id="decision">pos<' in page
    assert "Gold answer" not in page  # admins only
    response = boss.post(
        f"/projects/demo/items/{item_id}/correct",
        data={"label": "neg", "csrf_token": csrf_of(page)},
        follow_redirects=True,
    )
    page = response.get_data(as_text=True)
    assert 'id="decision">neg<' in page
    assert "corrected from pos" in page
    assert "decision corrected pos →" in page
    with db.read() as session:
        assert session.scalar(select(Decision.label).where(Decision.item_id == item_id)) == "neg"
    assert boss.get("/projects/demo/items/99999").status_code == 404


def test_session_heartbeat_needs_the_csrf_header(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    queue_texts(db, ["first"])
    login(client)
    page = start(client)
    item_id, fence = shown(page)  # type: ignore[misc]
    url = f"/api/v1/items/{item_id}/lease"
    assert client.post(url, json={"fence": fence}).status_code == 400
    response = client.post(url, json={"fence": fence}, headers={"X-CSRFToken": csrf_of(page)})
    assert response.status_code == 200
    assert response.get_json()["fence"] == fence
    with db.read() as session:
        assert session.scalar(select(Item.status).where(Item.id == item_id)) == "queued"
