"""The pure core: plain functions over arrays and small dataclasses.

Nothing here imports Flask, SQLAlchemy, Celery or Redis, so it is tested without a database.
"""
