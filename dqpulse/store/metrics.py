"""Repository of metric points (one row per dataset, metric, field and window)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from dqpulse.records import MetricPoint
from dqpulse.store.tables import metric_points


def create_window(
    conn: Connection,
    *,
    dataset: str,
    window_start: float,
    window_end: float,
    points: Sequence[MetricPoint],
) -> None:
    """Insert a window's points; a repeated window (replayed finalize) replaces values."""
    if not points:
        return
    rows = [
        {
            "dataset": dataset,
            "metric": p.metric,
            "field": p.field,
            "window_start": window_start,
            "window_end": window_end,
            "value": p.value,
            "anomalous": False,
            "explanation": dict(p.extra) if p.extra else None,
        }
        for p in points
    ]
    insert_fn = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert_fn(metric_points)
    stmt = stmt.on_conflict_do_update(
        index_elements=["dataset", "metric", "field", "window_start"],
        set_={"value": stmt.excluded.value, "window_end": stmt.excluded.window_end,
              "explanation": stmt.excluded.explanation},
    )
    for start in range(0, len(rows), 1000):
        conn.execute(stmt, rows[start:start + 1000])


def update_scores(
    conn: Connection,
    *,
    dataset: str,
    window_start: float,
    scores: Sequence[tuple[str, str, float, bool, dict[str, Any] | None]],
) -> None:
    """Set (score, anomalous, explanation) of points given as (metric, field, ...).

    One executemany statement per window, not one round trip per point.
    """
    if not scores:
        return
    stmt = (
        update(metric_points)
        .where(and_(metric_points.c.dataset == bindparam("b_dataset"),
                    metric_points.c.metric == bindparam("b_metric"),
                    metric_points.c.field == bindparam("b_field"),
                    metric_points.c.window_start == bindparam("b_window_start")))
        .values(score=bindparam("b_score"), anomalous=bindparam("b_anomalous"),
                explanation=bindparam("b_explanation"))
    )
    conn.execute(stmt, [
        {"b_dataset": dataset, "b_metric": metric, "b_field": field,
         "b_window_start": window_start, "b_score": score, "b_anomalous": anomalous,
         "b_explanation": explanation}
        for metric, field, score, anomalous, explanation in scores])


def get_series_list(conn: Connection, *, dataset: str) -> list[dict[str, Any]]:
    """Every (metric, field) series of a dataset with its point count and time range."""
    stmt = (
        select(metric_points.c.metric, metric_points.c.field,
               func.count().label("points"),
               func.min(metric_points.c.window_start).label("first_window"),
               func.max(metric_points.c.window_start).label("last_window"))
        .where(metric_points.c.dataset == dataset)
        .group_by(metric_points.c.metric, metric_points.c.field)
        .order_by(metric_points.c.metric, metric_points.c.field)
    )
    return [dict(row) for row in conn.execute(stmt).mappings()]


# The (metric, field) series of :dataset by a skip scan of the unique index: one probe per
# series (Postgres has no loose index scan of its own).
_SERIES_CTE = """
    WITH RECURSIVE series(metric, field) AS (
        (SELECT metric, field FROM metric_points WHERE dataset = :dataset
         ORDER BY metric, field LIMIT 1)
        UNION ALL
        SELECT next.metric, next.field FROM series, LATERAL (
            SELECT m.metric, m.field FROM metric_points m
            WHERE m.dataset = :dataset AND (m.metric, m.field) > (series.metric, series.field)
            ORDER BY m.metric, m.field LIMIT 1) AS next
    )
"""


def get_series_names(conn: Connection, *, dataset: str) -> list[dict[str, Any]]:
    """Every (metric, field) series of a dataset with its first and last window, without
    counting points: on Postgres a skip scan of the unique index (a few probes per series),
    so a month of one-minute windows costs what a day does."""
    if conn.dialect.name != "postgresql":
        stmt = (select(metric_points.c.metric, metric_points.c.field,
                       func.min(metric_points.c.window_start).label("first_window"),
                       func.max(metric_points.c.window_start).label("last_window"))
                .where(metric_points.c.dataset == dataset)
                .group_by(metric_points.c.metric, metric_points.c.field)
                .order_by(metric_points.c.metric, metric_points.c.field))
        return [dict(row) for row in conn.execute(stmt).mappings()]
    sql = text(_SERIES_CTE + """
        SELECT s.metric, s.field,
               (SELECT p.window_start FROM metric_points p WHERE p.dataset = :dataset
                AND p.metric = s.metric AND p.field = s.field
                ORDER BY p.window_start LIMIT 1) AS first_window,
               (SELECT p.window_start FROM metric_points p WHERE p.dataset = :dataset
                AND p.metric = s.metric AND p.field = s.field
                ORDER BY p.window_start DESC LIMIT 1) AS last_window
        FROM series s ORDER BY s.metric, s.field
    """)
    return [dict(row) for row in conn.execute(sql, {"dataset": dataset}).mappings()]


