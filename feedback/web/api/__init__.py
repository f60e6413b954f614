"""The JSON API (`/api/v1`): bearer tokens, or a session plus its CSRF token."""

from __future__ import annotations

from flask import Blueprint

from feedback.web.api import models, predictions, queue

BLUEPRINTS: tuple[Blueprint, ...] = (predictions.bp, models.bp, queue.bp)
