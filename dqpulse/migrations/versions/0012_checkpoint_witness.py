"""A checkpoint names one record it counted (its offset and a hash of it), so that a worker
restoring it can tell the log it continues from one that replaced it: a topic deleted and
created again that already holds more records than the checkpoint's offset
(dqpulse.ingest.witness)

Revision ID: 0012
Revises: 0011
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partition_checkpoints") as batch:
        batch.add_column(sa.Column("witness_offset", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("witness_hash", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("partition_checkpoints") as batch:
        batch.drop_column("witness_hash")
        batch.drop_column("witness_offset")
