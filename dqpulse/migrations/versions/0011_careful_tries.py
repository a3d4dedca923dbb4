"""How many workers began counting a record alone in a careful count (dqpulse.ingest.careful):
a record is dead-lettered as ``killed_worker`` only once two workers died counting it
alone, so a worker killed by something else in those few seconds costs no record

Revision ID: 0011
Revises: 0010
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partition_checkpoints") as batch:
        batch.add_column(sa.Column("careful_tries", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("partition_checkpoints") as batch:
        batch.drop_column("careful_tries")
