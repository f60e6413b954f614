"""Webhook retries wait in the outbox: `next_attempt_at` says when the tick may send them.

A failed delivery used to be re-sent with a Celery countdown of up to five minutes, held by
the broker and lost with it; now the outbox row itself carries the time of its next attempt.

Revision ID: 0008_outbox_next_attempt
Revises: 0007_items_status_id_index
Create Date: 2026-11-23 03:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0008_outbox_next_attempt'
down_revision = '0007_items_status_id_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_attempt_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('next_attempt_at')
