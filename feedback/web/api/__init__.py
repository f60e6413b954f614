"""The JSON API (`/api/v1`): bearer tokens, or a session plus its CSRF token."""

from __future__ import annotations

from flask import Blueprint

from feedback.web.api import docs, labels, models, predictions, queue

BLUEPRINTS: tuple[Blueprint, ...] = (predictions.bp, models.bp, queue.bp, labels.bp, docs.bp)
