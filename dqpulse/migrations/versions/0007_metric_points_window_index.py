"""metric_points: index (dataset, window_start) for reading one window of a dataset

The Prometheus exposition reads each dataset's newest window at scrape time; without this
index that read walks every series of the dataset (one probe per series).

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metric_points", schema=None) as batch_op:
        batch_op.create_index("ix_metric_points_window", ["dataset", "window_start"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("metric_points", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_points_window")
