"""Items get a random key drawn by the database, and an index to walk the queue by it.

A claim served as a random pick takes the first free queued item at or after a uniform draw in
the order of `random_key` (`ix_items_random`), so random picks are uniform over items and each
one stays a single ordered index lookup, however long the queue.

The default is evaluated per row, so existing rows get their own draws: PostgreSQL rewrites the
table with `random()`; SQLite cannot add a column with a non-constant default, so the batch
operation recreates the table and the copy draws a key for every row.

Revision ID: 0005_items_random_key
Revises: 0004_queue_indexes
Create Date: 2026-11-23 02:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005_items_random_key'
down_revision = '0004_queue_indexes'
branch_labels = None
depends_on = None

DRAW = {
    'postgresql': 'random()',
    'sqlite': '((random() & 9007199254740991) / 9007199254740992.0)',
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    recreate = 'always' if dialect == 'sqlite' else 'auto'
    with op.batch_alter_table('items', schema=None, recreate=recreate) as batch_op:
        batch_op.add_column(sa.Column('random_key', sa.Float(), server_default=sa.text(DRAW[dialect]), nullable=False))
        batch_op.create_index('ix_items_random', ['project_id', 'status', 'random_key', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_random')
        batch_op.drop_column('random_key')
