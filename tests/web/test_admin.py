"""Admin pages: only admins get in; users, membership, tokens, leases, labelers, gold answers."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from feedback.db.engine import Database
from feedback.db.models import AuditEvent, Item, User
from feedback.services import ingest, projects, queue, users
from tests.conftest import PASSWORD, People, login

PAGES = [
    "/admin/",
    "/admin/users",
    "/admin/tokens",
    "/admin/projects/demo/leases",
    "/admin/projects/demo/labelers",
]
pytestmark = pytest.mark.usefixtures("backend")


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match, "the page has no CSRF token"
    return match.group(1)


def as_admin(client: FlaskClient) -> str:
    login(client, "admin@test.io")
    return csrf_of(client.get("/admin/").get_data(as_text=True))


def queue_one(db: Database, text: str = "first") -> int:
    caller = users.Principal(user_id=None, role="admin")
    [result] = ingest.submit_predictions(
        db,
        caller,
        "demo",
        [{"external_id": text, "input": {"text": text}, "probabilities": {"neg": 0.5, "pos": 0.5}}],
    )
    return result.id


@pytest.mark.parametrize("role", ["labeler", "reviewer"])
def test_only_admins_see_admin_pages(
    client: FlaskClient, db: Database, project: str, role: str
) -> None:
    assert client.get("/admin/users").status_code == 302  # anonymous: to the login page
    users.create_user(db, f"{role}2@test.io", PASSWORD, role)
    projects.add_member(db, "demo", f"{role}2@test.io")
    login(client, f"{role}2@test.io")
    token = csrf_of(client.get("/projects/demo/label").get_data(as_text=True))
    for page in PAGES:
        assert client.get(page).status_code == 403, page
    assert (
        client.post(
            "/admin/users",
            data={"csrf_token": token, "email": "x@test.io", "password": PASSWORD, "role": "admin"},
        ).status_code
        == 403
    )
    assert client.post("/admin/tokens/1/revoke", data={"csrf_token": token}).status_code == 403
    assert "/admin/" not in client.get("/").get_data(as_text=True)


def test_admin_pages_render_for_admins(client: FlaskClient, project: str, people: People) -> None:
    as_admin(client)
    for page in PAGES:
        assert client.get(page).status_code == 200, page


def test_create_user_shows_the_form_again_with_every_bad_field(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    token = as_admin(client)
    bad = client.post(
        "/admin/users",
        data={"csrf_token": token, "email": "<b>nope</b>", "password": "short", "role": "boss"},
    )
    page = bad.get_data(as_text=True)
    assert bad.status_code == 422
    assert "email:" in page
    assert "password:" in page
    assert "role:" in page
    assert 'value="&lt;b&gt;nope&lt;/b&gt;"' in page  # the form again, escaped
    assert (
        client.post(
            "/admin/users", data={"email": "a@test.io", "password": PASSWORD, "role": "reviewer"}
        ).status_code
        == 400
    )
    good = client.post(
        "/admin/users",
        data={
            "csrf_token": token,
            "email": "New@Test.io",
            "password": PASSWORD,
            "role": "reviewer",
        },
        follow_redirects=True,
    )
    assert good.status_code == 200
    assert "new@test.io" in good.get_data(as_text=True)
    with db.read() as session:
        assert (
            session.scalars(select(User.role).where(User.email == "new@test.io")).one()
            == "reviewer"
        )
        assert session.scalar(select(User.id).where(User.email == "<b>nope</b>")) is None


def test_membership_is_added_and_removed(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    token = as_admin(client)
    url = f"/admin/users/{people.other.user_id}/memberships"
    client.post(url, data={"csrf_token": token, "project": "demo", "action": "add"})
    other = client.application.test_client()
    login(other, "other@test.io")
    assert other.get("/projects/demo/label").status_code == 200
    client.post(url, data={"csrf_token": token, "project": "demo", "action": "remove"})
    assert other.get("/projects/demo/label").status_code == 404
    with db.read() as session:
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == ["member_added", "member_removed"]


def test_a_token_is_shown_once_works_and_is_revoked(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    token = as_admin(client)
    created = client.post(
        "/admin/tokens",
        data={"csrf_token": token, "name": "svc", "kind": "project", "scope": "demo"},
    )
    secret = re.search(r'<code id="new-token">(fb_[^<]+)</code>', created.get_data(as_text=True))
    assert created.status_code == 200
    assert secret is not None
    listing = client.get("/admin/tokens").get_data(as_text=True)
    assert secret.group(1) not in listing
    assert "project demo" in listing
    api = client.application.test_client()
    bearer = {"Authorization": f"Bearer {secret.group(1)}"}
    assert api.get("/api/v1/projects/demo/model", headers=bearer).status_code != 401
    token_id = re.search(r'id="token-(\d+)"', listing)
    assert token_id is not None
    client.post(f"/admin/tokens/{token_id.group(1)}/revoke", data={"csrf_token": token})
    assert api.get("/api/v1/projects/demo/model", headers=bearer).status_code == 401
    bad = client.post(
        "/admin/tokens", data={"csrf_token": token, "name": "x", "kind": "project", "scope": "nope"}
    )
    long_name = client.post(
        "/admin/tokens",
        data={"csrf_token": token, "name": "n" * 101, "kind": "project", "scope": "demo"},
    )
    assert long_name.status_code == 422
    assert "name: give 1-100 characters" in long_name.get_data(as_text=True)
    assert bad.status_code == 404
    assert "no such project" in bad.get_data(as_text=True)


def test_admin_force_releases_a_lease(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    item_id = queue_one(db)
    claim = queue.claim_next(db, people.labeler, project, 300)
    assert claim is not None
    token = as_admin(client)
    page = client.get("/admin/projects/demo/leases").get_data(as_text=True)
    lease = re.search(r'id="lease-(\d+)"', page)
    assert lease is not None
    assert "labeler@test.io" in page
    response = client.post(
        f"/admin/projects/demo/leases/{lease.group(1)}/release",
        data={"csrf_token": token},
        follow_redirects=True,
    )
    assert "No leases in flight." in response.get_data(as_text=True)
    assert (
        client.post(
            "/admin/projects/demo/leases/99999/release", data={"csrf_token": token}
        ).status_code
        == 404
    )
    labeler = client.application.test_client()
    login(labeler)
    page = labeler.get("/projects/demo/label").get_data(as_text=True)
    assert f'data-item-id="{item_id}"' not in page  # the lease is gone; the page offers a new start


def test_labelers_page_and_gold_answers(
    client: FlaskClient, db: Database, project: str, people: People
) -> None:
    item_id = queue_one(db)
    claim = queue.claim_next(db, people.labeler, project, 300)
    assert claim is not None
    queue.cast_vote(db, people.labeler, item_id, "pos", claim.fence, 4.0)
    token = as_admin(client)
    page = client.get("/admin/projects/demo/labelers").get_data(as_text=True)
    assert "labeler@test.io" in page
    assert "<td>4.0</td>" in page
    history = client.get(f"/projects/demo/items/{item_id}").get_data(as_text=True)
    assert "Gold answer" in history
    client.post(
        f"/admin/projects/demo/items/{item_id}/gold", data={"csrf_token": token, "label": "neg"}
    )
    page = client.get("/admin/projects/demo/labelers").get_data(as_text=True)
    assert "0% (0/1)" in page
    with db.read() as session:
        assert session.scalar(select(Item.gold_label).where(Item.id == item_id)) == "neg"
    labeler = client.application.test_client()
    login(labeler)
    label_page = labeler.get("/projects/demo/label").get_data(as_text=True)
    assert (
        labeler.post(
            f"/admin/projects/demo/items/{item_id}/gold",
            data={"csrf_token": csrf_of(label_page), "label": "pos"},
        ).status_code
        == 403
    )
