"""Real worker and beat processes for the lifecycle tests, with test-only fault hooks.

`python -m tests.integration._workers_util worker [celery options]` starts exactly what
`python -m workers worker` starts (it calls `workers.__main__.main`), after two test-only
changes read from the environment here, never by the application:

- FEEDBACK_TEST_SETTINGS: JSON of Settings fields to override (e.g. `extra` with short
  liveness timings, `retrain_max_attempts`), since `Settings.from_env` has no variables
  for them;
- FEEDBACK_TEST_PAUSE_AT / FEEDBACK_TEST_CRASH_AT: a retrain stage. Once the attempt has
  recorded that it entered the stage ("fit": before fitting; "evaluate": after fitting;
  "decide": before the file is saved and the champion swapped), it writes a marker file
  into FEEDBACK_TEST_MARKERS, then sleeps (so the test can SIGKILL the worker there) or
  SIGKILLs its own process (a pool process dying the way an out-of-memory kill would).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.processes import Process, clean_environment, redis_database, start

REDIS_TEST_DB = 11  # ours alone; flushed before and after, never DB 0
FAST_LIVENESS = {
    "retrain_heartbeat_seconds": "0.3",
    "retrain_stale_seconds": "3",
    "retrain_redispatch_seconds": "20",
}


@contextmanager
def redis_db(base_url: str) -> Iterator[str]:
    """Our Redis database, empty, held under a file lock so two sessions never share it."""
    with redis_database(base_url, REDIS_TEST_DB) as url:
        yield url


def environment(instance: Path, database_url: str, broker_url: str, **test: str) -> dict[str, str]:
    """The variables a worker or beat needs, plus test-only ones (FEEDBACK_TEST_*)."""
    return clean_environment(
        FEEDBACK_INSTANCE_PATH=str(instance),
        FEEDBACK_DATABASE_URL=database_url,
        FEEDBACK_BROKER_URL=broker_url,
        FEEDBACK_TICK_SECONDS="0.5",
        FEEDBACK_SECRET_KEY="test-secret-" + "x" * 40,
        **test,
    )


def start_worker(
    name: str,
    env: dict[str, str],
    logs: Path,
    concurrency: int = 1,
    settings: dict[str, Any] | None = None,
    pause_at: str = "",
    crash_at: str = "",
) -> Process:
    """A worker on both queues, through this module's test hooks."""
    test = {
        "FEEDBACK_TEST_SETTINGS": json.dumps(settings or {"extra": FAST_LIVENESS}),
        "FEEDBACK_TEST_PAUSE_AT": pause_at,
        "FEEDBACK_TEST_CRASH_AT": crash_at,
        "FEEDBACK_TEST_MARKERS": str(logs / "markers"),
    }
    argv = [sys.executable, "-m", "tests.integration._workers_util", "worker"]
    argv += [f"--concurrency={concurrency}", "--without-mingle", "--without-gossip"]
    argv += [f"--hostname={name}@%h"]
    return start(name, argv, {**env, **test}, logs)


def start_beat(name: str, env: dict[str, str], logs: Path) -> Process:
    """A real `python -m workers beat`, with its own schedule file."""
    argv = [sys.executable, "-m", "workers", "beat", f"--schedule={logs / name}.schedule"]
    return start(name, argv, env, logs)


def kill_group(process: Process) -> None:
    """SIGKILL the process and its pool children at once, as a crash or `kill -9` would."""
    os.killpg(process.pid, signal.SIGKILL)
    process.popen.wait()


def markers(logs: Path, prefix: str) -> list[str]:
    """Marker files the hooks wrote (e.g. "paused-", "crashed-")."""
    folder = logs / "markers"
    return sorted(p.name for p in folder.glob(f"{prefix}*")) if folder.exists() else []


def _install_hooks() -> None:
    """Wrap the stage recorder so an attempt pauses or dies on entering a stage."""
    from feedback.services import runs

    pause_at = os.environ.get("FEEDBACK_TEST_PAUSE_AT", "")
    crash_at = os.environ.get("FEEDBACK_TEST_CRASH_AT", "")
    folder = Path(os.environ.get("FEEDBACK_TEST_MARKERS", tempfile.gettempdir()))
    original = runs.record_stage

    def hooked(db: Any, started: Any, stage: str, **report: Any) -> None:
        original(db, started, stage, **report)  # the run shows the stage it dies in
        tag = f"{started.run_id}-{stage}-{started.attempt}"
        if stage in (pause_at, crash_at):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{'paused' if stage == pause_at else 'crashed'}-{tag}").touch()
            if stage == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)

    runs.record_stage = hooked  # type: ignore[assignment]


def _main(argv: list[str]) -> None:
    import workers.__main__ as entry
    from feedback.config import Settings

    overrides = json.loads(os.environ.get("FEEDBACK_TEST_SETTINGS", "{}"))
    settings = Settings.from_env().with_overrides(**overrides)

    class _Configured:
        @staticmethod
        def from_env() -> Settings:
            return settings

    entry.Settings = _Configured  # type: ignore[assignment,misc]
    _install_hooks()
    entry.main(argv)


if __name__ == "__main__":
    _main(sys.argv[1:])
