"""Real processes for integration tests: logs in files, bounded polling, certain cleanup."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
STOP_SECONDS = 30.0
T = TypeVar("T")


@dataclass
class Process:
    """A child started in its own process group, its output going to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def clean_environment(**values: str) -> dict[str, str]:
    """This environment without any FEEDBACK_* or PORT setting, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_") and k != "PORT"}
    env.update(PYTHONUNBUFFERED="1", **values)
    return env


def start(name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path) -> Process:
    """Start `argv` in a new session (so its whole group can be stopped) with output in a file."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
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
    return Process(name, popen, log)


def stop(process: Process, grace: float = STOP_SECONDS) -> None:
    """Ask the process to stop (SIGTERM), then kill what is left of its process group."""
    if process.alive():
        process.popen.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=grace)
    with suppress(ProcessLookupError, PermissionError):  # pool children, gunicorn workers
        os.killpg(process.pid, signal.SIGKILL)
    process.popen.wait()


@contextmanager
def supervised(processes: list[Process]) -> Iterator[list[Process]]:
    """Stop every process in `processes` at the end; on failure, print all their output."""
    failed = False
    try:
        yield processes
    except BaseException:
        failed = True
        raise
    finally:
        for process in processes:
            stop(process)
        if failed:
            for process in processes:
                print(f"\n----- output of {process.name} (exit {process.popen.returncode}) -----")
                print(process.output())


def wait_until(
    what: str,
    check: Callable[[], T | None],
    timeout: float,
    watch: Sequence[Process] = (),
    interval: float = 0.25,
) -> T:
    """Poll `check` until it returns a truthy value; fail if a watched process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for process in watch:
            if not process.alive():
                raise AssertionError(
                    f"{process.name} exited ({process.popen.returncode}) while waiting for {what}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pids_with_environment(name: str, value: str) -> dict[int, str]:
    """Running processes started with `name=value` in their environment, with their cmdline."""
    wanted = f"{name}={value}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                found[int(entry.name)] = cmdline.decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@contextmanager
def redis_database(base_url: str, number: int) -> Iterator[str]:
    """Redis database `number` (never 0), empty, under a file lock no other session shares."""
    import redis  # only the Redis-backed tests need the client

    url = urlunsplit(urlsplit(base_url)._replace(path=f"/{number}"))
    lock = Path(tempfile.gettempdir()) / f"feedback-test-redis-{number}.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        client = redis.Redis.from_url(url)
        client.flushdb()
        try:
            yield url
        finally:
            client.flushdb()
            client.close()
