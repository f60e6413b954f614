"""Claim-next latency as the queue grows, and save→next over HTTP, on SQLite and PostgreSQL.

For each backend one database grows from 1k to 100k to 1M queued items (smoke: 1k, 10k),
loaded by one server-side `INSERT ... SELECT` per step. At each size, 20 labelers take turns:
each answers the item it holds (not timed) and claims the next one (timed, through the
`queue.claim_next` service, transaction included), so every claim walks past the items the
others hold. After one uncounted warm-up run, each run is 1,000 claims (smoke: 40), so p99 is the
tenth-slowest claim rather than the second; p50 and
p99 are taken per run and the queue is reset after it; the metric is the median over 5 runs
(smoke: 3) with min and max.
The goal compares p99 at the largest size with p99 at 1k, measured side by side in this run.

Save→next over HTTP: gunicorn serves the real app on 127.0.0.1; a logged-in labeler posts an
answer the way the labeling page's script does (`X-Requested-With: fetch`) and gets the page
with the next item back. One round trip is timed, at 100k queued items (smoke: 10k).
"""

from __future__ import annotations

import http.client
import json
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from benchmarks import common
from feedback.db.engine import Database, make_database, make_engine
from feedback.db.migrate import upgrade
from feedback.db.models import Membership, User
from feedback.services import projects, queue, users
from feedback.services.users import Principal

LABELERS = 20
PASSWORD = "benchmark-password"
GROW = {
    "sqlite": "WITH RECURSIVE seq(g) AS (SELECT :a UNION ALL SELECT g + 1 FROM seq WHERE g < :b) "
    "INSERT INTO items (project_id, external_id, input, probabilities, uncertainty, priority, "
    "route, status, is_holdout, deferred, fence, created_at) "
    "SELECT :p, 'b' || g, json_object('text', 'item ' || g), json_object('neg', 0.5, 'pos', 0.5),"
    " r, r, 'review', 'queued', 0, 0, 0, strftime('%Y-%m-%d %H:%M:%f', 'now') "
    "FROM (SELECT g, (abs(random()) % 1000000) / 1000000.0 AS r FROM seq)",
    "postgresql": "INSERT INTO items (project_id, external_id, input, probabilities, uncertainty, "
    "priority, route, status, is_holdout, deferred, fence, created_at) "
    "SELECT :p, 'b' || g, json_build_object('text', 'item ' || g), "
    "json_build_object('neg', 0.5, 'pos', 0.5), r, r, 'review', 'queued', false, false, 0, "
    "now() AT TIME ZONE 'utc' FROM (SELECT g, random() AS r "
    "FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) g) s",
}
RESET = (
    "DELETE FROM votes",
    "DELETE FROM leases",
    "DELETE FROM decisions",
    "DELETE FROM outbox",
    "UPDATE items SET status = 'queued' WHERE project_id = :p AND status <> 'queued'",
)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@contextmanager
def database(backend: str, folder: Path) -> Iterator[str]:
    """A migrated, empty database of this backend; dropped afterwards (PostgreSQL)."""
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'queue.db'}"
        upgrade(url)
        yield url
        return
    base = common.postgres_url()
    name = f"bench_queue_{uuid.uuid4().hex[:8]}"
    admin = make_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def setup(db: Database) -> tuple[int, list[Principal]]:
    """The project `bench` and its labelers (members, so every claim checks membership)."""
    project_id = projects.create_project(
        db, projects.ProjectSpec(slug="bench", labels=["neg", "pos"])
    )
    with db.transaction() as session:
        rows = [
            {"email": f"l{n}@bench.io", "password_hash": "x", "role": "labeler", "is_active": True}
            for n in range(LABELERS)
        ]
        ids = session.scalars(
            insert(User).returning(User.id, sort_by_parameter_order=True), rows
        ).all()
        session.execute(insert(Membership), [{"user_id": i, "project_id": project_id} for i in ids])
    users.create_user(db, "web@bench.io", PASSWORD, "labeler")
    projects.add_member(db, "bench", "web@bench.io")
    return project_id, [Principal(user_id=i, role="labeler") for i in ids]


