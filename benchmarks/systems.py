"""Systems: a single-item ingest next to a no-op of the same app, and the processes' memory.

gunicorn serves `benchmarks.apps:create_bench_app()` with exactly the settings `feedback run`
gives the product (2 workers x 4 threads, access log on), on 127.0.0.1, beside a real Celery
worker and beat on the same instance. A second process (wrk, or a bounded Python client when
wrk is missing) sends the same JSON body with the same bearer token to three endpoints in
turn, for a fixed time each: the no-op, an authenticated read (`GET .../model`) and a
single-item `POST .../predictions` with a fresh external id every request. Afterwards a
retrain runs on the worker, the peak RSS (VmHWM) of every process is read from /proc, and
single-item ingests through the Flask test client count what one asks of the database (SQL
statements, connection checkouts, commits). `python -m benchmarks.systems [--smoke]` prints
the result.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from sklearn.datasets import load_digits
from sqlalchemy import event, func, select

from benchmarks import common
from feedback.config import Settings
from feedback.db.engine import make_database
from feedback.db.migrate import upgrade
from feedback.db.models import Item
from feedback.runner import commands
from feedback.services import projects, users
from feedback.services.seed_files import Example
from feedback.web import create_app

SLUG = "bench"
CONNECTIONS = 8  # as many as gunicorn has threads (2 workers x 4)
FULL_RUNS, FULL_SECONDS = 5, 5.0
SMOKE_RUNS, SMOKE_SECONDS = 1, 2.0
SEED_ROWS = 600
MAX_PYTHON_REQUESTS = 200_000  # the Python client's hard bound per run
COUNTED_REQUESTS = 200  # single-item ingests counted in-process for their database work
WRK_SCRIPT = """
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  counter = counter + 1
  local body = string.format([[%(body)s]], "%(tag)s", counter)
  return wrk.format(%(method)s, "%(path)s", nil, body)
end
"""


@dataclass(frozen=True)
class Load:
    """One timed run against one endpoint."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


class Stack:
    """gunicorn with the bench app, a Celery worker and beat, on a fresh database."""

    def __init__(self, folder: Path, database_url: str) -> None:
        self.folder, self.port = folder, common.free_port()
        self.env = common.service_env(folder / "instance", self.port, 0.5)
        self.env["FEEDBACK_DATABASE_URL"] = database_url
        self.settings = Settings.from_env(self.env)
        upgrade(self.settings.database_url)
        self.db = make_database(self.settings.database_url)
        digits = load_digits()
        self.rows = np.asarray(digits.data, dtype=float)
        labels = [str(d) for d in range(10)]
        spec = projects.ProjectSpec(
            slug=SLUG, labels=labels, input_kind="features", features=list(digits.feature_names)
        )
        seed = [
            Example({"features": self.rows[i].tolist()}, str(digits.target[i]))
            for i in range(SEED_ROWS)
        ]
        projects.create_project(self.db, spec, seed)
        self.token = users.create_token(self.db, "bench", SLUG, None)
        self.processes: list[common.Process] = []

    def start(self) -> None:
        argv = commands(self.settings)
        web = [*argv["web"][:-1], "benchmarks.apps:create_bench_app()"]
        logs = self.folder / "logs"
        for name, command in (("web", web), ("worker", argv["worker"]), ("beat", argv["beat"])):
            self.processes.append(common.start_process(name, command, self.env, logs))
        http = common.Http(self.port)
        common.wait_until("the web server", http.up, 120.0, self.processes, 0.25)
        model = f"/api/v1/projects/{SLUG}/model"
        common.wait_until(
            "the first champion",
            lambda: http.request("GET", model, token=self.token).status == 200,
            180.0,
            self.processes,
            0.5,
        )
        http.close()

    def stop(self) -> None:
        for process in reversed(self.processes):
            common.stop_process(process)
        self.db.dispose()

    def body(self) -> str:
        """A one-item ingest body; `%s-%d` becomes a fresh external id per request."""
        probabilities = {str(d): 0.1 for d in range(10)}
        item = {
            "external_id": "%s-%d",
            "input": {"features": self.rows[-1].tolist()},
            "probabilities": probabilities,
        }
        return json.dumps({"items": [item]})

    def retrain(self) -> str:
        """Run one retrain on the worker (peak memory) and return how it ended."""
        http = common.Http(self.port)
        base = f"/api/v1/projects/{SLUG}"
        run = http.expect("POST", f"{base}/retrain", {}, self.token, 202)["run"]

        def ended() -> str | None:
            status = http.expect("GET", f"{base}/runs/{run}", token=self.token)["status"]
            return None if status in ("requested", "running") else str(status)

        try:
            return common.wait_until("the retrain", ended, 180.0, self.processes, 0.25)
        finally:
            http.close()

    def peak_rss(self) -> dict[str, float | None]:
        """Peak RSS in MiB: the largest gunicorn worker, the Celery worker (main or child)."""
        web, worker = self.processes[0], self.processes[1]

        def largest(pids: list[int]) -> float | None:
            values = [v for v in map(common.peak_rss_mib, pids) if v is not None]
            return max(values, default=None)

        return {
            "web worker": largest(common.descendants(web.pid)),
            "web master": common.peak_rss_mib(web.pid),
            "celery worker": largest([worker.pid, *common.descendants(worker.pid)]),
        }

    def stored(self, tag: str) -> int:
        with self.db.read() as session:
            return int(
                session.scalar(select(func.count(Item.id)).where(Item.external_id.like(f"{tag}%")))
                or 0
            )


