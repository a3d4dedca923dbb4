"""The datasets each incident impacts (one incident per break), so that a dataset lists
and counts the incidents of an upstream break that hit it; filled from the incidents'
``details["impacts"]``

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade() -> None:
    table = op.create_table(
        "incident_impacts",
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], ondelete="CASCADE",
                                name="fk_incident_impacts_incident_id_incidents"),
        sa.PrimaryKeyConstraint("incident_id", "dataset", name="pk_incident_impacts"),
    )
    op.create_index("ix_incident_impacts_dataset", "incident_impacts", ["dataset"])
    incidents = sa.table("incidents", sa.column("id", sa.BigInteger()),
                         sa.column("details", sa.JSON()))
    conn = op.get_bind()
    last = 0
    while True:  # in batches: details are read in Python (JSON on Postgres and SQLite)
        rows = conn.execute(sa.select(incidents.c.id, incidents.c.details)
                            .where(incidents.c.id > last).order_by(incidents.c.id)
                            .limit(_BATCH)).all()
        if not rows:
            break
        last = int(rows[-1][0])
        impacts = [{"incident_id": int(incident_id), "dataset": name}
                   for incident_id, details in rows
                   for name in sorted({str(i["dataset"]) for i in
                                       (details or {}).get("impacts") or []
                                       if isinstance(i, dict) and i.get("dataset")})]
        if impacts:
            op.bulk_insert(table, impacts)


def downgrade() -> None:
    op.drop_index("ix_incident_impacts_dataset", table_name="incident_impacts")
    op.drop_table("incident_impacts")
