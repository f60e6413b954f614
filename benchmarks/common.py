"""Shared helpers: machine facts, statistics, goals, HTTP, and the service's processes.

A benchmark module `benchmarks/<name>.py` exposes `run(smoke: bool) -> dict` returning
`{"name", "machine_note", "metrics", "goals", "runs"}` and optionally `"notes"` (goal -> why it
is not met) and `"plots"` (PNG file names it wrote into `output_dir()`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT_ENV = "FEEDBACK_BENCH_OUT"
MARKER_ENV = "BENCH_RUN_MARKER"  # inherited by every process a module starts (not FEEDBACK_*)
POSTGRES_ENV = "FEEDBACK_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
STOP_SECONDS = 20.0
T = TypeVar("T")


def output_dir() -> Path:
    """Where results and plots go: `benchmarks/results/`, or the folder the harness names."""
    folder = Path(os.environ.get(OUT_ENV) or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---------------------------------------------------------------- statistics and goals


def summary(values: Iterable[float | None], digits: int = 4) -> dict[str, Any]:
    """Median, min and max of the measured values (None counts as not measured)."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(kept), digits),
        "min": round(min(kept), digits),
        "max": round(max(kept), digits),
        "n": len(kept),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def goal(text: str, value: float | None, target: str, met: bool) -> dict[str, Any]:
    """One goal row; a value that could not be measured is None and never met."""
    return {
        "goal": text,
        "value": None if value is None else round(float(value), 4),
        "target": target,
        "met": bool(met and value is not None),
    }


def at_most(text: str, value: float | None, limit: float) -> dict[str, Any]:
    return goal(text, value, f"<= {limit:g}", value is not None and value <= limit)


def at_least(text: str, value: float | None, limit: float) -> dict[str, Any]:
    return goal(text, value, f">= {limit:g}", value is not None and value >= limit)


_CLOCK = time.monotonic()


def say(message: str) -> None:
    """Print a progress line with the seconds since this process started (goes to the log)."""
    print(f"[{time.monotonic() - _CLOCK:7.1f}s] {message}", flush=True)


def timed(action: Callable[[], T]) -> tuple[T, float]:
    """Run `action`; return its result and the wall-clock seconds it took."""
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


# ---------------------------------------------------------------- the machine


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"), float("nan"), float("nan"))


def machine_note(started_load: tuple[float, float, float]) -> str:
    """Say how busy the machine was around a measurement (others share these cores)."""
    cores = os.cpu_count() or 1
    before, after = started_load[0], load_average()[0]
    state = "quiet" if before < 0.5 * cores else "busy (other work was running)"
    return f"1-min load {before:.2f} before, {after:.2f} after, on {cores} cores: {state}"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def sqlite_facts() -> dict[str, Any]:
    """The SQLite library version and the pragmas the engine really sets on a connection."""
    from feedback.db.engine import make_engine

    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{folder}/probe.db")
        try:
            with engine.connect() as connection:
                pragmas = {
                    name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                    for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
                }
        finally:
            engine.dispose()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    level = pragmas["synchronous"]
    pragmas["synchronous"] = names.get(level, level) if isinstance(level, int) else level
    return {"version": sqlite3.sqlite_version, "pragmas": pragmas}


def postgres_url() -> str:
    return os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES


def postgres_version(url: str | None = None) -> str | None:
    """The PostgreSQL server's version, or None when it cannot be reached within 2 s."""
    import psycopg

    try:
        with psycopg.connect(url or postgres_url(), connect_timeout=2) as connection:
            row = connection.execute("SHOW server_version").fetchone()
            return None if row is None else str(row[0])
    except psycopg.Error:
        return None