def load_wrk(stack: Stack, method: str, path: str, tag: str, seconds: float) -> Load:
    """Drive one endpoint with wrk (one thread, CONNECTIONS connections) for `seconds`."""
    script = stack.folder / f"{tag}.lua"
    script.write_text(
        WRK_SCRIPT
        % {
            "token": stack.token,
            "body": stack.body(),
            "tag": tag,
            "method": f'"{method}"',
            "path": path,
        }
    )
    wrk = common.wrk_path() or "wrk"
    argv = [
        wrk,
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{max(round(seconds), 1)}s",
        "--latency",
        "-s",
        str(script),
    ]
    argv.append(f"http://127.0.0.1:{stack.port}{path}")
    output = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    return parse_wrk(output)


def parse_wrk(output: str) -> Load:
    def duration(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    failed = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    return Load(
        rps=rps,
        p50_ms=duration(latency["50"]),
        p99_ms=duration(latency["99"]),
        requests=count,
        errors=(int(errors.group(1)) if errors else 0)
        + (sum(map(int, failed.groups())) if failed else 0),
    )


def load_python(stack: Stack, method: str, path: str, tag: str, seconds: float) -> Load:
    """The same load from CONNECTIONS threads of a keep-alive Python client (no wrk)."""
    template, stop_at = stack.body(), time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(CONNECTIONS)]
    errors = [0] * CONNECTIONS

    def client(index: int) -> None:
        http, count = common.Http(stack.port, timeout=30.0), 0
        while time.monotonic() < stop_at and count < MAX_PYTHON_REQUESTS // CONNECTIONS:
            body = json.loads(template % (f"{tag}{index}", count)) if method == "POST" else None
            start = time.perf_counter()
            try:
                ok = http.request(method, path, body, stack.token).status < 300
            except OSError:
                ok = False
            latencies[index].append((time.perf_counter() - start) * 1000)
            errors[index] += not ok
            count += 1
        http.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CONNECTIONS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    every = [v for values in latencies for v in values]
    return Load(
        rps=len(every) / (time.monotonic() - started),
        p50_ms=float(np.percentile(every, 50)),
        p99_ms=float(np.percentile(every, 99)),
        requests=len(every),
        errors=sum(errors),
    )