def grow(db: Database, project_id: int, start: int, stop: int) -> None:
    """Add queued items numbered start..stop-1 with random priorities; vacuum and analyze."""
    with db.transaction() as session:
        session.execute(text(GROW[db.dialect]), {"a": start, "b": stop - 1, "p": project_id})
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        # Steady state, as autovacuum would leave it (and not vacuuming in the middle of a run).
        connection.execute(
            text("VACUUM ANALYZE items" if db.dialect == "postgresql" else "ANALYZE")
        )


def reset(db: Database, project_id: int) -> None:
    with db.transaction() as session:
        for statement in RESET:
            session.execute(text(statement), {"p": project_id})


def claim_run(db: Database, project_id: int, labelers: list[Principal], claims: int) -> list[float]:
    """Labelers take turns: answer the held item, then claim the next (timed). Seconds per claim."""
    held: dict[int, queue.Claim] = {}
    timings = []
    for n in range(claims):
        who = labelers[n % len(labelers)]
        assert who.user_id is not None
        if who.user_id in held:
            old = held.pop(who.user_id)
            queue.cast_vote(db, who, old.item_id, "pos", old.fence, 1.0)
        claim, seconds = common.timed(partial(queue.claim_next, db, who, "bench", 300))
        assert claim is not None, "the queue ran dry"
        held[who.user_id] = claim
        timings.append(seconds)
    reset(db, project_id)
    return timings


def measure_claims(
    db: Database, project_id: int, labelers: list[Principal], runs: int, claims: int
) -> dict[str, list[float]]:
    p50s, p99s = [], []
    claim_run(db, project_id, labelers, claims)  # warm-up (connections, caches): not counted
    for _ in range(runs):
        timings = claim_run(db, project_id, labelers, claims)
        p50s.append(percentile(timings, 0.50) * 1000)
        p99s.append(percentile(timings, 0.99) * 1000)
    return {"p50": p50s, "p99": p99s}


class Browserless:
    """A logged-in labeler over plain HTTP/1.1, keeping the session cookie like a browser."""

    def __init__(self, port: int) -> None:
        self.port, self.cookie = port, ""

    def send(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Cookie": self.cookie, **(headers or {})}
        body = None
        if form is not None:
            body = "&".join(f"{k}={v}" for k, v in form.items())
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        data = response.read().decode()
        connection.close()
        return response.status, data


def csrf(page: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def held_item(page: str) -> tuple[str, str]:
    found = re.search(r'data-item-id="(\d+)" data-fence="(\d+)"', page)
    assert found is not None, "the page shows no item"
    return found.group(1), found.group(2)


@contextmanager
def web_server(url: str, folder: Path) -> Iterator[int]:
    """gunicorn serving the real app on 127.0.0.1 against this database."""
    port = common.free_port()
    env = common.clean_env(
        FEEDBACK_INSTANCE_PATH=str(folder / "instance"),
        FEEDBACK_DATABASE_URL=url,
        FEEDBACK_BROKER_URL="filesystem://",
        FEEDBACK_HOST="127.0.0.1",
    )
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "1",
        "feedback.web:create_app_from_env()",
    ]
    process = common.start_process("queue-web", argv, env, folder / "logs")
    try:
        probe = Browserless(port)

        def up() -> bool:
            try:
                return probe.send("GET", "/healthz")[0] == 200
            except OSError:
                return False

        common.wait_until("the web server", up, 60, watch=[process])
        yield port
    finally:
        common.stop_process(process)


def save_next_runs(url: str, folder: Path, runs: int, rounds: int) -> list[float]:
    """p50 (ms) of answer→next-item round trips per run, through the labeling page's own path."""
    with web_server(url, folder) as port:
        client = Browserless(port)
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.send("GET", "/login")[1])
        assert token is not None
        client.send(
            "POST",
            "/login",
            {"csrf_token": token.group(1), "email": "web%40bench.io", "password": PASSWORD},
        )
        fetch = {"X-Requested-With": "fetch"}
        page = client.send(
            "POST",
            "/projects/bench/label/claim",
            {"csrf_token": csrf(client.send("GET", "/projects/bench/label")[1])},
            fetch,
        )[1]
        medians = []
        for run in range(runs + 1):  # the first run warms up and is not counted
            timings = []
            for _ in range(rounds):
                item, fence = held_item(page)
                form = {"csrf_token": csrf(page), "label": "pos", "fence": fence, "seconds": "1"}
                (status, page), seconds = common.timed(
                    partial(client.send, "POST", f"/projects/bench/items/{item}/vote", form, fetch)
                )
                assert status == 200, page[:500]
                timings.append(seconds * 1000)
            if run:
                medians.append(percentile(timings, 0.5))
        return medians


