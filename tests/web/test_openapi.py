"""The OpenAPI document, the docs page, and schemathesis against the real app."""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, strategies
from hypothesis import settings as hypothesis_settings
from markupsafe import escape
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from feedback import schemas
from feedback.config import Settings
from feedback.db.engine import Database
from feedback.schemas import PredictionIn
from feedback.services import retrain, users
from feedback.web.api.spec import OPERATIONS, REF
from tests.conftest import People

pytestmark = pytest.mark.usefixtures("backend")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 25  # per operation and backend: bounded, so the suite stays quick
MY_BLUEPRINTS = ("api_predictions", "api_labels", "api_docs", "api_models", "api_queue")


def test_the_document_is_generated_from_the_validating_models(
    client: FlaskClient, settings: Settings
) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    expected = PredictionIn.model_json_schema(ref_template=REF)
    expected.pop("$defs", None)
    assert document["components"]["schemas"]["PredictionIn"] == expected
    body = document["paths"]["/api/v1/projects/{slug}/predictions"]["post"]["requestBody"]
    assert (
        body["content"]["application/json"]["schema"]["properties"]["items"]["maxItems"]
        == settings.max_batch
    )
    responses = document["paths"]["/api/v1/projects/{slug}/predictions"]["post"]["responses"]
    assert {"200", "400", "401", "404", "409", "413", "415", "422", "429"} <= set(responses)
    assert "Retry-After" in responses["429"]["headers"]


def test_every_route_of_the_model_service_api_is_documented(
    app: Flask, client: FlaskClient
) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    documented = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] not in MY_BLUEPRINTS or rule.rule in (
            "/api/v1/openapi.json",
            "/api/docs",
        ):
            continue
        path = re.sub(r"<(?:[^:>]+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (method, path) in documented, (method, path)


def test_the_docs_page_is_self_contained_and_escaped(client: FlaskClient) -> None:
    response = client.get("/api/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    page = response.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert "<style" not in page
    assert " style=" not in page
    assert not re.search(r" on\w+=", page)
    external = re.findall(r'(?:src|href)="(https?:)?//', page)
    assert external == []
    for op in OPERATIONS:
        assert op.path in page
        assert str(escape(op.summary)) in page
    assert "Bearer &lt;token&gt;" in page
    assert "Bearer <token>" not in page
    with client.get("/static/api-docs.css") as stylesheet:
        assert stylesheet.status_code == 200
        assert stylesheet.mimetype == "text/css"


def valid_bodies(predictions: bool) -> strategies.SearchStrategy[dict[str, Any]]:
    """Bodies the demo project accepts, so that 200 answers are checked against the schema too."""

    def item(external_id: str, text: str, pos: float) -> dict[str, Any]:
        found: dict[str, Any] = {"external_id": external_id, "input": {"text": text}}
        if predictions:
            found["probabilities"] = {"neg": 1 - pos, "pos": pos}
        return found

    items = strategies.builds(
        item,
        strategies.text(min_size=1, max_size=20),
        strategies.text(min_size=1, max_size=50),
        strategies.floats(0, 1),
    )
    return strategies.builds(
        lambda found: {"items": found}, strategies.lists(items, min_size=1, max_size=5)
    )


@pytest.mark.parametrize("operation", [f"{op.method.upper()} {op.path}" for op in OPERATIONS])
def test_schemathesis_finds_no_server_error_and_no_schema_break(
    operation: str, app: Flask, db: Database, settings: Settings, people: People, service_token: str
) -> None:
    method, path = operation.split(" ", 1)
    if path.endswith("/predict") or "/model" in path:  # a champion, so these answer 200 too
        retrain.execute_retrain(db, settings, retrain.request_retrain(db, people.admin, "demo"))
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    found = schema[path][method]
    cases = found.as_strategy()
    if "{slug}" in path:  # more cases aim at the token's own project, some with valid bodies
        mine = {"slug": "demo"}
        cases = strategies.one_of(found.as_strategy(path_parameters=mine), cases)
        if path.endswith(("/predictions", "/predict")):
            valid = valid_bodies(predictions=path.endswith("/predictions"))
            cases = strategies.one_of(
                valid.flatmap(lambda b: found.as_strategy(path_parameters=mine, body=b)), cases
            )
    auth = {"Authorization": f"Bearer {service_token}"}
    seen: dict[int, int] = {}

    @given(case=cases)
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(headers=auth)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS, headers=auth)

    run()
    assert seen
    assert not any(status >= 500 and status != 503 for status in seen)


def _conforms(document: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """The document names a schema for this answer, and `body` validates against its model."""
    content = document["paths"][path][method]["responses"][str(status)]["content"]
    name = content["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    getattr(schemas, name).model_validate(body)


def test_lifecycle_and_labeler_answers_match_the_document(
    client: FlaskClient,
    db: Database,
    settings: Settings,
    people: People,
    service_token: str,
    labeler_token: str,
) -> None:
    admin = {"Authorization": f"Bearer {users.create_token(db, 'admin', None, 'admin@test.io')}"}
    labeler = {"Authorization": f"Bearer {labeler_token}"}
    for _ in range(2):
        run = retrain.request_retrain(db, people.admin, "demo")
        retrain.execute_retrain(db, settings, run)
    document = client.get("/api/v1/openapi.json").get_json()
    project, demo = "/api/v1/projects/{slug}", "/api/v1/projects/demo"
    answers = [
        ("get", f"{project}/models", f"{demo}/models", None),
        ("get", f"{project}/models/{{version}}", f"{demo}/models/1", None),
        ("get", f"{project}/models/{{version}}/changes", f"{demo}/models/1/changes", None),
        ("get", f"{project}/runs/{{run_id}}", f"{demo}/runs/{run}", None),
        ("post", f"{project}/champion", f"{demo}/champion", {"version": 1}),
    ]
    for method, path, url, body in answers:
        response = client.open(url, method=method.upper(), json=body, headers=admin)
        assert response.status_code == 200, (url, response.get_json())
        _conforms(document, path, method, 200, response.get_json())
    posted = client.post(
        f"{demo}/predictions",
        json={
            "items": [
                {
                    "external_id": "x",
                    "input": {"text": "t"},
                    "probabilities": {"neg": 0.5, "pos": 0.5},
                }
            ]
        },
        headers={"Authorization": f"Bearer {service_token}"},
    )
    assert posted.status_code == 200, posted.get_json()
    claimed = client.post(f"{demo}/queue/claim", headers=labeler)
    assert claimed.status_code == 200, claimed.get_json()
    _conforms(document, f"{project}/queue/claim", "post", 200, claimed.get_json())
    item = claimed.get_json()["item"]
    fence = {"fence": item["lease"]["fence"]}
    extended = client.post(f"/api/v1/items/{item['id']}/lease", json=fence, headers=labeler)
    _conforms(document, "/api/v1/items/{item_id}/lease", "post", 200, extended.get_json())
    voted = client.post(
        f"/api/v1/items/{item['id']}/votes", json={"label": "pos", **fence}, headers=labeler
    )
    assert voted.status_code == 201, voted.get_json()
    _conforms(document, "/api/v1/items/{item_id}/votes", "post", 201, voted.get_json())
