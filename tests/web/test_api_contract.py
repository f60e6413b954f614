"""The model-service contract beyond the basics: queue limits, idempotency keys, labels export."""

from __future__ import annotations

import csv
import io
import json

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from feedback.db.engine import Database
from feedback.db.models import IdempotencyKey, Item, Project
from feedback.services import deferred, idempotency, ingest, projects, queue, users
from feedback.services.seed_files import Example
from tests.conftest import People

pytestmark = pytest.mark.usefixtures("backend")
PREDICTIONS = "/api/v1/projects/demo/predictions"


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def item(external_id: str, pos: float = 0.5) -> dict[str, object]:
    return {
        "external_id": external_id,
        "input": {"text": f"text {external_id}"},
        "probabilities": {"neg": round(1 - pos, 6), "pos": pos},
    }


def count(db: Database, model: type, *where: object) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def new_items(db: Database) -> int:
    return count(db, Item, Item.route != "seed")


def limit_queue(db: Database, max_queue: int, policy: str) -> None:
    with db.transaction() as session:
        session.execute(
            update(Project)
            .where(Project.slug == "demo")
            .values(max_queue=max_queue, queue_full=policy)
        )


# ---- max_queue and the queue_full policy -------------------------------------------------


def test_full_queue_rejects_with_429_and_retry_after_storing_nothing(
    client: FlaskClient, db: Database, service_token: str
) -> None:
    limit_queue(db, 2, "reject")
    first = client.post(
        PREDICTIONS, json={"items": [item("a"), item("b")]}, headers=bearer(service_token)
    )
    assert first.status_code == 200
    assert first.get_json()["queue_full"] == "reject"
    full = client.post(
        PREDICTIONS, json={"items": [item("c"), item("d", 0.99)]}, headers=bearer(service_token)
    )
    assert full.status_code == 429
    assert int(full.headers["Retry-After"]) > 0
    error = full.get_json()["error"]
    assert (error["code"], error["queue_full"], error["retry_after"]) == (
        "queue_full",
        "reject",
        int(full.headers["Retry-After"]),
    )
    assert new_items(db) == 2  # the confident item of the rejected batch was not stored either
    confident = client.post(
        PREDICTIONS, json={"items": [item("e", 0.99)]}, headers=bearer(service_token)
    )
    assert confident.status_code == 200
    assert confident.get_json()["items"][0]["route"] == "auto"


def test_full_queue_defers_the_least_uncertain_review_items_as_auto(
    client: FlaskClient, db: Database, service_token: str
) -> None:
    limit_queue(db, 3, "defer")
    client.post(PREDICTIONS, json={"items": [item("a")]}, headers=bearer(service_token))
    batch = [item("mild", 0.7), item("coin", 0.5), item("lean", 0.6), item("sure", 0.99)]
    response = client.post(PREDICTIONS, json={"items": batch}, headers=bearer(service_token))
    assert response.status_code == 200
    body = response.get_json()
    assert (body["queue_full"], body["deferred"]) == ("defer", 1)
    outcome = {i["external_id"]: (i["route"], i["status"], i["deferred"]) for i in body["items"]}
    assert outcome == {
        "coin": ("review", "queued", False),
        "lean": ("review", "queued", False),
        "mild": ("auto", "auto", True),  # the least uncertain of the three review items
        "sure": ("auto", "auto", False),
    }
    assert count(db, Item, Item.status == "queued") == 3
    again = client.post(
        PREDICTIONS, json={"items": [item("mild", 0.7)]}, headers=bearer(service_token)
    ).get_json()
    assert again["items"][0]["duplicate"] is True
    assert again["items"][0]["deferred"] is True


