"""Repository of metric points (one row per dataset, metric, field and window)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    CursorResult,
    Float,
    Text,
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
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from dqpulse.records import MetricPoint
from dqpulse.store import rollups, window_write
from dqpulse.store.tables import metric_points, metric_rollups

Scores = window_write.Scores

def has_window(conn: Connection, *, dataset: str, window_start: float) -> bool:
    """Whether the history holds any point of this window."""
    return conn.execute(select(metric_points.c.window_start).where(
        metric_points.c.dataset == dataset,
        metric_points.c.window_start == window_start).limit(1)).first() is not None


def create_window(
    conn: Connection,
    *,
    dataset: str,
    window_start: float,
    window_end: float,
    points: Sequence[MetricPoint],
    scores: Scores | None = None,
) -> None:
    """Insert a window's points, with their ``scores`` when given (the score's explanation
    replaces the point's ``extra``), and add them to their rollups; a repeated window
    (replayed finalize) replaces values and recomputes its rollups.

    Postgres: points and rollups in one statement (:mod:`.window_write`); without
    ``scores``, :func:`update_scores` sets them later (two more statements)."""
    if not points:
        return
    if conn.dialect.name == "postgresql":
        window_write.create_window(conn, dataset=dataset, window_start=window_start,
                                   window_end=window_end, points=points, scores=scores)
        return
    scores = scores or {}
    rows = []
    for p in points:
        score, anomalous, explanation = scores.get(
            (p.metric, p.field), (None, False, dict(p.extra) if p.extra else None))
        rows.append({"dataset": dataset, "metric": p.metric, "field": p.field,
                     "window_start": window_start, "window_end": window_end,
                     "value": p.value, "score": score, "anomalous": bool(anomalous),
                     "explanation": explanation})
    # a point stored before (a replayed finalize) is recomputed into its rollups rather
    # than added to them twice; a window may get more points later (the autoencoder's)
    stored = set(conn.execute(_STORED_IN_WINDOW, {
        "dataset": dataset, "window_start": window_start}).tuples())
    replayed = any((p.metric, p.field) in stored for p in points)
    stmt = sqlite_insert(metric_points)
    stmt = stmt.on_conflict_do_update(
        index_elements=["dataset", "metric", "field", "window_start"],
        set_={"value": stmt.excluded.value, "window_end": stmt.excluded.window_end,
              "explanation": stmt.excluded.explanation,
              **({"score": stmt.excluded.score, "anomalous": stmt.excluded.anomalous}
                 if scores else {})},
    )
    for start in range(0, len(rows), 1000):
        conn.execute(stmt, rows[start:start + 1000])
    if replayed:
        rollups.rebuild(conn, dataset=dataset, start=window_start, end=window_end)
    else:
        rollups.add_window(conn, dataset=dataset, window_start=window_start, points=points,
                           scores=scores)


# SQLite, lacking statistics, answers (metric, field) of one window from the primary key
# (dataset, metric, field, window_start), which covers those columns, by scanning the whole
# dataset's history: every window got slower as the history grew (a day of 1-minute
# windows took 2.4x longer on day 5 than on day 1). Named, the (dataset, window_start)
# index answers it in one range whatever the history.
_STORED_IN_WINDOW = text(
    "SELECT metric, field FROM metric_points INDEXED BY ix_metric_points_dataset_time "
    "WHERE dataset = :dataset AND window_start = :window_start")


_UPDATE_SCORES = text("""
UPDATE metric_points AS p
SET score = u.score, anomalous = u.anomalous, explanation = u.explanation
FROM unnest(CAST(:metrics AS text[]), CAST(:fields AS text[]), CAST(:scores AS float8[]),
            CAST(:anomalous AS boolean[]), CAST(:explanations AS json[]))
     AS u(metric, field, score, anomalous, explanation)
WHERE p.dataset = :dataset AND p.window_start = :window_start
  AND p.metric = u.metric AND p.field = u.field
