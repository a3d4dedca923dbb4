"""Finalize passes begun at a window without committing past it, counted in the database
so that a pass whose process dies (killed, out of memory, a crash in native code) counts
across restarts (dqpulse.finalize.failures); and the restores of each partition checkpoint
on assignment, so that workers that die before their next checkpoint show

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_partitions") as batch:
        batch.add_column(sa.Column("finalize_try_window", sa.Float(), nullable=True))
        batch.add_column(sa.Column("finalize_tries", sa.Integer(), nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("partition_checkpoints") as batch:
        batch.add_column(sa.Column("restores", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("partition_checkpoints") as batch:
        batch.drop_column("restores")
    with op.batch_alter_table("dataset_partitions") as batch:
        batch.drop_column("finalize_tries")
        batch.drop_column("finalize_try_window")
