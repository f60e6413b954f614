"""A small Python client for the model-service API (standard library only).

    client = FeedbackClient("http://127.0.0.1:5000", token)   # a service token: its project
    results = client.submit(predictions)        # batched, idempotent, retried
    for label in client.labels():               # every decided label, oldest first
        ...

Only the standard library is used, so a model service can vendor this one file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

RETRY_STATUSES = frozenset({409, 500, 502, 503, 504})
CHUNK = 1024 * 1024


class FeedbackError(Exception):
    """The server refused the request (or kept failing); `code` and `details` say why."""

    def __init__(
        self, status: int, code: str, message: str, details: list[Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or []
        self.retry_after: float | None = None


class QueueFullError(FeedbackError):
    """The project's review queue is full and it rejects new review items (HTTP 429)."""


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it would carry the bearer token to another address."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class FeedbackClient:
    """Talk to one feedback server with one project's service token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        project: str | None = None,
        batch_size: int = 500,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._project = project
        self.batch_size, self.timeout = batch_size, timeout
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self._opener = urllib.request.build_opener(_NoRedirect)

    @property
    def project(self) -> str:
        """The project's slug: given, or the one the service token is scoped to."""
        if self._project is None:
            found = self._request("GET", "/me").json().get("project")
            if not found:
                raise FeedbackError(0, "no_project", "a user token needs project=... as well")
            self._project = str(found)
        return self._project

    def submit(self, predictions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Post predictions in batches (each with its own Idempotency-Key); results in order."""
        return self._batched("predictions", predictions)

    def predict(self, inputs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Let the champion predict each input (routed like posted predictions), in order."""
        return self._batched("predict", inputs)

    def current_model(self) -> dict[str, Any]:
        """Describe the champion model (version, metrics, sha256...)."""
        return dict(self._request("GET", self._path("model")).json())

    def download_model(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Download the champion's skops file to `path`, verified against its sha256."""
        meta = self.current_model()
        target = Path(path)
        reply = self._request("GET", self._path("model/artifact"), stream_to=target)
        if reply.headers.get("etag", "").strip('"') != meta["sha256"]:
            target.unlink(missing_ok=True)
            raise FeedbackError(0, "digest_mismatch", "the champion changed during the download")
        return meta

    def labels(self, after: str | None = None, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every decided label after the cursor, oldest first; each carries its own `cursor`."""
        while True:
            query = {"limit": str(page_size), **({"after": after} if after else {})}
            page = self._request("GET", self._path(f"labels?{urlencode(query)}")).json()
            yield from page["items"]
            after = page["next_cursor"]
            if not page["has_more"]:
                return

    def _path(self, rest: str) -> str:
        return f"/projects/{quote(self.project, safe='')}/{rest}"

    def _batched(self, endpoint: str, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for batch in _batches(items, self.batch_size):
            results.extend(self._post_batch(self._path(endpoint), batch)["items"])
        return results

    def _post_batch(self, path: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
        key = str(uuid.uuid4())  # one key per batch, the same for all its retries
        body = json.dumps({"items": batch}).encode()
        return dict(self._request("POST", path, body, {"Idempotency-Key": key}).json())

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        stream_to: Path | None = None,
    ) -> _Reply:
        for attempt in range(self.retries + 1):
            try:
                return self._once(method, path, body, headers or {}, stream_to)
            except FeedbackError as error:
                if error.status not in RETRY_STATUSES or error.code == "unavailable":
                    raise
                if attempt == self.retries:
                    raise
                self._sleep(attempt, error.retry_after)
            except (urllib.error.URLError, HTTPException, OSError):
                if attempt == self.retries:
                    raise
                self._sleep(attempt, None)
        raise AssertionError("unreachable")

    def _once(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        stream_to: Path | None,
    ) -> _Reply:
        request = urllib.request.Request(  # noqa: S310 - the caller chose an http(s) base URL
            f"{self.base_url}/api/v1{path}",
            data=body,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if body is not None else {}),
                **headers,
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                found = {k.lower(): v for k, v in response.headers.items()}
                if stream_to is not None:
                    _save_verified(response, stream_to, found.get("etag", "").strip('"'))
                    return _Reply(response.status, found, b"")
                return _Reply(response.status, found, response.read())
        except urllib.error.HTTPError as error:
            raise _error(error) from None

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
        time.sleep(max(delay, min(retry_after or 0.0, self.max_backoff)))


def _batches(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _error(error: urllib.error.HTTPError) -> FeedbackError:
    try:
        payload = json.loads(error.read() or b"{}").get("error", {})
    except (ValueError, AttributeError):
        payload = {}
    kind = QueueFullError if error.code == 429 else FeedbackError
    found = kind(
        error.code,
        str(payload.get("code", "http_error")),
        str(payload.get("message", error.reason)),
        payload.get("details"),
    )
    retry_after = error.headers.get("Retry-After") if error.headers else None
    found.retry_after = float(retry_after) if retry_after and retry_after.isdigit() else None
    return found


def _save_verified(response: Any, target: Path, expected: str) -> None:
    """Stream to a temporary file beside `target`; keep it only if its sha256 is `expected`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            raise FeedbackError(0, "digest_mismatch", "the downloaded file's sha256 is wrong")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
