"""Where a worker counting a partition carefully was when it died: the offset range it
was counting, or the one record it was counting alone (dqpulse.ingest.careful), so that the
record that kills workers as it is read is found and dead-lettered, not read again after
every restart

Revision ID: 0010
Revises: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partition_checkpoints") as batch:
        batch.add_column(sa.Column("careful_first", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("careful_last", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("careful_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("partition_checkpoints") as batch:
        batch.drop_column("careful_at")
        batch.drop_column("careful_last")
        batch.drop_column("careful_first")
