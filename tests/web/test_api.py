"""The model-service API through the Flask test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from feedback.config import Settings
from feedback.db.engine import Database
from feedback.db.models import Item
from feedback.services import retrain, users
from tests.conftest import People

pytestmark = pytest.mark.usefixtures("backend")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def item(external_id: str, pos: float = 0.5) -> dict[str, object]:
    return {
        "external_id": external_id,
        "input": {"text": "hello"},
        "probabilities": {"neg": 1 - pos, "pos": pos},
    }


def queued(db: Database) -> int:
    with db.read() as session:
        return session.scalar(select(func.count(Item.id)).where(Item.route != "seed")) or 0


def test_predictions_are_routed_and_replayed_as_duplicates(
    client: FlaskClient, service_token: str
) -> None:
    url = "/api/v1/projects/demo/predictions"
    response = client.post(
        url, json={"items": [item("a"), item("b", 0.99)]}, headers=bearer(service_token)
    )
    assert response.status_code == 200
    body = response.get_json()["items"]
    assert [(i["external_id"], i["route"], i["duplicate"]) for i in body] == [
        ("a", "review", False),
        ("b", "auto", False),
    ]
    again = client.post(url, json={"items": [item("a")]}, headers=bearer(service_token)).get_json()[
        "items"
    ]
    assert again[0]["duplicate"] is True
    assert again[0]["id"] == body[0]["id"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer nope"}, 401), ({"Authorization": "Basic abc"}, 401)],
)
def test_missing_or_bad_token_is_401(
    client: FlaskClient, project: str, headers: dict[str, str], status: int
) -> None:
    response = client.post(
        f"/api/v1/projects/{project}/predictions", json={"items": [item("a")]}, headers=headers
    )
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_token_of_another_project_and_unknown_project_are_404(
    client: FlaskClient, db: Database, service_token: str
) -> None:
    from feedback.services import projects

    projects.create_project(db, projects.ProjectSpec(slug="other", labels=["x", "y"]))
    other_token = users.create_token(db, "t", "other", None)
    assert (
        client.post(
            "/api/v1/projects/demo/predictions",
            json={"items": [item("a")]},
            headers=bearer(other_token),
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/api/v1/projects/nope/predictions",
            json={"items": [item("a")]},
            headers=bearer(service_token),
        ).status_code
        == 404
    )


def test_wrong_content_type_malformed_json_and_limits(
    client: FlaskClient, app: object, service_token: str, db: Database
) -> None:
    url, headers = "/api/v1/projects/demo/predictions", bearer(service_token)
    assert (
        client.post(url, data="items=1", headers=headers, content_type="text/plain").status_code
        == 415
    )
    assert (
        client.post(
            url, data="{not json", headers=headers, content_type="application/json"
        ).status_code
        == 400
    )
    too_many = {"items": [item(str(i)) for i in range(1001)]}
    assert client.post(url, json=too_many, headers=headers).status_code == 413
    huge = json.dumps({"items": [item("a") | {"input": {"text": "x" * (9 * 1024 * 1024)}}]})
    assert (
        client.post(url, data=huge, headers=headers, content_type="application/json").status_code
        == 413
    )
    assert client.post(url, json={"items": []}, headers=headers).status_code == 422
    assert client.post(url, json=[1, 2], headers=headers).status_code == 422
    assert queued(db) == 0


def test_one_bad_item_rejects_the_batch_naming_each_problem(
    client: FlaskClient, service_token: str, db: Database
) -> None:
    batch = [
        item("ok"),
        {"external_id": "", "input": {"text": "t"}, "probabilities": {"neg": 0.5, "pos": 0.5}},
        {"external_id": "p", "input": {"text": "t"}, "probabilities": {"neg": 0.2, "pos": 0.2}},
        {
            "external_id": "q",
            "input": {"features": [1.0]},
            "probabilities": {"neg": 0.5, "pos": 0.5},
        },
        {
            "external_id": "r",
            "input": {"text": "t"},
            "probabilities": {"neg": 0.5, "pos": 0.5, "maybe": 0.0},
        },
        {
            "external_id": "s",
            "input": {"text": "t"},
            "probabilities": {"neg": float("nan"), "pos": 0.5},
        },
    ]
    response = client.post(
        "/api/v1/projects/demo/predictions",
        data=json.dumps(batch and {"items": batch}).replace("NaN", "NaN"),
        headers=bearer(service_token),
        content_type="application/json",
    )
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input"
    assert sorted({d["index"] for d in error["details"]}) == [1, 2, 3, 4, 5]
    fields = {d["index"]: d["field"] for d in error["details"]}
    assert fields[2] == "probabilities"
    assert fields[3] == "input"
    assert queued(db) == 0


def test_predict_needs_a_champion_then_routes_its_predictions(
    client: FlaskClient, db: Database, settings: Settings, service_token: str, people: People
) -> None:
    url = "/api/v1/projects/demo/predict"
    body = {"items": [{"external_id": "n1", "input": {"text": "great product, works well"}}]}
    response = client.post(url, json=body, headers=bearer(service_token))
    assert response.status_code == 503
    assert "no champion" in response.get_json()["error"]["message"]
    retrain.execute_retrain(db, settings, retrain.request_retrain(db, people.admin, "demo"))
    response = client.post(url, json=body, headers=bearer(service_token))
    assert response.status_code == 200
    result = response.get_json()
    assert result["model_version"] == 1
    assert result["items"][0]["label"] == "pos"
    assert set(result["items"][0]["probabilities"]) == {"neg", "pos"}
    assert result["items"][0]["route"] in ("review", "auto", "audit")


def test_model_metadata_and_artifact(
    client: FlaskClient, db: Database, settings: Settings, service_token: str, people: People
) -> None:
    assert (
        client.get("/api/v1/projects/demo/model", headers=bearer(service_token)).status_code == 503
    )
    retrain.execute_retrain(db, settings, retrain.request_retrain(db, people.admin, "demo"))
    meta = client.get("/api/v1/projects/demo/model", headers=bearer(service_token)).get_json()
    assert meta["version"] == 1
    assert len(meta["sha256"]) == 64
    assert meta["metrics"]["macro_f1"] > meta["baseline_metrics"]["macro_f1"]
    artifact = client.get("/api/v1/projects/demo/model/artifact", headers=bearer(service_token))
    assert artifact.status_code == 200
    assert artifact.headers["ETag"].strip('"') == meta["sha256"]
    import hashlib

    assert hashlib.sha256(artifact.data).hexdigest() == meta["sha256"]
    cached = client.get(
        "/api/v1/projects/demo/model/artifact",
        headers=bearer(service_token) | {"If-None-Match": f'"{meta["sha256"]}"'},
    )
    assert cached.status_code == 304


def test_labeler_api_claim_vote_and_stale_fence(
    client: FlaskClient, service_token: str, labeler_token: str, db: Database
) -> None:
    client.post(
        "/api/v1/projects/demo/predictions",
        json={"items": [item("a")]},
        headers=bearer(service_token),
    )
    claim = client.post("/api/v1/projects/demo/queue/claim", headers=bearer(labeler_token))
    assert claim.status_code == 200
    leased = claim.get_json()["item"]
    vote_url = f"/api/v1/items/{leased['id']}/votes"
    fence = leased["lease"]["fence"]
    assert (
        client.post(
            vote_url, json={"label": "maybe", "fence": fence}, headers=bearer(labeler_token)
        ).status_code
        == 422
    )
    assert (
        client.post(
            vote_url, json={"label": "pos", "fence": fence + 5}, headers=bearer(labeler_token)
        ).status_code
        == 409
    )
    assert (
        client.post(
            vote_url,
            json={"label": "pos", "fence": fence, "seconds": 2.5},
            headers=bearer(labeler_token),
        ).status_code
        == 201
    )
    assert (
        client.post(
            vote_url, json={"label": "pos", "fence": fence}, headers=bearer(labeler_token)
        ).status_code
        == 409
    )
    assert (
        client.post("/api/v1/projects/demo/queue/claim", headers=bearer(labeler_token)).status_code
        == 204
    )


def test_service_token_cannot_label(client: FlaskClient, service_token: str) -> None:
    assert (
        client.post("/api/v1/projects/demo/queue/claim", headers=bearer(service_token)).status_code
        == 403
    )


def test_retrain_request_is_202_and_coalesced(client: FlaskClient, service_token: str) -> None:
    first = client.post("/api/v1/projects/demo/retrain", headers=bearer(service_token))
    second = client.post("/api/v1/projects/demo/retrain", headers=bearer(service_token))
    assert first.status_code == second.status_code == 202
    assert first.get_json()["run"] == second.get_json()["run"]
    run = client.get(
        f"/api/v1/projects/demo/runs/{first.get_json()['run']}", headers=bearer(service_token)
    ).get_json()
    assert run["status"] == "requested"


def test_healthz(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_an_id_too_large_for_the_database_is_404(client: FlaskClient, service_token: str) -> None:
    huge = 2**70
    assert (
        client.get(f"/api/v1/projects/demo/runs/{huge}", headers=bearer(service_token)).status_code
        == 404
    )
    assert (
        client.post(
            f"/api/v1/items/{huge}/votes",
            json={"label": "pos", "fence": 1},
            headers=bearer(service_token),
        ).status_code
        == 404
    )
