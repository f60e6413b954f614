"""Queue policies, gold items, corrections, lineage, idempotency keys, webhooks.

New NOT NULL columns carry server defaults so existing rows migrate.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 23:13:49.088693
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('idempotency_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scope', sa.String(length=100), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('request_digest', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_keys')),
    sa.UniqueConstraint('scope', 'key', name='uq_idempotency_keys_scope_key')
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('previous_label', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('corrected_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('corrected_at', sa.DateTime(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_decisions_corrected_by_users'), 'users', ['corrected_by'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gold_label', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('deferred', sa.Boolean(), nullable=False, server_default=sa.false()))

    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('routing', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('incremental', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('parent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_model_versions_parent_id_model_versions'), 'model_versions', ['parent_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('last_error', sa.Text(), nullable=True))

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trusted_types', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('max_queue', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('queue_full', sa.String(length=8), nullable=False, server_default='reject'))
        batch_op.add_column(sa.Column('random_share', sa.Float(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('gold_rate', sa.Float(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('incremental', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('full_refit_every', sa.Integer(), nullable=False, server_default='5'))
        batch_op.add_column(sa.Column('webhook_url', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('webhook_secret', sa.String(length=100), nullable=True))

    with op.batch_alter_table('retrain_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('report', sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('retrain_runs', schema=None) as batch_op:
        batch_op.drop_column('report')

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('webhook_secret')
        batch_op.drop_column('webhook_url')
        batch_op.drop_column('full_refit_every')
        batch_op.drop_column('incremental')
        batch_op.drop_column('gold_rate')
        batch_op.drop_column('random_share')
        batch_op.drop_column('queue_full')
        batch_op.drop_column('max_queue')
        batch_op.drop_column('trusted_types')

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('last_error')
        batch_op.drop_column('attempts')

    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_model_versions_parent_id_model_versions'), type_='foreignkey')
        batch_op.drop_column('parent_id')
        batch_op.drop_column('incremental')
        batch_op.drop_column('routing')

    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('deferred')
        batch_op.drop_column('gold_label')

    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_decisions_corrected_by_users'), type_='foreignkey')
        batch_op.drop_column('corrected_at')
        batch_op.drop_column('corrected_by')
        batch_op.drop_column('previous_label')

    op.drop_table('idempotency_keys')
