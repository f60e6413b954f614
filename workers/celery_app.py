"""Build the Celery app from settings; nothing connects at import."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery

from feedback.config import Settings
from workers import tasks

TRAINING_QUEUE = "training"
DEFAULT_QUEUE = "feedback"


def make_celery(settings: Settings) -> Celery:
    """Configure Celery for the embedded transport or Redis, with the tasks registered."""
    app = Celery("feedback", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,  # state lives in the database, not a result backend
        task_default_queue=DEFAULT_QUEUE,
        task_routes={
            "workers.tasks.retrain": {"queue": TRAINING_QUEUE},
            "workers.tasks.rescore": {"queue": TRAINING_QUEUE},
        },
        task_acks_late=True,  # a task lost with its worker is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # one long training task at a time per process
        worker_max_tasks_per_child=50,  # bound memory growth from many fitted models
        task_soft_time_limit=settings.retrain_soft_time_limit,
        task_time_limit=settings.retrain_soft_time_limit + 120,
        worker_hijack_root_logger=False,
        beat_schedule={
            "tick": {
                "task": "workers.tasks.tick",
                "schedule": timedelta(seconds=settings.tick_seconds),
            }
        },
        timezone="UTC",
    )
    app.feedback_settings = settings  # type: ignore[attr-defined]
    tasks.register(app)
    return app


def _transport_options(settings: Settings) -> dict[str, Any]:
    if not settings.broker_url.startswith("filesystem://"):
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
    }
