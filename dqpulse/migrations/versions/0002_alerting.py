"""alerting: incident owner, window span, notification sequence, flapping; outbox chain index

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("first_window_start", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("last_window_end", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("event_seq", sa.Integer(), server_default="0",
                                      nullable=False))
        batch_op.add_column(sa.Column("flapping", sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_incident", ["incident_id"], unique=False)
    with op.batch_alter_table("incident_events", schema=None) as batch_op:
        batch_op.create_index("ix_incident_events_incident", ["incident_id"], unique=False)
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_chain", ["incident_id", "channel", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_chain")
    with op.batch_alter_table("incident_events", schema=None) as batch_op:
        batch_op.drop_index("ix_incident_events_incident")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_incident")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("flapping")
        batch_op.drop_column("event_seq")
        batch_op.drop_column("last_window_end")
        batch_op.drop_column("first_window_start")
        batch_op.drop_column("owner")
