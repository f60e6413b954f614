"""A partial index over deferred items, so re-queueing them when room frees is one lookup.

Items a full queue deferred (`queue_full = 'defer'`) are stored as auto with `deferred` set;
the beat tick moves the most uncertain of them back into the review queue as soon as it has
room. The index holds only those rows, most projects' auto items stay out of it.

Revision ID: 0006_items_deferred_index
Revises: 0005_items_random_key
Create Date: 2026-11-23 03:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006_items_deferred_index'
down_revision = '0005_items_random_key'
branch_labels = None
depends_on = None

WAITING = "deferred AND status = 'auto'"


def upgrade() -> None:
    op.create_index(
        'ix_items_deferred',
        'items',
        ['project_id', 'uncertainty'],
        unique=False,
        sqlite_where=sa.text(WAITING),
        postgresql_where=sa.text(WAITING),
    )


def downgrade() -> None:
    op.drop_index('ix_items_deferred', table_name='items')
