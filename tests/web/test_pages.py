"""The pages: login, project list, labeling by form posts, authorization, escaping, CSP."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from sqlalchemy import select

from feedback.config import Settings
from feedback.db.engine import Database
from feedback.db.models import RetrainRun, UserSession, Vote
from feedback.services import ingest, projects, retrain, users
from tests.conftest import PASSWORD, People, login


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no CSRF token"
    return match.group(1)


def queue_items(db: Database, texts: list[str]) -> None:
    caller = users.Principal(user_id=None, role="admin")
    ingest.submit_predictions(
        db,
        caller,
        "demo",
        [
            {
                "external_id": f"x{i}",
                "input": {"text": t},
                "probabilities": {"neg": 0.5, "pos": 0.5},
            }
            for i, t in enumerate(texts)
        ],
    )


def test_anonymous_visitors_go_to_login(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_wrong_password_and_unknown_user_get_the_same_message(
    client: FlaskClient, people: People
) -> None:
    token = csrf_of(client.get("/login").get_data(as_text=True))
    wrong = client.post(
        "/login", data={"email": "labeler@test.io", "password": "nope-nope", "csrf_token": token}
    )
    unknown = client.post(
        "/login", data={"email": "ghost@test.io", "password": "nope-nope", "csrf_token": token}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert "unknown email or wrong password" in wrong.get_data(as_text=True)
    assert "unknown email or wrong password" in unknown.get_data(as_text=True)


def test_login_form_needs_csrf(client: FlaskClient, people: People) -> None:
    response = client.post("/login", data={"email": "labeler@test.io", "password": PASSWORD})
    assert response.status_code == 400


def test_repeated_failures_are_rate_limited(client: FlaskClient, people: People) -> None:
    token = csrf_of(client.get("/login").get_data(as_text=True))
    for _ in range(10):
        client.post(
            "/login",
            data={"email": "labeler@test.io", "password": "bad-password", "csrf_token": token},
        )
    blocked = client.post(
        "/login", data={"email": "labeler@test.io", "password": PASSWORD, "csrf_token": token}
    )
    assert blocked.status_code == 401
    assert "too many failed logins" in blocked.get_data(as_text=True)


def test_login_rotates_the_session_and_logout_ends_it(
    client: FlaskClient, db: Database, people: People
) -> None:
    login(client)
    login(client)
    with db.read() as session:
        assert len(session.scalars(select(UserSession)).all()) == 1  # the first session was ended
    page = client.get("/").get_data(as_text=True)
    client.post("/logout", data={"csrf_token": csrf_of(page)})
    with db.read() as session:
        assert session.scalars(select(UserSession)).all() == []
    assert client.get("/").status_code == 302


def test_labeler_sees_only_member_projects(client: FlaskClient, db: Database, project: str) -> None:
    projects.create_project(db, projects.ProjectSpec(slug="secret", labels=["a", "b"]))
    login(client)
    listing = client.get("/").get_data(as_text=True)
    assert "/projects/demo" in listing
    assert "/projects/secret" not in listing
    assert client.get("/projects/secret").status_code == 404
    assert client.get("/projects/secret/label").status_code == 404


def test_label_by_form_posts(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    queue_items(db, ["first", "second"])
    login(client)
    page = client.get("/projects/demo/label").get_data(as_text=True)
    assert "Start labeling" in page
    page = client.post(
        "/projects/demo/label/claim", data={"csrf_token": csrf_of(page)}, follow_redirects=True
    ).get_data(as_text=True)
    action = re.search(r'action="(/projects/demo/items/\d+/vote)"', page)
    assert action is not None
    fence = re.search(r'name="fence" value="(\d+)"', page)
    assert fence is not None
    response = client.post(
        action.group(1),
        data={"csrf_token": csrf_of(page), "label": "pos", "fence": fence.group(1), "seconds": "3"},
        follow_redirects=True,
    )
    assert 'data-key="1"' in response.get_data(as_text=True)  # the next item is shown
    with db.read() as session:
        votes = session.scalars(select(Vote)).all()
    assert [(v.answer, v.seconds) for v in votes] == [("pos", 3.0)]


def test_item_text_is_escaped_and_csp_is_strict(
    client: FlaskClient, db: Database, project: str
) -> None:
    queue_items(db, ["<img src=x onerror=alert(1)>"])
    login(client)
    page = client.get("/projects/demo/label").get_data(as_text=True)
    response = client.post(
        "/projects/demo/label/claim", data={"csrf_token": csrf_of(page)}, follow_redirects=True
    )
    html = response.get_data(as_text=True)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img src=x" not in html
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in html
    assert "onclick" not in html


def test_only_admins_request_retrains_from_the_page(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    login(client)
    page = client.get("/projects/demo").get_data(as_text=True)
    assert "Retrain now" not in page
    assert (
        client.post("/projects/demo/retrain", data={"csrf_token": csrf_of(page)}).status_code == 403
    )
    admin = client.application.test_client()
    login(admin, "admin@test.io")
    page = admin.get("/projects/demo").get_data(as_text=True)
    assert (
        admin.post("/projects/demo/retrain", data={"csrf_token": csrf_of(page)}).status_code == 302
    )
    with db.read() as session:
        assert session.scalars(select(RetrainRun.status)).all() == ["requested"]


def test_login_never_redirects_off_site(client: FlaskClient, people: People) -> None:
    for sneaky in (
        "//evil.test/x",
        "/%09/evil.test/x",
        "/\t/evil.test/x",
        "/\\evil.test",
        "https://evil.test/",
    ):
        token = csrf_of(client.get("/login").get_data(as_text=True))
        response = client.post(
            "/login",
            query_string={"next": sneaky},
            data={"email": "labeler@test.io", "password": PASSWORD, "csrf_token": token},
        )
        assert response.status_code == 302
        location = response.headers["Location"]
        as_browser_reads_it = location.replace("\t", "").replace("\\", "/")
        assert as_browser_reads_it.startswith("/"), sneaky
        assert not as_browser_reads_it.startswith("//"), sneaky
    token = csrf_of(client.get("/login").get_data(as_text=True))
    fine = client.post(
        "/login?next=/projects/demo",
        data={"email": "labeler@test.io", "password": PASSWORD, "csrf_token": token},
    )
    assert fine.headers["Location"].endswith("/projects/demo")


def test_the_project_page_draws_the_learning_curve(
    client: FlaskClient, db: Database, project: str, people: People, settings: Settings
) -> None:
    login(client)
    assert "No model yet: the curve appears" in client.get("/projects/demo").get_data(as_text=True)
    for _ in range(2):
        retrain.execute_retrain(db, settings, retrain.request_retrain(db, people.admin, "demo"))
    response = client.get("/projects/demo")
    page = response.get_data(as_text=True)
    assert '<svg viewBox="0 0 640 240" role="img"' in page
    assert page.count("<circle class=") == 2
    assert re.search(r"<title>v1: macro_f1 \d\.\d{3} on \d+ examples \(promoted\)</title>", page)
    assert " style=" not in page
    assert "<script>" not in page
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