ENDPOINTS = {
    "no-op": ("POST", "/bench/noop"),
    "authenticated read": ("GET", f"/api/v1/projects/{SLUG}/model"),
    "single-item ingest": ("POST", f"/api/v1/projects/{SLUG}/predictions"),
}


def measure(stack: Stack, runs: int, seconds: float, warm: bool) -> dict[str, list[Load]]:
    """Alternate the endpoints run by run (rotating which goes first), after a warm-up."""
    drive = load_wrk if common.wrk_path() else load_python
    names = list(ENDPOINTS)
    for name in names if warm else []:
        method, path = ENDPOINTS[name]
        drive(stack, method, path, f"warm{names.index(name)}e-", 1.0)
    loads: dict[str, list[Load]] = {name: [] for name in names}
    for run in range(runs):
        for name in names[run % len(names) :] + names[: run % len(names)]:
            method, path = ENDPOINTS[name]
            load = drive(stack, method, path, f"r{run}e{names.index(name)}-", seconds)
            if load.errors > 0.01 * max(load.requests, 1):
                raise RuntimeError(f"{name}: {load.errors} of {load.requests} requests failed")
            loads[name].append(load)
    return loads


def run(smoke: bool) -> dict[str, Any]:
    """Measure the endpoints side by side on SQLite (and PostgreSQL), then memory; judge."""
    load = common.load_average()
    runs, seconds = (SMOKE_RUNS, SMOKE_SECONDS) if smoke else (FULL_RUNS, FULL_SECONDS)
    backends = ["SQLite"]
    if not smoke and common.postgres_version() is not None:
        backends.append("PostgreSQL")  # the production setting; skipped in the smoke run
    result: dict[str, Any] = {"metrics": {}, "goals": [], "notes": {}, "tables": []}
    result["metrics"]["server"] = "gunicorn, 2 workers x 4 threads (as `feedback run`)"
    for backend in backends:
        with (
            tempfile.TemporaryDirectory(prefix="feedback-bench-systems-") as folder,
            database(backend, Path(folder)) as url,
        ):
            measured = measure_backend(Path(folder), url, runs, seconds)
        judge(backend, *measured, result)
    client = "wrk (1 thread)" if common.wrk_path() else "a bounded Python client (no wrk)"
    return {
        "name": "systems",
        "machine_note": f"{common.machine_note(load)}; load from {client}, "
        f"{CONNECTIONS} connections, {seconds:g}s per endpoint per run",
        "runs": runs,
        **result,
    }


@contextlib.contextmanager
def database(backend: str, folder: Path) -> Iterator[str]:
    """A fresh database: a file in `folder`, or a new PostgreSQL database dropped afterwards."""
    if backend == "SQLite":
        yield f"sqlite:///{folder / 'instance' / 'feedback.db'}"
        return
    import psycopg

    base, name = common.postgres_url(), f"feedback_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(base)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure_backend(
    folder: Path, url: str, runs: int, seconds: float
) -> tuple[dict[str, list[Load]], dict[str, Any]]:
    """Start the stack on this database, load it, retrain, read memory; stop it."""
    stack = Stack(folder, url)
    try:
        stack.start()
        loads = measure(stack, runs, seconds, warm=runs > 1)
        facts: dict[str, Any] = {
            "items stored by the measured ingest runs": stack.stored("r"),
            "ingest requests counted by the client": sum(
                v.requests for v in loads["single-item ingest"]
            ),
            "retrain on the worker after the loads": stack.retrain(),
            **database_work(stack, COUNTED_REQUESTS),
        }
        facts.update({f"peak RSS MiB, {k}": v for k, v in stack.peak_rss().items()})
        return loads, facts
    finally:
        stack.stop()