def public_url(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def machine_facts() -> dict[str, Any]:
    """Everything BENCHMARKS.md says about the machine the numbers come from."""
    from importlib import metadata

    versions = {}
    for package in ("scikit-learn", "numpy", "sqlalchemy", "flask", "gunicorn", "celery"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    pg_url = postgres_url()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite_facts(),
        "postgresql": {"url": public_url(pg_url), "server_version": postgres_version(pg_url)},
        "packages": versions,
        "load_average": [round(x, 2) for x in load_average()],
        "wrk": wrk_path(),
    }


def wrk_path() -> str | None:
    from shutil import which

    return which("wrk")


# ---------------------------------------------------------------- processes


@dataclass
class Process:
    """A child started in its own session (so its whole group can be stopped), output in a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self, tail: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-tail:]


_started: list[Process] = []
_hurry = {"on": False}


def hurry() -> None:
    """From now on stop processes without a long grace period (the harness is stopping us)."""
    _hurry["on"] = True


def clean_env(**values: str) -> dict[str, str]:
    """This environment without FEEDBACK_* or PORT, plus `values` (and unbuffered output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_") and k != "PORT"}
    env.update(PYTHONUNBUFFERED="1", **values)
    return env


def start_process(name: str, argv: Sequence[str], env: Mapping[str, str], logs: Path) -> Process:
    """Start `argv` in a new session with stdout and stderr in `logs/<name>.log`."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process = Process(name, popen, log)
    _started.append(process)
    return process


def stop_process(process: Process, grace: float = STOP_SECONDS) -> None:
    """SIGTERM, wait up to `grace`, then SIGKILL whatever is left of its process group."""
    grace = min(grace, 1.0) if _hurry["on"] else grace
    if process.alive():
        with contextlib.suppress(ProcessLookupError):
            process.popen.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.popen.wait()
    if process in _started:
        _started.remove(process)


def stop_all_started() -> None:
    """Stop every process this module started and has not stopped yet (newest first)."""
    for process in reversed(list(_started)):
        stop_process(process, grace=5.0)


def wait_until(
    what: str,
    check: Callable[[], T | None],
    timeout: float,
    watch: Sequence[Process] = (),
    interval: float = 0.1,
) -> T:
    """Poll `check` until it returns a truthy value; fail if a watched process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for process in watch:
            if not process.alive():
                raise RuntimeError(
                    f"{process.name} exited ({process.popen.returncode}) while waiting for "
                    f"{what}:\n{process.output()}"
                )
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kill_marked(marker: str) -> list[int]:
    """SIGKILL every process whose environment carries `MARKER_ENV=marker`; return their ids.

    The harness gives each module's process a unique marker, which every server the module
    starts inherits; this ends exactly those, whatever became of the module.
    """
    wanted, killed = f"{MARKER_ENV}={marker}".encode(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode(
            errors="replace"
        )
    return ""


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set size so far (VmHWM), in MiB."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def feedback_command() -> list[str]:
    """The `feedback` CLI of this virtual environment."""
    script = Path(sys.executable).parent / "feedback"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from feedback.cli import main; main()"]


def service_env(instance: Path, port: int, tick_seconds: float, **extra: str) -> dict[str, str]:
    """The environment of a `feedback run` in `instance`, bound to 127.0.0.1:`port`."""
    return clean_env(
        FEEDBACK_INSTANCE_PATH=str(instance),
        FEEDBACK_DATABASE_URL=f"sqlite:///{instance / 'feedback.db'}",
        FEEDBACK_BROKER_URL="filesystem://",
        FEEDBACK_HOST="127.0.0.1",
        FEEDBACK_TICK_SECONDS=str(tick_seconds),
        PORT=str(port),
        **extra,
    )


# ---------------------------------------------------------------- HTTP


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Http:
    """A keep-alive JSON client for one server on loopback (one per thread)."""

    port: int
    host: str = "127.0.0.1"
    timeout: float = 120.0
    _connection: http.client.HTTPConnection | None = field(default=None, repr=False)

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in range(2):
            connection = self._connection or http.client.HTTPConnection(
                self.host, self.port, timeout=self.timeout
            )
            self._connection = connection
            try:
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # the server closed an idle keep-alive connection; ask again
                if attempt:
                    raise
                continue
            except (OSError, http.client.HTTPException):
                self.close()
                raise
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)
        raise AssertionError("unreachable")

    def expect(
        self, method: str, path: str, body: Any = None, token: str | None = None, status: int = 200
    ) -> Any:
        """Send a request that must answer `status`; return its JSON."""
        reply = self.request(method, path, body, token)
        if reply.status != status:
            raise RuntimeError(
                f"{method} {path} answered {reply.status}, not {status}: {reply.body[:500]!r}"
            )
        return reply.json()

    def up(self) -> bool:
        """Whether the service answers its health check."""
        try:
            return self.request("GET", "/healthz").status == 200
        except OSError:
            return False

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
