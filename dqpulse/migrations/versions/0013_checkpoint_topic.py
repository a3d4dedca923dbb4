"""A checkpoint names the topic its offsets are positions in, so that a dataset moved to
another topic (its ``topic`` changed by ``dqpulse apply``) is read from the new topic's
start instead of being taken for the old topic deleted and recreated
(dqpulse.ingest.assignment)

Revision ID: 0013
Revises: 0012
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partition_checkpoints") as batch:
        batch.add_column(sa.Column("topic", sa.String(249), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("partition_checkpoints") as batch:
        batch.drop_column("topic")
