"""An index to walk a project's queue in id order: re-scoring reads it batch by batch.

Without it SQLite reached for another (project_id, status, ...) index and sorted the whole
queue for every batch, and batches in another order touched every page of the table each.

Revision ID: 0007_items_status_id_index
Revises: 0006_items_deferred_index
Create Date: 2026-11-23 03:45:00.000000
"""

from __future__ import annotations

from alembic import op


revision = '0007_items_status_id_index'
down_revision = '0006_items_deferred_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_items_status_id', 'items', ['project_id', 'status', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_items_status_id', table_name='items')
