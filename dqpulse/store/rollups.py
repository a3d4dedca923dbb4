"""Rollups of metric points per series and UTC hour / day (table ``metric_rollups``).

Kept in the transaction that writes the points: a new window adds itself to its hour and
its day (one upsert per point and resolution); a window written again (a replayed
finalize) recomputes its hour and day from the points instead, so a bucket never counts a
window twice. A bucket holds points, value_count, sum (mean = sum / value_count), min,
max, last (the value of the newest window, at ``last_at``), the highest score, whether
any window was anomalous, and the expected band of its first window (at ``first_at``), so
that a query of rollups never reads the points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, case, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from dqpulse.records import MetricPoint
from dqpulse.store.tables import metric_rollups

HOUR = 3600
DAY = 86_400
RESOLUTIONS = (HOUR, DAY)


def resolution_for(step: float) -> int | None:
    """The coarsest rollup whose buckets tile a bucket of ``step`` seconds exactly (step a
    whole multiple of it), or None: read the raw points."""
    for resolution in sorted(RESOLUTIONS, reverse=True):
        if step >= resolution and float(step) % resolution == 0:
            return resolution
    return None


def floor_sql(conn: Connection, expr: str, size: str) -> str:
    """SQL for ``floor(expr / size) * size`` (SQLite: a cast, exact for positive times)."""
    if conn.dialect.name == "postgresql":
        return f"floor({expr} / {size}) * {size}"
    return f"CAST({expr} / {size} AS INTEGER) * {size}"


def _upsert(conn: Connection) -> Any:
    c = metric_rollups.c
    insert_fn = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert_fn(metric_rollups)
    new = stmt.excluded

    def smaller(a: Any, b: Any) -> Any:  # NULL-ignoring least/greatest, on both databases
        return case((b.is_(None), a), (a.is_(None), b), (b < a, b), else_=a)

    def larger(a: Any, b: Any) -> Any:
        return case((b.is_(None), a), (a.is_(None), b), (b > a, b), else_=a)

    newer = new.last_at >= c.last_at
    older = new.first_at < c.first_at
    return stmt.on_conflict_do_update(
        index_elements=["dataset", "metric", "field", "resolution", "bucket_start"],
        set_={
            "points": c.points + new.points,
            "value_count": c.value_count + new.value_count,
            "sum": case((new.sum.is_(None), c.sum), (c.sum.is_(None), new.sum),
                        else_=c.sum + new.sum),
            "min": smaller(c.min, new.min), "max": larger(c.max, new.max),
            "last": case((newer, new.last), else_=c.last),
            "last_at": case((newer, new.last_at), else_=c.last_at),
            "first_at": case((older, new.first_at), else_=c.first_at),
            "expected_low": case((older, new.expected_low), else_=c.expected_low),
            "expected_high": case((older, new.expected_high), else_=c.expected_high),
            "score": larger(c.score, new.score),
            "anomalous": c.anomalous | new.anomalous,
        })


def bucket_of(at: float, resolution: int) -> float:
    """The start of the bucket of ``resolution`` seconds that holds ``at``."""
    return float(int(at // resolution) * resolution)


def band(explanation: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
    """The expected band (``expected_low``, ``expected_high``) of a score's explanation."""
    return _number(explanation, "expected_low"), _number(explanation, "expected_high")


def add_window(conn: Connection, *, dataset: str, window_start: float,
               points: Sequence[MetricPoint],
               scores: Mapping[tuple[str, str], tuple[float | None, bool,
                                                      dict[str, Any] | None]] | None = None
               ) -> None:
    """Add a window that was not stored before to its hour and day buckets, with the
    points' ``scores`` when they are known already (else :func:`add_scores` adds them)."""
    rows = []
    scores = scores or {}
    for resolution in RESOLUTIONS:
        bucket = bucket_of(window_start, resolution)
        for p in points:
            value = p.value
            score, anomalous, explanation = scores.get((p.metric, p.field), (None, False, None))
            low, high = band(explanation)
            rows.append({
                "dataset": dataset, "metric": p.metric, "field": p.field,
                "resolution": resolution, "bucket_start": bucket, "points": 1,
                "value_count": 0 if value is None else 1, "sum": value, "min": value,
                "max": value, "last": value, "last_at": window_start, "score": score,
                "anomalous": bool(anomalous), "first_at": window_start, "expected_low": low,
                "expected_high": high})
    stmt = _upsert(conn)
    for start in range(0, len(rows), 1000):
        conn.execute(stmt, rows[start:start + 1000])


