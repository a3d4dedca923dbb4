"""Reads for the Prometheus exposition of data-quality values (``services/exposition.py``).

Every read is bounded by the model (datasets) and served by an index: one row per dataset
for the progress, one probe per series for a dataset's newest window, one index range per
dataset for the active incidents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select, text

from dqpulse.store.incidents import ACTIVE_STATUSES
from dqpulse.store.tables import (
    dataset_partitions,
    datasets,
    incidents,
    metric_points,
    partition_checkpoints,
)


@dataclass(frozen=True, slots=True)
class DatasetProgress:
    name: str
    owner: str | None
    topic: str
    spec: dict[str, Any]
    finalized_until: float | None
    last_record_at: float | None


@dataclass(frozen=True, slots=True)
class LatestPoint:
    metric: str
    field: str
    value: float | None
    score: float | None


def get_progress(conn: Connection) -> list[DatasetProgress]:
    """Every dataset of the applied model with its finalized edge and newest record time."""
    last_record = (select(func.max(partition_checkpoints.c.last_record_at))
                   .where(partition_checkpoints.c.dataset == datasets.c.name)
                   .scalar_subquery())
    stmt = (select(datasets.c.name, datasets.c.owner, datasets.c.topic, datasets.c.spec,
                   dataset_partitions.c.finalized_until, last_record.label("last_record_at"))
            .select_from(datasets.outerjoin(dataset_partitions,
                                            dataset_partitions.c.dataset == datasets.c.name))
            .order_by(datasets.c.name))
    return [DatasetProgress(name=row.name, owner=row.owner, topic=row.topic,
                            spec=dict(row.spec or {}), finalized_until=row.finalized_until,
                            last_record_at=row.last_record_at)
            for row in conn.execute(stmt)]


def get_newest_window_start(conn: Connection, *, dataset: str) -> float | None:
    """Start of the dataset's newest window: every finalized window has a volume.records
    point, so this is one probe of the series index."""
    value = conn.execute(select(func.max(metric_points.c.window_start))
                         .where(metric_points.c.dataset == dataset,
                                metric_points.c.metric == "volume.records",
                                metric_points.c.field == "")).scalar()
    return None if value is None else float(value)


# Postgres has no loose index scan: walk the (metric, field) series of the dataset through
# the unique index, one probe per series, then one probe per series for the window's point.
_WINDOW_POINTS_PG = text("""
    WITH RECURSIVE series(metric, field) AS (
        (SELECT metric, field FROM metric_points WHERE dataset = :dataset
         ORDER BY metric, field LIMIT 1)
        UNION ALL
        SELECT next.metric, next.field FROM series, LATERAL (
            SELECT m.metric, m.field FROM metric_points m
            WHERE m.dataset = :dataset AND (m.metric, m.field) > (series.metric, series.field)
            ORDER BY m.metric, m.field LIMIT 1) AS next
    )
    SELECT s.metric, s.field, p.value, p.score FROM series s CROSS JOIN LATERAL (
        SELECT m.value, m.score FROM metric_points m WHERE m.dataset = :dataset
        AND m.metric = s.metric AND m.field = s.field AND m.window_start = :window_start) p
""")


def get_window_points(conn: Connection, *, dataset: str,
                      window_start: float) -> list[LatestPoint]:
    """The value and anomaly score of every series of one window of ``dataset``."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_WINDOW_POINTS_PG,
                            {"dataset": dataset, "window_start": window_start})
    else:
        rows = conn.execute(select(metric_points.c.metric, metric_points.c.field,
                                   metric_points.c.value, metric_points.c.score)
                            .where(metric_points.c.dataset == dataset,
                                   metric_points.c.window_start == window_start))
    return [LatestPoint(metric=r.metric, field=r.field, value=r.value, score=r.score)
            for r in rows]


def count_active_incidents(conn: Connection) -> list[tuple[str, str, str, int]]:
    """(dataset, kind, severity, count) of open or acknowledged incidents of datasets in
    the model: a removed dataset's incidents are not counted."""
    stmt = (select(incidents.c.dataset, incidents.c.kind, incidents.c.severity, func.count())
            .join(datasets, datasets.c.name == incidents.c.dataset)
            .where(incidents.c.status.in_(ACTIVE_STATUSES))
            .group_by(incidents.c.dataset, incidents.c.kind, incidents.c.severity)
            .order_by(incidents.c.dataset, incidents.c.kind, incidents.c.severity))
    return [(row[0], row[1], row[2], int(row[3])) for row in conn.execute(stmt)]


def try_session_lock(conn: Connection, *, key: str) -> bool:
    """Take a session-scoped advisory lock on ``key`` (Postgres); held until the connection
    closes, so a process that dies or loses its database session gives it up."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"),
                             {"k": key}).scalar())


def ping(conn: Connection) -> None:
    conn.execute(text("SELECT 1"))