def test_deferred_items_go_back_into_the_queue_most_uncertain_first_when_room_frees(
    client: FlaskClient, db: Database, service_token: str, people: People
) -> None:
    limit_queue(db, 2, "defer")
    batch = [item("coin", 0.5), item("lean", 0.6), item("mild", 0.7), item("faint", 0.75)]
    body = client.post(PREDICTIONS, json={"items": batch}, headers=bearer(service_token))
    assert body.get_json()["deferred"] == 2
    assert deferred.requeue_deferred(db) == 0  # no room yet: nothing moves
    claim = queue.claim_next(db, people.labeler, "demo", 60)
    assert claim is not None
    queue.cast_vote(db, people.labeler, claim.item_id, "pos", claim.fence, 1.0)
    assert deferred.requeue_deferred(db) == 1  # one decided, one back: the more uncertain
    with db.read() as session:
        states = dict(session.execute(select(Item.external_id, Item.status)).all())
    assert states["mild"] == "queued"
    assert states["faint"] == "auto"
    assert count(db, Item, Item.status == "queued") == 2
    limit_queue(db, 10, "defer")  # the beat's tick runs this every interval
    assert deferred.requeue_deferred(db) == 1
    assert deferred.requeue_deferred(db) == 0
    assert count(db, Item, Item.status == "queued") == 3


def test_audit_items_are_not_capped(client: FlaskClient, db: Database, service_token: str) -> None:
    with db.transaction() as session:
        session.execute(update(Project).where(Project.slug == "demo").values(audit_rate=1.0))
    limit_queue(db, 0, "reject")
    response = client.post(
        PREDICTIONS, json={"items": [item("sure", 0.99)]}, headers=bearer(service_token)
    )
    assert response.status_code == 200
    assert response.get_json()["items"][0]["route"] == "audit"
    assert (
        client.post(
            PREDICTIONS, json={"items": [item("unsure")]}, headers=bearer(service_token)
        ).status_code
        == 429
    )


# ---- Idempotency-Key ---------------------------------------------------------------------


def test_same_key_and_body_replays_the_first_answer(
    client: FlaskClient, db: Database, service_token: str
) -> None:
    headers = bearer(service_token, **{"Idempotency-Key": "batch-1"})
    first = client.post(PREDICTIONS, json={"items": [item("a"), item("b", 0.99)]}, headers=headers)
    client.post(PREDICTIONS, json={"items": [item("other")]}, headers=bearer(service_token))
    replay = client.post(PREDICTIONS, json={"items": [item("a"), item("b", 0.99)]}, headers=headers)
    assert first.status_code == replay.status_code == 200
    assert replay.data == first.data  # byte for byte: not re-run, so no "duplicate": true
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert count(db, IdempotencyKey) == 1
    assert new_items(db) == 3


def test_same_key_with_another_body_is_422_naming_the_key(
    client: FlaskClient, db: Database, service_token: str
) -> None:
    headers = bearer(service_token, **{"Idempotency-Key": "batch-1"})
    assert client.post(PREDICTIONS, json={"items": [item("a")]}, headers=headers).status_code == 200
    other = client.post(PREDICTIONS, json={"items": [item("b")]}, headers=headers)
    assert other.status_code == 422
    assert other.get_json()["error"]["details"][0]["field"] == "Idempotency-Key"
    elsewhere = client.post(
        "/api/v1/projects/demo/predict", json={"items": [item("a")]}, headers=headers
    )
    assert elsewhere.status_code == 422  # the key names one request: method, path and body
    assert new_items(db) == 1


def test_key_in_flight_is_409_with_retry_after(
    client: FlaskClient, db: Database, service_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.2)
    body = {"items": [item("a")]}
    scope = client.post(
        PREDICTIONS, json=body, headers=bearer(service_token, **{"Idempotency-Key": "probe"})
    )
    assert scope.status_code == 200
    with db.read() as session:
        row = session.scalars(select(IdempotencyKey)).one()
    held = idempotency.Keyed(
        row.scope, "held", idempotency.request_digest("POST", PREDICTIONS, body)
    )
    claim = idempotency.claim(db, held)
    assert isinstance(claim, idempotency.Claim)
    response = client.post(
        PREDICTIONS, json=body, headers=bearer(service_token, **{"Idempotency-Key": "held"})
    )
    assert response.status_code == 409
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["error"]["code"] == "in_flight"
    idempotency.release(db, claim)
    after = client.post(
        PREDICTIONS, json=body, headers=bearer(service_token, **{"Idempotency-Key": "held"})
    )
    assert after.status_code == 200
    assert after.get_json()["items"][0]["duplicate"] is True


