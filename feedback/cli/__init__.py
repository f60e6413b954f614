"""The `feedback` command: database, users, projects, tokens, retrains, and `run`.

`main` is the group; importing the modules below registers their commands on it.
"""

from __future__ import annotations

from feedback.cli import admin, models, projects
from feedback.cli.base import main

__all__ = ["admin", "main", "models", "projects"]
