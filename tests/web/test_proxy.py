"""Behind a reverse proxy: X-Forwarded-* is trusted only from as many hops as configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import jsonify, request

from feedback.config import ConfigError, Settings
from feedback.db.engine import Database
from feedback.web import create_app

FORWARDED = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "labels.example.org",
}


def seen_by_the_app(settings: Settings, db: Database) -> dict[str, str]:
    app = create_app(settings, db)
    app.add_url_rule(
        "/_probe",
        "probe",
        lambda: jsonify(scheme=request.scheme, remote=request.remote_addr, url=request.host_url),
    )
    found: dict[str, str] = app.test_client().get("/_probe", headers=FORWARDED).get_json()
    return found


def test_forwarded_headers_are_ignored_without_a_configured_proxy(
    settings: Settings, db: Database
) -> None:
    found = seen_by_the_app(settings, db)
    assert found["scheme"] == "http"
    assert found["remote"] == "127.0.0.1"
    assert found["url"] == "http://localhost/"


def test_one_proxy_hop_gives_the_client_address_scheme_and_host(
    settings: Settings, db: Database
) -> None:
    found = seen_by_the_app(settings.with_overrides(proxy_hops=1), db)
    assert found == {
        "scheme": "https",
        "remote": "203.0.113.9",
        "url": "https://labels.example.org/",
    }


@pytest.mark.parametrize("raw", ["-1", "x", "6", "1.5"])
def test_a_bad_hop_count_is_refused_naming_the_variable(raw: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FEEDBACK_PROXY_HOPS"):
        Settings.from_env({"FEEDBACK_PROXY_HOPS": raw, "FEEDBACK_INSTANCE_PATH": str(tmp_path)})
