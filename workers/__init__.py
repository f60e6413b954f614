"""Celery: the app factory and the tasks (thin adapters over feedback.services)."""
