"""Build the Celery app from settings; nothing connects at import.

Every setting below is chosen on purpose; docs/retraining.md explains each one. In short:
a training task is acknowledged only after it ends (a worker that dies loses nothing), a
worker takes one message at a time, every task has soft and hard time limits, pool
processes are replaced regularly, and the database (not the broker) decides whether a run
still needs doing, so a redelivered or duplicated message is harmless.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery

from feedback.config import Settings
from workers import tasks

TRAINING_QUEUE = "training"
DEFAULT_QUEUE = "feedback"
TICK_SOFT_LIMIT = 60  # a tick is a few queries; one stuck on a lock must not block the next
# Fitted models fragment memory: recycle pool processes regularly. Every beat tick counts as
# a task too, so this is not 20: at 20 a process lived 10 s at a 0.5 s tick (100 s at 5 s)
# and each retrain met a cold one (champion not cached, statements not compiled). 1,000
# is ~80 minutes at the default tick; the memory limit below still replaces a grown one.
MAX_TASKS_PER_CHILD = 1000
MAX_MEMORY_PER_CHILD_KIB = 2_000_000  # ...and replace one that grew past ~2 GB after its task
# An idle embedded worker lists its queue folders this often: a message waits half of it on
# average (beat hands a retrain straight to the queue); a listing costs ~0.1 ms.
FILESYSTEM_POLL_SECONDS = 0.05


def make_celery(settings: Settings) -> Celery:
    """Configure Celery for the embedded transport or Redis, with the tasks registered."""
    app = Celery("feedback", broker=settings.broker_url, set_as_current=False)
    hard_limit = settings.retrain_soft_time_limit + 120
    app.conf.update(
        broker_transport=_transport(settings),
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,  # state lives in the database, not a result backend
        task_default_queue=DEFAULT_QUEUE,
        task_routes={
            "workers.tasks.retrain": {"queue": TRAINING_QUEUE},
            "workers.tasks.rescore": {"queue": TRAINING_QUEUE},
        },
        task_acks_late=True,  # acknowledged when the task ends, so a lost task is redelivered
        task_reject_on_worker_lost=True,  # ...also when its pool process was killed
        task_acks_on_failure_or_timeout=True,  # a task that raised recorded its failure itself
        worker_prefetch_multiplier=1,  # one long training task at a time per process
        worker_max_tasks_per_child=MAX_TASKS_PER_CHILD,
        worker_max_memory_per_child=MAX_MEMORY_PER_CHILD_KIB,
        worker_cancel_long_running_tasks_on_connection_loss=True,  # the run is fenced anyway
        task_soft_time_limit=settings.retrain_soft_time_limit,  # raises inside the task
        task_time_limit=hard_limit,  # kills the pool process; the tick retries the run
        task_annotations={
            "workers.tasks.tick": {
                "soft_time_limit": TICK_SOFT_LIMIT,
                "time_limit": TICK_SOFT_LIMIT + 30,
            }
        },
        worker_hijack_root_logger=False,
        beat_scheduler="workers.beat:OutboxBeat",  # also hands the outbox to the broker
        beat_schedule={
            "tick": {
                "task": "workers.tasks.tick",
                "schedule": timedelta(seconds=settings.tick_seconds),
                # a tick nobody ran in time is dropped: the next one does the same work
                "options": {"expires": max(settings.tick_seconds * 2, 1.0)},
            },
            "housekeeping": {"task": "workers.tasks.housekeeping", "schedule": timedelta(hours=1)},
        },
        timezone="UTC",
    )
    app.feedback_settings = settings  # type: ignore[attr-defined]
    tasks.register(app)
    return app


def _transport(settings: Settings) -> str | None:
    """The embedded broker uses kombu's filesystem transport with an atomic put."""
    if settings.broker_url.startswith("filesystem://"):
        return "workers.fs_transport:Transport"
    return None


def _transport_options(settings: Settings) -> dict[str, Any]:
    if not settings.broker_url.startswith("filesystem://"):
        # Redis redelivers an unacknowledged message after this long: it must exceed the
        # longest task (the hard time limit), or a healthy run would be delivered twice.
        return {"visibility_timeout": settings.retrain_soft_time_limit + 600}
    folder = settings.broker_folder
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        "control_folder": str(folder / "control"),
        "polling_interval": FILESYSTEM_POLL_SECONDS,
    }
