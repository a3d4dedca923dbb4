"""OpenLineage both ways: received run events (job failures as root-cause suspects) and
the outbox of finalized windows to emit

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "openlineage_runs",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("job", sa.String(length=300), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=20), nullable=False),
        sa.Column("event_time", sa.Float(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_openlineage_runs"),
        sa.UniqueConstraint("job", "run_id", "event_type", name="uq_openlineage_run_event"),
    )
    op.create_index("ix_openlineage_runs_type_time", "openlineage_runs",
                    ["event_type", "event_time"])
    op.create_table(
        "openlineage_outbox",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_openlineage_outbox"),
        sa.UniqueConstraint("dataset", "window_start", name="uq_openlineage_outbox_window"),
    )
    op.create_index("ix_openlineage_outbox_due", "openlineage_outbox",
                    ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_openlineage_outbox_due", table_name="openlineage_outbox")
    op.drop_table("openlineage_outbox")
    op.drop_index("ix_openlineage_runs_type_time", table_name="openlineage_runs")
    op.drop_table("openlineage_runs")
