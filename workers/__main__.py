"""`python -m workers worker|beat [celery options]`: start Celery with settings from the env."""

from __future__ import annotations

import sys

from feedback.config import Settings
from workers.celery_app import DEFAULT_QUEUE, TRAINING_QUEUE, make_celery


def main(argv: list[str]) -> None:
    settings = Settings.from_env()
    app = make_celery(settings)
    command, *rest = argv or ["worker"]
    if command == "worker":
        app.worker_main(
            ["worker", "--loglevel=INFO", f"--queues={DEFAULT_QUEUE},{TRAINING_QUEUE}", *rest]
        )
    elif command == "beat":
        schedule = str(settings.instance_path / "celerybeat-schedule")
        app.start(["beat", "--loglevel=INFO", f"--schedule={schedule}", *rest])
    else:
        sys.exit(f"usage: python -m workers worker|beat [celery options], not {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