def database_work(stack: Stack, requests: int) -> dict[str, float]:
    """Count what one single-item ingest asks of the database, in-process (test client).

    SQL statements are those SQLAlchemy executes: on PostgreSQL the item insert goes to the
    driver directly and is not among them. Commits are write transactions.
    """
    client = create_app(stack.settings, stack.db).test_client()
    counts: Counter[str] = Counter()
    hooks = {
        (stack.db.engine, "before_cursor_execute"): "SQL statements",
        (stack.db.engine.pool, "checkout"): "connection checkouts",
        (stack.db.engine, "commit"): "commits",
    }
    listeners = {key: _counter(counts, name) for key, name in hooks.items()}
    for (target, name), listener in listeners.items():
        event.listen(target, name, listener)
    try:
        for index in range(requests):
            body = json.loads(stack.body() % ("counted-", index))
            response = client.post(
                f"/api/v1/projects/{SLUG}/predictions",
                json=body,
                headers={"Authorization": f"Bearer {stack.token}"},
            )
            if response.status_code != 200:
                raise RuntimeError(f"a counted ingest failed: {response.get_data(as_text=True)}")
    finally:
        for (target, name), listener in listeners.items():
            event.remove(target, name, listener)
    return {f"per single-item ingest: {name}": counts[name] / requests for name in hooks.values()}


def _counter(counts: Counter[str], name: str) -> Any:
    return lambda *_: counts.update([name])


def judge(
    backend: str, loads: dict[str, list[Load]], facts: dict[str, Any], result: dict[str, Any]
) -> None:
    """Add one backend's metrics, goal and (if not met) the reason to `result`."""
    ratios = [
        ingest.rps / noop.rps
        for ingest, noop in zip(loads["single-item ingest"], loads["no-op"], strict=True)
    ]
    metrics = result["metrics"]
    for name, values in loads.items():
        metrics[f"{backend}, {name}: requests/s"] = common.summary(v.rps for v in values)
        metrics[f"{backend}, {name}: p50 ms"] = common.summary(v.p50_ms for v in values)
        metrics[f"{backend}, {name}: p99 ms"] = common.summary(v.p99_ms for v in values)
    metrics[f"{backend}, ingest ÷ no-op requests/s, per run"] = common.summary(ratios)
    result["tables"].append(
        {
            "title": f"{backend}: {CONNECTIONS} connections, same body and token everywhere",
            "columns": ["endpoint", "requests/s", "p50 ms", "p99 ms"],
            "rows": [
                [
                    name,
                    common.summary(v.rps for v in values),
                    common.summary(v.p50_ms for v in values),
                    common.summary(v.p99_ms for v in values),
                ]
                for name, values in loads.items()
            ],
        }
    )
    metrics.update({f"{backend}, {k}": v for k, v in facts.items()})
    ratio = common.summary(ratios)["median"]
    text = f"single-item ingest ÷ no-op requests/s ({backend}, same server)"
    result["goals"].append(common.at_least(text, ratio, 0.5))
    if not result["goals"][-1]["met"]:
        result["notes"][text] = explain(backend, loads, ratio)


def explain(backend: str, loads: dict[str, list[Load]], ratio: float | None) -> str:
    """Say where an ingest request's time goes, from the three endpoints' medians."""

    def p50(name: str) -> float:
        return float(np.median([v.p50_ms for v in loads[name]]))

    def rps(name: str) -> float:
        return float(np.median([v.rps for v in loads[name]]))

    noop, read, ingest = p50("no-op"), p50("authenticated read"), p50("single-item ingest")
    return (
        f"A single-item ingest served {rps('single-item ingest'):.0f} requests/s against "
        f"{rps('no-op'):.0f} for the no-op (ratio {ratio or 0:.2f}). At the median, the no-op "
        f"took {noop:.1f} ms, an authenticated read (token lookup plus one read) "
        f"{read:.1f} ms, and the ingest {ingest:.1f} ms: about {read - noop:.1f} ms go to "
        f"the bearer-token check and a read, {ingest - read:.1f} ms to validating, scoring "
        "and the write transaction"
        + (
            " (SQLite takes one writer at a time across both workers)."
            if backend == "SQLite"
            else "."
        )
    )


if __name__ == "__main__":
    print(json.dumps(run("--smoke" in sys.argv[1:]), indent=2))
