"""Tasks take ids, re-check the world in the database, and are safe to run twice."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import celeryd_after_setup, worker_process_init

from feedback.config import Settings
from feedback.db.engine import Database, make_database
from feedback.heap import freeze_startup_heap
from feedback.services import deferred, idempotency, models, outbox, retrain, webhooks

log = logging.getLogger(__name__)
IDEMPOTENCY_KEEP_SECONDS = 86_400
OUTBOX_KEEP_SECONDS = 7 * 86_400  # a week of handed-over messages, for looking into
_databases: dict[int, Database] = {}


def database(app: Celery) -> Database:
    """This process's database handle (engines are never shared across a fork)."""
    pid = os.getpid()
    if pid not in _databases:
        settings: Settings = app.feedback_settings  # type: ignore[attr-defined]
        _databases[pid] = make_database(settings.database_url)
    return _databases[pid]


@celeryd_after_setup.connect
def _before_fork(**_: Any) -> None:
    """Freeze the worker's startup heap before the pool forks (see `freeze_startup_heap`).

    Sent once the worker is set up (logging included) and before its pool starts.
    """
    log.info("froze %d startup objects before forking the pool", freeze_startup_heap())


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """Drop connections inherited from the parent process."""
    for pid, db in list(_databases.items()):
        if pid != os.getpid():
            db.engine.dispose(close=False)
            del _databases[pid]


def relay_outbox(app: Celery) -> int:
    """Hand the due outbox messages to the broker; return how many were handed over.

    At least once: a message is marked only after it was sent, so a crash in between sends
    it again, and every task re-checks the database (a second retrain or re-score of the same
    run does nothing new; a webhook event is delivered by its outbox row).
    """
    db = database(app)
    sent = []
    for message in outbox.pending(db):
        task = KINDS.get(message.kind)
        if task is not None:
            kwargs = message.payload
            if message.kind in webhooks.KINDS:  # an event is delivered by its outbox row
                kwargs = {**kwargs, "outbox_id": message.id}
            app.send_task(task, kwargs=kwargs)
        sent.append(message.id)
    outbox.mark_dispatched(db, sent)
    return len(sent)


def register(app: Celery) -> None:
    """Define the tasks on this app (explicit app, module-namespaced names)."""

    @app.task(name="workers.tasks.tick", ignore_result=True)
    def tick() -> int:
        """Request due retrains, then re-queue deferred items that fit; return how many moved.

        The retrain requests it writes leave with the outbox, which the beat process hands
        to the broker between ticks (`relay_outbox`).
        """
        db = database(app)
        retrain.schedule_due(db, app.feedback_settings)  # type: ignore[attr-defined]
        return deferred.requeue_deferred(db)

    @app.task(name="workers.tasks.housekeeping", ignore_result=True)
    def housekeeping() -> int:
        """Forget answered Idempotency-Keys after a day (clients retry within minutes) and
        handed-over outbox messages after a week; return how many rows went."""
        db = database(app)
        keys = idempotency.purge(db, IDEMPOTENCY_KEEP_SECONDS)
        return keys + outbox.purge(db, OUTBOX_KEEP_SECONDS)

    @app.task(name="workers.tasks.retrain", ignore_result=True, acks_late=True)
    def run_retrain(run_id: int) -> str:
        """Run one retrain (a second delivery of the same run does nothing)."""
        settings: Settings = app.feedback_settings  # type: ignore[attr-defined]
        status = retrain.execute_retrain(database(app), settings, run_id)
        log.info("retrain run %s ended %s", run_id, status)
        return status

    @app.task(name="workers.tasks.rescore", ignore_result=True, acks_late=True)
    def rescore(project_id: int, run_id: int | None = None) -> int:
        """Re-score the waiting queue with the project's champion (progress on the run)."""
        return models.rescore_queue(database(app), project_id, run_id)

    for kind in webhooks.KINDS:
        _register_webhook(app, kind)


def _register_webhook(app: Celery, kind: str) -> None:
    """Define the task that delivers one kind of webhook event (one attempt per message).

    A failed attempt puts the event back into the outbox with its `next_attempt_at`; beat
    sends it again once that time has come, so no broker holds long countdowns.
    """
    name = KINDS[kind]

    @app.task(name=name, ignore_result=True, acks_late=True, soft_time_limit=60, time_limit=90)
    def deliver_webhook(outbox_id: int | None = None, **payload: Any) -> str:
        """POST the event to the project's webhook; a failure is retried from the outbox."""
        settings: Settings = app.feedback_settings  # type: ignore[attr-defined]
        result = webhooks.deliver(database(app), settings, kind, payload, outbox_id)
        if result.error and result.outcome != "skipped":
            log.warning("webhook %s %s: %s", result.outbox_id, result.outcome, result.error)
        return result.outcome


KINDS = {
    "retrain": "workers.tasks.retrain",
    "rescore": "workers.tasks.rescore",
    "label_decided": "workers.tasks.webhook_label_decided",
    "promoted": "workers.tasks.webhook_promoted",
}