def test_keys_are_scoped_to_the_token(
    client: FlaskClient, db: Database, service_token: str
) -> None:
    second = users.create_token(db, "second", "demo", None)
    body = {"items": [item("a")]}
    first = client.post(
        PREDICTIONS, json=body, headers=bearer(service_token, **{"Idempotency-Key": "k"})
    )
    other = client.post(PREDICTIONS, json=body, headers=bearer(second, **{"Idempotency-Key": "k"}))
    assert first.get_json()["items"][0]["duplicate"] is False
    assert (
        other.get_json()["items"][0]["duplicate"] is True
    )  # ran again: not the first token's answer
    assert count(db, IdempotencyKey) == 2


def test_a_refused_request_leaves_its_key_free(
    client: FlaskClient, db: Database, service_token: str
) -> None:
    headers = bearer(service_token, **{"Idempotency-Key": "retry-me"})
    limit_queue(db, 0, "reject")
    assert client.post(PREDICTIONS, json={"items": [item("a")]}, headers=headers).status_code == 429
    limit_queue(db, 10, "reject")
    assert client.post(PREDICTIONS, json={"items": [item("a")]}, headers=headers).status_code == 200
    bad = bearer(service_token, **{"Idempotency-Key": "fix-me"})
    assert (
        client.post(PREDICTIONS, json={"items": [{"external_id": "x"}]}, headers=bad).status_code
        == 422
    )
    assert client.post(PREDICTIONS, json={"items": [item("x")]}, headers=bad).status_code == 200
    assert count(db, IdempotencyKey) == 2


