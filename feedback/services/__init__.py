"""Use cases: one function each, owning its transaction. No Flask, no Celery here."""
