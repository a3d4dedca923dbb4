"""detector_states: drop the never-read ``detector`` column (the state names its detector)

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("detector_states", schema=None) as batch_op:
        batch_op.drop_column("detector")


def downgrade() -> None:
    with op.batch_alter_table("detector_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("detector", sa.String(length=100), server_default="",
                                      nullable=False))