def add_scores(conn: Connection, *, dataset: str, window_start: float,
               scores: Sequence[tuple[str, str, float, bool, dict[str, Any] | None]]) -> None:
    """Raise the buckets' highest score and anomalous flag by a window's scores; the
    first window of a bucket also sets its expected band (of its explanation)."""
    if not scores:
        return
    if conn.dialect.name == "postgresql":
        _add_scores_unnest(conn, dataset=dataset, window_start=window_start, scores=scores)
        return
    c = metric_rollups.c
    first = c.first_at == bindparam("b_at")
    stmt = (update(metric_rollups)
            .where(c.dataset == bindparam("b_dataset"), c.metric == bindparam("b_metric"),
                   c.field == bindparam("b_field"), c.resolution == bindparam("b_res"),
                   c.bucket_start == bindparam("b_bucket"))
            .values(score=case((c.score.is_(None), bindparam("b_score")),
                               (bindparam("b_score") > c.score, bindparam("b_score")),
                               else_=c.score),
                    anomalous=c.anomalous | bindparam("b_anomalous"),
                    expected_low=case((first, bindparam("b_low")), else_=c.expected_low),
                    expected_high=case((first, bindparam("b_high")),
                                       else_=c.expected_high)))
    params = [
        {"b_dataset": dataset, "b_metric": metric, "b_field": field, "b_res": resolution,
         "b_bucket": float(int(window_start // resolution) * resolution),
         "b_score": score, "b_anomalous": anomalous, "b_at": window_start,
         "b_low": _number(explanation, "expected_low"),
         "b_high": _number(explanation, "expected_high")}
        for metric, field, score, anomalous, explanation in scores
        for resolution in RESOLUTIONS]
    if params:
        conn.execute(stmt, params)


_ADD_SCORES = text("""
UPDATE metric_rollups AS c
SET score = CASE WHEN c.score IS NULL OR u.score > c.score THEN u.score ELSE c.score END,
    anomalous = c.anomalous OR u.anomalous,
    expected_low = CASE WHEN c.first_at = :window_start THEN u.low ELSE c.expected_low END,
    expected_high = CASE WHEN c.first_at = :window_start THEN u.high ELSE c.expected_high END
FROM unnest(CAST(:metrics AS text[]), CAST(:fields AS text[]), CAST(:resolutions AS int[]),
            CAST(:buckets AS float8[]), CAST(:scores AS float8[]),
            CAST(:anomalous AS boolean[]), CAST(:lows AS float8[]), CAST(:highs AS float8[]))
     AS u(metric, field, resolution, bucket_start, score, anomalous, low, high)
WHERE c.dataset = :dataset AND c.metric = u.metric AND c.field = u.field
  AND c.resolution = u.resolution AND c.bucket_start = u.bucket_start
""")


def _add_scores_unnest(conn: Connection, *, dataset: str, window_start: float,
                       scores: Sequence[tuple[str, str, float, bool, dict[str, Any] | None]]
                       ) -> None:
    """Postgres: :func:`add_scores` as one statement (one UPDATE per row and resolution ran
    5-10x slower: bench/finalize_writes.py). A series given twice updates its buckets once
    (UPDATE ... FROM takes one matching row), so the scores are merged first as the
    sequential updates would: highest score, any anomalous, the last band."""
    merged: dict[tuple[str, str], list[Any]] = {}
    for metric, field, score, anomalous, explanation in scores:
        low, high = _number(explanation, "expected_low"), _number(explanation, "expected_high")
        row = merged.get((metric, field))
        if row is None:
            merged[(metric, field)] = [score, bool(anomalous), low, high]
        else:
            row[0] = score if row[0] is None or (score is not None and score > row[0]) \
                else row[0]
            row[1] = row[1] or bool(anomalous)
            row[2], row[3] = low, high
    keys = [(key, resolution) for key in merged for resolution in RESOLUTIONS]
    conn.execute(_ADD_SCORES, {
        "dataset": dataset, "window_start": window_start,
        "metrics": [k[0] for k, _ in keys], "fields": [k[1] for k, _ in keys],
        "resolutions": [r for _, r in keys],
        "buckets": [float(int(window_start // r) * r) for _, r in keys],
        "scores": [merged[k][0] for k, _ in keys],
        "anomalous": [merged[k][1] for k, _ in keys],
        "lows": [merged[k][2] for k, _ in keys], "highs": [merged[k][3] for k, _ in keys]})


def _number(explanation: Mapping[str, Any] | None, key: str) -> float | None:
    value = (explanation or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


_REBUILD = """
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
      FROM metric_points WHERE window_start >= :start AND window_start < :end {only}
      GROUP BY dataset, metric, field, {bucket}) g
JOIN metric_points p ON p.dataset = g.dataset AND p.metric = g.metric
     AND p.field = g.field AND p.window_start = g.last_at
     AND p.window_start >= :start AND p.window_start < :end
JOIN metric_points f ON f.dataset = g.dataset AND f.metric = g.metric
     AND f.field = g.field AND f.window_start = g.first_at
     AND f.window_start >= :start AND f.window_start < :end
WHERE true
ON CONFLICT (dataset, metric, field, resolution, bucket_start) DO UPDATE SET
    points = excluded.points, value_count = excluded.value_count, sum = excluded.sum,
    min = excluded.min, max = excluded.max, last = excluded.last,
    last_at = excluded.last_at, score = excluded.score, anomalous = excluded.anomalous,
    first_at = excluded.first_at, expected_low = excluded.expected_low,
    expected_high = excluded.expected_high
"""


def band_sql(conn: Connection, key: str) -> str:
    """SQL for a number of the first window's explanation (alias ``f``), NULL otherwise."""
    if conn.dialect.name == "postgresql":
        return (f"CASE WHEN json_typeof(f.explanation -> '{key}') = 'number' "
                f"THEN (f.explanation ->> '{key}')::float8 END")
    return (f"CASE WHEN json_type(f.explanation, '$.{key}') IN ('real', 'integer') "
            f"THEN json_extract(f.explanation, '$.{key}') END")


def rebuild(conn: Connection, *, start: float, end: float, dataset: str | None = None) -> None:
    """Recompute the buckets of [start, end) (widened to whole days) from the points, one
    day at a time (on Postgres one partition per statement)."""
    only = "" if dataset is None else "AND dataset = :dataset"
    statements = [text(_REBUILD.format(
        res=resolution, only=only,
        bucket=floor_sql(conn, "window_start", f"{resolution}.0"),
        band_low=band_sql(conn, "expected_low"), band_high=band_sql(conn, "expected_high")))
        for resolution in RESOLUTIONS]
    day = float(int(start // DAY) * DAY)
    while day < end:
        for statement in statements:
            conn.execute(statement, {"start": day, "end": day + DAY, "dataset": dataset})
        day += DAY
