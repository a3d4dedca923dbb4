"""history at scale: metric_points partitioned by day (Postgres), metric_rollups (1 h, 1 d)

Postgres: the table is rebuilt as ``PARTITION BY RANGE (window_start)`` with a DEFAULT
partition and one partition per UTC day (the days that hold points, at most the newest
400, and yesterday to a week ahead); the points are copied over. The natural key
(dataset, metric, field, window_start) becomes the primary key (a partitioned table's key
must hold the partition key), so the ``id`` column goes. SQLite (the demo) gets the same
columns and keys in one plain table. Both: ``metric_rollups`` is created and backfilled
from the points.

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

DAY = 86_400
COLUMNS = ("dataset, metric, field, window_start, window_end, value, score, anomalous, "
           "explanation")


def _point_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=120), nullable=False),
        sa.Column("field", sa.String(length=500), server_default="", nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("window_end", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("anomalous", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("explanation", sa.JSON(), nullable=True),
    ]


def _create_days(bind: sa.Connection) -> None:
    """One partition per UTC day holding points (the newest 400), and yesterday to a
    week ahead; anything else lands in the DEFAULT partition until the retention job
    gives it a day of its own."""
    today = int(time.time() // DAY) * DAY
    days = {today + DAY * offset for offset in range(-1, 8)}
    days.update(int(row[0]) for row in bind.exec_driver_sql(
        f"SELECT DISTINCT floor(window_start / {DAY}) * {DAY} AS day FROM metric_points_old "
        "ORDER BY day DESC LIMIT 400"))
    for day in sorted(days):
        name = "metric_points_p" + datetime.fromtimestamp(day, UTC).strftime("%Y%m%d")
        bind.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF metric_points "
                             f"FOR VALUES FROM ({day}) TO ({day + DAY})")


_ROLLUP = """
INSERT INTO metric_rollups (dataset, metric, field, resolution, bucket_start, points,
    value_count, sum, min, max, last, last_at, score, anomalous, first_at, expected_low,
    expected_high)
SELECT g.dataset, g.metric, g.field, {res}, g.bucket, g.points, g.value_count, g.total,
       g.low, g.high, p.value, g.last_at, g.score, g.anomalous = 1, g.first_at,
       {band_low}, {band_high}
FROM (SELECT dataset, metric, field, {bucket} AS bucket, count(*) AS points,
             count(value) AS value_count, sum(value) AS total, min(value) AS low,
             max(value) AS high, max(window_start) AS last_at, max(score) AS score,
             max(CASE WHEN anomalous THEN 1 ELSE 0 END) AS anomalous,
             min(window_start) AS first_at
      FROM metric_points GROUP BY dataset, metric, field, {bucket}) g
JOIN metric_points p ON p.dataset = g.dataset AND p.metric = g.metric
     AND p.field = g.field AND p.window_start = g.last_at
JOIN metric_points f ON f.dataset = g.dataset AND f.metric = g.metric
     AND f.field = g.field AND f.window_start = g.first_at
"""


def _band(postgres: bool, key: str) -> str:
    if postgres:
        return (f"CASE WHEN json_typeof(f.explanation -> '{key}') = 'number' "
                f"THEN (f.explanation ->> '{key}')::float8 END")
    return (f"CASE WHEN json_type(f.explanation, '$.{key}') IN ('real', 'integer') "
            f"THEN json_extract(f.explanation, '$.{key}') END")


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.rename_table("metric_points", "metric_points_old")
    if postgres:  # index names are per schema: free the primary key's
        op.execute("ALTER INDEX pk_metric_points RENAME TO pk_metric_points_old")
    op.create_table(
        "metric_points", *_point_columns(),
        sa.PrimaryKeyConstraint("dataset", "metric", "field", "window_start",
                                name=op.f("pk_metric_points")),
        postgresql_partition_by="RANGE (window_start)")
    if postgres:
        op.execute("CREATE TABLE metric_points_default PARTITION OF metric_points DEFAULT")
        _create_days(bind)
    op.execute(f"INSERT INTO metric_points ({COLUMNS}) SELECT {COLUMNS} FROM metric_points_old")
    op.drop_table("metric_points_old")
    op.create_index("ix_metric_points_dataset_time", "metric_points",
                    ["dataset", "window_start"], unique=False)
    op.create_table(
        "metric_rollups",
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=120), nullable=False),
        sa.Column("field", sa.String(length=500), server_default="", nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("bucket_start", sa.Float(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("value_count", sa.Integer(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=True),
        sa.Column("min", sa.Float(), nullable=True),
        sa.Column("max", sa.Float(), nullable=True),
        sa.Column("last", sa.Float(), nullable=True),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("anomalous", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("first_at", sa.Float(), nullable=False),
        sa.Column("expected_low", sa.Float(), nullable=True),
        sa.Column("expected_high", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("dataset", "metric", "field", "resolution", "bucket_start",
                                name=op.f("pk_metric_rollups")))
    op.create_index("ix_metric_rollups_resolution_time", "metric_rollups",
                    ["resolution", "bucket_start"], unique=False)
    if postgres:  # statistics for the backfill's plan (the table is new)
        op.execute("ANALYZE metric_points")
    for res in (3600, DAY):
        bucket = (f"floor(window_start / {res}.0) * {res}.0" if postgres
                  else f"CAST(window_start / {res}.0 AS INTEGER) * {res}.0")
        op.execute(_ROLLUP.format(res=res, bucket=bucket,
                                  band_low=_band(postgres, "expected_low"),
                                  band_high=_band(postgres, "expected_high")))


def downgrade() -> None:
    op.drop_index("ix_metric_rollups_resolution_time", table_name="metric_rollups")
    op.drop_table("metric_rollups")
    op.create_table(
        "metric_points_old",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        *_point_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_metric_points_old"),
        sa.UniqueConstraint("dataset", "metric", "field", "window_start",
                            name="uq_metric_point_old"))
    op.execute(f"INSERT INTO metric_points_old ({COLUMNS}) SELECT {COLUMNS} "
               "FROM metric_points ORDER BY window_start")
    op.drop_table("metric_points")  # Postgres: the partitions go with it
    op.rename_table("metric_points_old", "metric_points")
    with op.batch_alter_table("metric_points", schema=None) as batch_op:
        batch_op.drop_constraint("uq_metric_point_old", type_="unique")
        batch_op.create_unique_constraint(
            "uq_metric_point", ["dataset", "metric", "field", "window_start"])
        batch_op.create_index("ix_metric_points_series",
                              ["dataset", "metric", "field", "window_start"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER INDEX pk_metric_points_old RENAME TO pk_metric_points")
