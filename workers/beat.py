"""The beat scheduler: Celery's persistent one, which also hands the outbox to the broker.

A requested retrain, a re-score after a promotion and a webhook event are rows in the
outbox, written in the transaction that caused them (the web never talks to the broker).
The beat process looks for due rows every `FEEDBACK_DISPATCH_SECONDS` (0.05 s by default:
one indexed query) and sends them, so they leave within that time rather than at the next
tick (`FEEDBACK_TICK_SECONDS`, 5 s by default), which now only requests due retrains and
re-queues deferred items.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.beat import PersistentScheduler

from feedback.config import Settings
from workers import tasks

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 30.0  # while the database or the broker is down, look less often


class OutboxBeat(PersistentScheduler):
    """Send the schedule's due tasks, and the due outbox messages every dispatch interval."""

    _next_relay = 0.0
    _failures = 0

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Run one turn of beat; return how long to sleep before the next one."""
        interval: float = super().tick(*args, **kwargs)
        if time.monotonic() >= self._next_relay:
            self._relay()
        return max(0.0, min(interval, self._next_relay - time.monotonic()))

    def _relay(self) -> None:
        settings: Settings = self.app.feedback_settings  # type: ignore[attr-defined]
        wait = settings.dispatch_seconds
        try:
            sent = tasks.relay_outbox(self.app)
        except Exception:  # the database or the broker is away: beat keeps ticking
            self._failures += 1
            wait = min(MAX_BACKOFF_SECONDS, wait * 2**self._failures)
            log.exception("handing the outbox to the broker failed; next try in %.1f s", wait)
        else:
            self._failures = 0
            if sent:
                log.info("handed %d outbox message(s) to the broker", sent)
        self._next_relay = time.monotonic() + wait