@pytest.mark.parametrize("key", ["", "x" * 201, "has space", "tab\tkey"])
def test_a_malformed_key_is_422(
    client: FlaskClient, db: Database, service_token: str, key: str
) -> None:
    response = client.post(
        PREDICTIONS,
        json={"items": [item("a")]},
        headers=bearer(service_token, **{"Idempotency-Key": key}),
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["field"] == "Idempotency-Key"
    assert new_items(db) == 0


def test_unknown_top_level_fields_are_422(client: FlaskClient, service_token: str) -> None:
    response = client.post(
        PREDICTIONS, json={"items": [item("a")], "itmes": []}, headers=bearer(service_token)
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["field"] == "itmes"


# ---- who am I ----------------------------------------------------------------------------


def test_me_names_the_service_tokens_project(
    client: FlaskClient, service_token: str, labeler_token: str
) -> None:
    assert client.get("/api/v1/me", headers=bearer(service_token)).get_json() == {
        "role": "service",
        "project": "demo",
        "email": None,
    }
    assert (
        client.get("/api/v1/me", headers=bearer(labeler_token)).get_json()["email"]
        == "labeler@test.io"
    )
    assert client.get("/api/v1/me").status_code == 401


# ---- labels export -----------------------------------------------------------------------


def decide(db: Database, people: People, external_ids: list[str], label: str = "pos") -> None:
    service = users.Principal(user_id=None, role="admin")
    ingest.submit_predictions(db, service, "demo", [item(e) for e in external_ids])
    for _ in external_ids:
        claim = queue.claim_next(db, people.labeler, "demo", 300)
        assert claim is not None
        queue.cast_vote(db, people.labeler, claim.item_id, label, claim.fence, 1.0)


def test_labels_page_through_with_a_stable_cursor(
    client: FlaskClient, db: Database, people: People, service_token: str
) -> None:
    url = "/api/v1/projects/demo/labels"
    seen, after = [], None
    while True:
        query = {"limit": "30", **({"after": after} if after else {})}
        page = client.get(url, query_string=query, headers=bearer(service_token)).get_json()
        seen.extend(page["items"])
        after = page["next_cursor"]
        if not page["has_more"]:
            break
    assert len(seen) == 80
    assert {label["source"] for label in seen} == {"seed"}
    assert [label["item_id"] for label in seen] == sorted(label["item_id"] for label in seen)
    assert any(label["holdout"] for label in seen)
    assert seen[0]["input"]["text"]
    decide(db, people, ["n1", "n2"])
    fresh = client.get(url, query_string={"after": after}, headers=bearer(service_token)).get_json()
    decided = [(f["external_id"], f["label"], f["source"]) for f in fresh["items"]]
    assert sorted(decided) == [("n1", "pos", "consensus"), ("n2", "pos", "consensus")]
    assert fresh["has_more"] is False
    resumed = client.get(
        url, query_string={"after": fresh["items"][0]["cursor"]}, headers=bearer(service_token)
    ).get_json()
    assert resumed["items"] == fresh["items"][1:]
    empty = client.get(
        url, query_string={"after": fresh["next_cursor"]}, headers=bearer(service_token)
    ).get_json()
    assert empty == {"items": [], "next_cursor": fresh["next_cursor"], "has_more": False}


def test_labels_as_ndjson(client: FlaskClient, service_token: str) -> None:
    response = client.get(
        "/api/v1/projects/demo/labels?limit=5",
        headers=bearer(service_token, Accept="application/x-ndjson"),
    )
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert len(lines) == 5
    assert response.headers["X-Has-More"] == "true"
    assert response.headers["X-Next-Cursor"] == lines[-1]["cursor"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("after=bm9wZQ", "after"),
        ("after=%25%25", "after"),
    ],
)
def test_bad_paging_parameters_are_422_naming_the_field(
    client: FlaskClient, service_token: str, query: str, field: str
) -> None:
    for path in ("labels", "labels.csv"):
        if path == "labels.csv" and field == "limit":
            continue
        response = client.get(
            f"/api/v1/projects/demo/{path}?{query}", headers=bearer(service_token)
        )
        assert response.status_code == 422, path
        assert response.get_json()["error"]["details"][0]["field"] == field


def test_labels_are_private_to_the_project(
    client: FlaskClient, db: Database, service_token: str
) -> None:
    projects.create_project(db, projects.ProjectSpec(slug="other", labels=["x", "y"]))
    other_token = users.create_token(db, "t", "other", None)
    for path in ("labels", "labels.csv"):
        assert (
            client.get(f"/api/v1/projects/demo/{path}", headers=bearer(other_token)).status_code
            == 404
        )
        assert client.get(f"/api/v1/projects/demo/{path}").status_code == 401


def test_labels_csv_streams_everything_with_seed_style_columns(
    client: FlaskClient,
    db: Database,
    people: People,
    service_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from feedback.services import labels

    monkeypatch.setattr(labels, "EXPORT_PAGE", 7)  # several pages, read one by one
    decide(db, people, ["=cmd|' /C calc'!A0"], "neg")
    response = client.get("/api/v1/projects/demo/labels.csv", headers=bearer(service_token))
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 81
    assert list(rows[0])[:5] == ["cursor", "item_id", "external_id", "text", "label"]
    assert rows[-1]["external_id"] == "=cmd|' /C calc'!A0"
    assert rows[-1]["label"] == "neg"
    tail = client.get(
        "/api/v1/projects/demo/labels.csv",
        query_string={"after": rows[-2]["cursor"]},
        headers=bearer(service_token),
    )
    assert len(list(csv.DictReader(io.StringIO(tail.get_data(as_text=True))))) == 1


def test_labels_csv_of_a_features_project_has_one_column_per_feature(
    client: FlaskClient, db: Database
) -> None:
    seed = [Example({"features": [float(i), 0.5 - i]}, "a" if i % 2 else "b") for i in range(4)]
    projects.create_project(
        db,
        projects.ProjectSpec(
            slug="feat", labels=["a", "b"], input_kind="features", features=["x", "y"]
        ),
        seed,
    )
    token = users.create_token(db, "t", "feat", None)
    rows = list(
        csv.reader(
            io.StringIO(
                client.get("/api/v1/projects/feat/labels.csv", headers=bearer(token)).get_data(
                    as_text=True
                )
            )
        )
    )
    assert rows[0][:6] == ["cursor", "item_id", "external_id", "x", "y", "label"]
    assert [r[3:6] for r in rows[1:]] == [
        ["0.0", "0.5", "b"],
        ["1.0", "-0.5", "a"],
        ["2.0", "-1.5", "b"],
        ["3.0", "-2.5", "a"],
    ]