""")


def update_scores(
    conn: Connection,
    *,
    dataset: str,
    window_start: float,
    scores: Sequence[tuple[str, str, float, bool, dict[str, Any] | None]],
) -> None:
    """Set (score, anomalous, explanation) of points given as (metric, field, ...).

    Postgres: one ``UPDATE ... FROM unnest(...)`` statement per window (an executemany ran
    one UPDATE per point: 5-10x slower, bench/finalize_writes.py); SQLite: an executemany.
    """
    if not scores:
        return
    if conn.dialect.name == "postgresql":
        # one row per series: the last score of a series given twice wins, as before
        last = {(m, f): (m, f, s, a, e) for m, f, s, a, e in scores}
        conn.execute(_UPDATE_SCORES, {
            "dataset": dataset, "window_start": window_start,
            "metrics": [r[0] for r in last.values()], "fields": [r[1] for r in last.values()],
            "scores": [r[2] for r in last.values()],
            "anomalous": [bool(r[3]) for r in last.values()],
            "explanations": [None if r[4] is None else json.dumps(r[4])
                             for r in last.values()]})
        rollups.add_scores(conn, dataset=dataset, window_start=window_start, scores=scores)
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
    rollups.add_scores(conn, dataset=dataset, window_start=window_start, scores=scores)


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
    before: float | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """The newest ``limit`` points of the range (and before ``before``), oldest first."""
    c = metric_points.c
    # the explanation as text, parsed by orjson: the driver's JSON parsing was half of the
    # time of a week of points
    stmt = select(c.window_start, c.window_end, c.value, c.score, c.anomalous,
                  cast(c.explanation, Text).label("explanation")).where(
        *_range(c.window_start, dataset, metric, field, start, end, before))
    stmt = stmt.order_by(c.window_start.desc()).limit(limit)
    rows = _dicts(conn.execute(stmt))
    for row in rows:
        if row["explanation"] is not None:
            row["explanation"] = orjson.loads(row["explanation"])
    return rows


def _dicts(result: CursorResult[Any]) -> list[dict[str, Any]]:
    """Rows as dicts, oldest first (the query reads newest first): fetched at once and
    zipped with the keys, not one ``RowMapping`` per row (a third of a week's read)."""
    keys = list(result.keys())
    rows = [dict(zip(keys, row, strict=True)) for row in result.all()]
    rows.reverse()
    return rows


def _range(time: Any, dataset: str, metric: str, field: str, start: float | None,
           end: float | None, before: float | None) -> list[ColumnElement[bool]]:
    table = time.table.c
    where = [table.dataset == dataset, table.metric == metric, table.field == field]
    where += [time >= start] if start is not None else []
    where += [time < bound for bound in (end, before) if bound is not None]
    return where


def get_buckets(
    conn: Connection,
    *,
    dataset: str,
    metric: str,
    field: str = "",
    step: float,
    start: float | None = None,
    end: float | None = None,
    before: float | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """Points aggregated in the database into buckets of ``step`` seconds, oldest first.

    Read from the coarsest rollup that tiles a bucket (:func:`rollups.resolution_for`:
    step a multiple of an hour or a day), else from the points. Per bucket: mean, min, max
    and last value, max score, any anomalous, the point count, and the expected band of
    the bucket's first window (``expected_low``/``expected_high`` of its explanation; none
    when that window is missing). The newest ``limit`` buckets of the range (and before
    ``before``) are returned, so a long range never reads only its newest raw points.
    """
    resolution = rollups.resolution_for(step)
    # the step inlined (a float, never user text), so that the grouped and the selected
    # expressions are the same SQL text for Postgres; typed, so that the division is in
    # floats (untyped, SQLAlchemy casts it to NUMERIC: slower, and Decimal rows)
    step_sql: ColumnElement[float] = literal_column(repr(float(step)), type_=Float)
    if resolution is None:
        c: Any = metric_points.c
        time, low = c.window_start, start
        columns = [func.avg(c.value).label("value"), func.min(c.value).label("min"),
                   func.max(c.value).label("max"), func.max(c.window_start).label("last_at"),
                   func.count().label("points")]
    else:
        c = metric_rollups.c
        time = c.bucket_start
        # whole rollup buckets: the first one may begin before ``start``
        low = None if start is None else float(int(start // resolution) * resolution)
        columns = [(func.sum(c.sum) / func.nullif(func.sum(c.value_count), 0)).label("value"),
                   func.min(c.min).label("min"), func.max(c.max).label("max"),
                   func.max(c.last_at).label("last_at"), func.sum(c.points).label("points")]
        if conn.dialect.name == "postgresql":
            # the newest bucket's last value and the first bucket's band, in the aggregate
            columns += [
                func.array_agg(aggregate_order_by(c.last, c.bucket_start.desc()))[1]
                .label("last"),
                func.array_agg(aggregate_order_by(c.expected_low, c.bucket_start))[1]
                .label("expected_low"),
                func.array_agg(aggregate_order_by(c.expected_high, c.bucket_start))[1]
                .label("expected_high")]
    scaled = time / step_sql
    # floor(): SQLite has no floor() in every build; window starts are positive, so a cast
    # to integer (which truncates on SQLite, rounds on Postgres) is only used there
    index = (func.floor(scaled) if conn.dialect.name == "postgresql"
             else cast(scaled, BigInteger))
    where = _range(time, dataset, metric, field, low, end, before)
    if resolution is not None:
        where.append(c.resolution == resolution)
    stmt = (select((index * step_sql).label("window_start"), *columns,
                   func.max(c.score).label("score"),
                   func.max(case((c.anomalous, 1), else_=0)).label("anomalous"))
            .where(*where).group_by(index).order_by(index.desc()).limit(limit))
    if conn.dialect.name == "postgresql" and resolution is None:
        # a month of one-minute windows (43,200 rows) sorts in memory instead of on disk
        # (the default 4 MB spills): a third faster; SET LOCAL ends with the transaction.
        # A rollup read sorts a few thousand rows at most: no round trip for it
        conn.exec_driver_sql("SET LOCAL work_mem = '32MB'")
    rows = _dicts(conn.execute(stmt))
    if rows and "last" not in rows[0]:
        _add_last_and_band(conn, rows, dataset, metric, field, resolution)
    for row in rows:
        row.pop("last_at", None)
    return rows


def _add_last_and_band(conn: Connection, rows: list[dict[str, Any]], dataset: str,
                       metric: str, field: str, resolution: int | None) -> None:
    """Each bucket's last value (the newest window's) and the expected band of its first
    window: from the rollup buckets that hold them, or by index probes of the points, in
    chunks (parsing the explanation of every point would cost more than the aggregate)."""
    starts = [float(row["window_start"]) for row in rows]
    lasts = [float(row.pop("last_at")) for row in rows]
    found: dict[float, tuple[float | None, float | None, float | None]] = {}
    if resolution is None:
        probe = sorted(set(starts) | set(lasts))
        for chunk in range(0, len(probe), 1000):
            found.update((float(r.window_start), (r.value, r.low, r.high))
                         for r in conn.execute(_probe(conn), {
                             "dataset": dataset, "metric": metric, "field": field,
                             "starts": probe[chunk:chunk + 1000]}))
        for row, start, last in zip(rows, starts, lasts, strict=True):
            _, row["expected_low"], row["expected_high"] = found.get(start, (None,) * 3)
            row["last"] = found.get(last, (None,))[0]
        return
    r = metric_rollups.c
    buckets = sorted(set(starts) | {float(int(at // resolution) * resolution)
                                    for at in lasts})
    for chunk in range(0, len(buckets), 1000):
        found.update((float(b.bucket_start), (b.last, b.expected_low, b.expected_high))
                     for b in conn.execute(select(
                         r.bucket_start, r.last, r.expected_low, r.expected_high).where(
                         r.dataset == dataset, r.metric == metric, r.field == field,
                         r.resolution == resolution,
                         r.bucket_start.in_(buckets[chunk:chunk + 1000]))))
    for row, start, last in zip(rows, starts, lasts, strict=True):
        row["expected_low"], row["expected_high"] = found.get(start, (None,) * 3)[1:]
        row["last"] = found.get(float(int(last // resolution) * resolution), (None,))[0]


def _probe(conn: Connection) -> Any:
    """Points of one series at the given window starts (``:starts``). Postgres: one
    lateral probe per start, pruned at run time to the partition of that start (an IN
    list would send every start to every partition of the range)."""
    if conn.dialect.name == "postgresql":
        return text("""
            SELECT p.window_start, p.value, (p.explanation ->> 'expected_low')::float8 AS low,
                   (p.explanation ->> 'expected_high')::float8 AS high
            FROM unnest(CAST(:starts AS float8[])) AS s(at) CROSS JOIN LATERAL (
                SELECT window_start, value, explanation FROM metric_points
                WHERE dataset = :dataset AND metric = :metric AND field = :field
                AND window_start = s.at) AS p""")
    c = metric_points.c
    return select(c.window_start, c.value,
                  c.explanation["expected_low"].as_float().label("low"),
                  c.explanation["expected_high"].as_float().label("high")).where(
        c.dataset == bindparam("dataset"), c.metric == bindparam("metric"),
        c.field == bindparam("field"), c.window_start.in_(bindparam("starts", expanding=True)))


def get_latest_window(conn: Connection, *, dataset: str) -> list[dict[str, Any]]:
    """All points of the dataset's newest finalized window: two probes of the
    (dataset, window_start) index."""
    last = conn.execute(select(func.max(metric_points.c.window_start))
                        .where(metric_points.c.dataset == dataset)).scalar()
    if last is None:
        return []
    stmt = select(metric_points).where(metric_points.c.dataset == dataset,
                                       metric_points.c.window_start == last)
    return [dict(row) for row in conn.execute(stmt).mappings()]