def backend_metrics(
    backend: str, smoke: bool, folder: Path
) -> tuple[dict[str, Any], dict[int, float]]:
    """Claim latencies at each size and save→next over HTTP, for one backend."""
    sizes = [1_000, 10_000] if smoke else [1_000, 100_000, 1_000_000]
    http_at = sizes[-1] if smoke else 100_000
    runs, claims = (3, 40) if smoke else (5, 1000)
    metrics: dict[str, Any] = {}
    p99_by_size: dict[int, float] = {}
    with database(backend, folder) as url:
        db = make_database(url)
        try:
            project_id, labelers = setup(db)
            loaded = 0
            for size in sizes:
                common.say(f"{backend}: loading {size} queued items")
                _, load_seconds = common.timed(partial(grow, db, project_id, loaded, size))
                loaded = size
                metrics[f"{backend}: bulk load to {size} items, s"] = round(load_seconds, 2)
                found = measure_claims(db, project_id, labelers, runs, claims)
                label = f"{size // 1000}k" if size < 1_000_000 else "1M"
                metrics[f"{backend}: claim-next p50 ms at {label}"] = common.summary(found["p50"])
                metrics[f"{backend}: claim-next p99 ms at {label}"] = common.summary(found["p99"])
                p99_by_size[size] = common.summary(found["p99"])["median"]
                if size == http_at:
                    common.say(f"{backend}: save→next over HTTP at {size}")
                    trips = save_next_runs(url, folder / backend, runs, 30 if smoke else 100)
                    metrics[f"{backend}: save→next p50 ms over HTTP at {label}"] = common.summary(
                        trips
                    )
        finally:
            db.dispose()
    return metrics, p99_by_size


def _tail_note(found: dict[str, Any], backend: str, name: str) -> str:
    """Compare the tail with the median at the largest size: the index walk or single claims."""
    p50 = {size: found[f"{backend}: claim-next p50 ms at {size}"] for size in ("1k", name)}
    p99 = found[f"{backend}: claim-next p99 ms at {name}"]
    growth = p50[name]["median"] / p50["1k"]["median"]
    typical = (
        "the typical claim does not grow with the queue, so the tail comes from single slow "
        "claims (checkpoints, the other core's work), not from walking a longer index"
        if growth <= 1.2
        else "the typical claim grows with the queue too: the index walk itself got slower"
    )
    return (
        f"p50 is {p50[name]['median']:.2f} ms at {name} against {p50['1k']['median']:.2f} ms at "
        f"1k (ratio {growth:.2f}); the p99 at {name} varied from {p99['min']:.2f} to "
        f"{p99['max']:.2f} ms between runs: {typical}."
    )


def run(smoke: bool) -> dict[str, Any]:
    """Measure claim-next at growing queue sizes and save→next over HTTP on both backends."""
    load = common.load_average()
    metrics: dict[str, Any] = {}
    goals = []
    notes: dict[str, str] = {}
    backends = ["sqlite"] + (["postgresql"] if common.postgres_version() else [])
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"bench-queue-{backend}-") as folder:
            found, p99 = backend_metrics(backend, smoke, Path(folder))
        metrics.update(found)
        largest = max(p99)
        name = "1M" if largest == 1_000_000 else f"{largest // 1000}k"
        value = common.ratio(p99[largest], p99[1_000])
        goal = f"{backend}: claim-next p99 at {name} ÷ p99 at 1k"
        goals.append(common.at_most(goal, value, 1.5))
        notes[goal] = _tail_note(found, backend, name)
        key = next(k for k in found if "save→next" in k)
        goals.append(
            common.at_most(f"{backend}: save→next p50 ms over HTTP", found[key]["median"], 34.0)
        )
    return {
        "name": "queue",
        "machine_note": common.machine_note(load),
        "metrics": metrics,
        "goals": goals,
        "runs": 3 if smoke else 5,
        "notes": notes if "postgresql" in backends else {**notes, "postgresql": "not reachable"},
    }


if __name__ == "__main__":
    print(json.dumps(run("--smoke" in sys.argv), indent=2, ensure_ascii=False))
