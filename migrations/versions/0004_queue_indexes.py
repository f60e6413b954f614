"""Queue indexes: the claim walks (project, status, priority, id); gold items by project.

`ix_items_queue` gains `id` so that `ORDER BY priority DESC, id DESC` is one backward index
scan on PostgreSQL as well as SQLite (where the rowid is implicit), and the claim's cost
stays flat as the queue grows. `ix_items_gold` is partial: only gold items are in it.

Revision ID: 0004_queue_indexes
Revises: 0002
Create Date: 2026-11-22 23:22:16.017313
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004_queue_indexes'
down_revision = '0002'
branch_labels = None
depends_on = None

GOLD = sa.text('gold_label IS NOT NULL')


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_queue')
        batch_op.create_index('ix_items_queue', ['project_id', 'status', 'priority', 'id'], unique=False)
        batch_op.create_index('ix_items_gold', ['project_id'], unique=False, sqlite_where=GOLD, postgresql_where=GOLD)


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_gold', sqlite_where=GOLD, postgresql_where=GOLD)
        batch_op.drop_index('ix_items_queue')
        batch_op.create_index('ix_items_queue', ['project_id', 'status', 'priority'], unique=False)