def get_points(
    conn: Connection,
    *,
    dataset: str,
    metric: str,
    field: str = "",
    start: float | None = None,
    end: float | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    stmt = select(metric_points.c.window_start, metric_points.c.window_end,
                  metric_points.c.value, metric_points.c.score, metric_points.c.anomalous,
                  metric_points.c.explanation).where(
        metric_points.c.dataset == dataset, metric_points.c.metric == metric,
        metric_points.c.field == field)
    if start is not None:
        stmt = stmt.where(metric_points.c.window_start >= start)
    if end is not None:
        stmt = stmt.where(metric_points.c.window_start < end)
    stmt = stmt.order_by(metric_points.c.window_start.desc()).limit(limit)
    rows = [dict(row) for row in conn.execute(stmt).mappings()]
    rows.reverse()
    return rows


def get_buckets(
    conn: Connection,
    *,
    dataset: str,
    metric: str,
    field: str = "",
    step: float,
    start: float | None = None,
    end: float | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """Points aggregated in the database into buckets of ``step`` seconds, oldest first.

    Per bucket: mean value, max score, any anomalous, the point count, and the expected
    band of the bucket's first window (``expected_low``/``expected_high`` of its
    explanation; none when that window is missing). The newest ``limit`` buckets of the
    range are returned, so a long range never reads only its newest raw points.
    """
    c = metric_points.c
    # the step inlined (a float, never user text), so that the grouped and the selected
    # expressions are the same SQL text for Postgres
    step_sql: ColumnElement[float] = literal_column(repr(float(step)))
    scaled = c.window_start / step_sql
    # floor(): SQLite has no floor() in every build; window starts are positive, so a cast
    # to integer (which truncates on SQLite, rounds on Postgres) is only used there
    index = (func.floor(scaled) if conn.dialect.name == "postgresql"
             else cast(scaled, BigInteger))
    first = index * step_sql
    where = [c.dataset == dataset, c.metric == metric, c.field == field]
    if start is not None:
        where.append(c.window_start >= start)
    if end is not None:
        where.append(c.window_start < end)
    stmt = (select(first.label("window_start"), func.avg(c.value).label("value"),
                   func.max(c.score).label("score"),
                   func.max(case((c.anomalous, 1), else_=0)).label("anomalous"),
                   func.count().label("points"))
            .where(*where).group_by(index).order_by(index.desc()).limit(limit))
    if conn.dialect.name == "postgresql":
        # a month of one-minute windows (43,200 rows) sorts in memory instead of on disk
        # (the default 4 MB spills): a third faster; SET LOCAL ends with the transaction
        conn.exec_driver_sql("SET LOCAL work_mem = '32MB'")
    rows = [dict(row) for row in conn.execute(stmt).mappings()]
    rows.reverse()
    if not rows:
        return rows
    # the band in a second query: one index probe and one JSON read per bucket (parsing the
    # explanation of every point would cost more than the whole aggregate)
    starts = [float(row["window_start"]) for row in rows]
    bands: dict[float, tuple[float | None, float | None]] = {}
    for chunk in range(0, len(starts), 1000):
        band = select(c.window_start, c.explanation["expected_low"].as_float().label("low"),
                      c.explanation["expected_high"].as_float().label("high")).where(
            c.dataset == dataset, c.metric == metric, c.field == field,
            c.window_start.in_(starts[chunk:chunk + 1000]))
        bands.update((float(r.window_start), (r.low, r.high)) for r in conn.execute(band))
    for row in rows:
        row["expected_low"], row["expected_high"] = bands.get(float(row["window_start"]),
                                                              (None, None))
    return rows


def get_latest_window(conn: Connection, *, dataset: str) -> list[dict[str, Any]]:
    """All points of the dataset's newest finalized window."""
    # every finalized window has a volume.records point: one index probe finds the newest;
    # the scan over all series is the fallback for data written otherwise
    last = conn.execute(select(func.max(metric_points.c.window_start))
                        .where(metric_points.c.dataset == dataset,
                               metric_points.c.metric == "volume.records",
                               metric_points.c.field == "")).scalar()
    if last is None:
        last = conn.execute(select(func.max(metric_points.c.window_start))
                            .where(metric_points.c.dataset == dataset)).scalar()
    if last is None:
        return []
    if conn.dialect.name == "postgresql":
        # one index probe per series instead of reading every point of the dataset
        ids = [row[0] for row in conn.execute(text(_SERIES_CTE + """
            SELECT p.id FROM series s CROSS JOIN LATERAL (
                SELECT m.id FROM metric_points m WHERE m.dataset = :dataset
                AND m.metric = s.metric AND m.field = s.field AND m.window_start = :last) p
        """), {"dataset": dataset, "last": last})]
        stmt = select(metric_points).where(metric_points.c.id.in_(ids))
    else:
        stmt = select(metric_points).where(metric_points.c.dataset == dataset,
                                           metric_points.c.window_start == last)
    return [dict(row) for row in conn.execute(stmt).mappings()]
