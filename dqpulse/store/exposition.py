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


def get_window_points(conn: Connection, *, dataset: str, window_start: float,
                      field_limit: int) -> tuple[list[LatestPoint], int]:
    """One window of ``dataset``: every dataset-level point, the first ``field_limit``
    per-field points in (metric, field) order, and how many per-field points it has.
    Served by ``ix_metric_points_dataset_time``: one index range, whatever the history."""
    c = metric_points.c
    window = (c.dataset == dataset, c.window_start == window_start)
    points = [LatestPoint(metric=r.metric, field="", value=r.value, score=r.score)
              for r in conn.execute(select(c.metric, c.value, c.score)
                                    .where(*window, c.field == "").order_by(c.metric))]
    total = 0
    if field_limit > 0:
        rows = conn.execute(select(c.metric, c.field, c.value, c.score,
                                   func.count().over().label("total"))
                            .where(*window, c.field != "")
                            .order_by(c.metric, c.field).limit(field_limit)).all()
        points += [LatestPoint(metric=r.metric, field=r.field, value=r.value, score=r.score)
                   for r in rows]
        total = int(rows[0].total) if rows else 0
    else:
        total = int(conn.execute(select(func.count()).where(*window, c.field != "")
                                 ).scalar_one())
    return points, total


# Postgres: the newest window of many datasets in one round trip. The newest window is
# the newest volume.records point (every finalized window has one: one probe of the series
# index); its points are one range of ix_metric_points_dataset_time.
_NEWEST_WINDOWS_PG = text("""
    WITH newest AS (
        SELECT d.dataset, (SELECT max(p.window_start) FROM metric_points p
                           WHERE p.dataset = d.dataset AND p.metric = 'volume.records'
                           AND p.field = '') AS window_start
        FROM unnest(CAST(:datasets AS text[])) AS d(dataset)
    )
    SELECT n.dataset, t.metric, t.field, t.value, t.score, t.total
    FROM newest n CROSS JOIN LATERAL (
        -- only (dataset, window_start) in the scan: the planner takes ix_metric_points_dataset_time
        -- and ranks the window's ~1,000 rows in memory
        SELECT w.metric, w.field, w.value, w.score, w.total FROM (
            SELECT m.metric, m.field, m.value, m.score,
                   row_number() OVER (PARTITION BY m.field = '' ORDER BY m.metric, m.field)
                       AS rank,
                   count(*) FILTER (WHERE m.field <> '') OVER () AS total
            FROM metric_points m
            WHERE m.dataset = n.dataset AND m.window_start = n.window_start) w
        WHERE w.field = '' OR w.rank <= :field_limit) t
    ORDER BY n.dataset, t.field = '' DESC, t.metric, t.field
""")


def get_newest_windows(conn: Connection, *, datasets: list[str], field_limit: int
                       ) -> dict[str, tuple[list[LatestPoint], int]]:
    """The newest window of each dataset as :func:`get_window_points` reads it (datasets
    without a window are absent)."""
    if conn.dialect.name != "postgresql":
        out = {}
        for dataset in datasets:
            start = get_newest_window_start(conn, dataset=dataset)
            if start is not None:
                out[dataset] = get_window_points(conn, dataset=dataset, window_start=start,
                                                 field_limit=field_limit)
        return out
    grouped: dict[str, tuple[list[LatestPoint], int]] = {}
    rows = conn.execute(_NEWEST_WINDOWS_PG, {"datasets": datasets, "field_limit": field_limit})
    for row in rows:
        points, _ = grouped.get(row.dataset, ([], 0))
        points.append(LatestPoint(metric=row.metric, field=row.field, value=row.value,
                                  score=row.score))
        grouped[row.dataset] = (points, int(row.total))
    return grouped


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
