"""Postgres: a finalized window's points and their rollups, written in one statement.

The points arrive with their scores (the scoring hook runs before the write), so each point
is written once, and its hour and day rollup buckets are upserted by the same statement:
one round trip per window instead of an INSERT of the points, an upsert of the rollups,
and an UPDATE of the points' and of the buckets' scores (docs/scaling.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, text

from dqpulse.jsonsafe import without_nul_text
from dqpulse.records import MetricPoint
from dqpulse.store import rollups

#: a point's (score, anomalous, explanation), by (metric, field)
Scores = Mapping[tuple[str, str], tuple[float | None, bool, dict[str, Any] | None]]

# The window's points and their hour and day rollup buckets in one statement, from one
# JSON document (one object per point; 10 parameters instead of 17 per rollup row). JSON
# rather than an array per column: an array parameter is written out element by element
# in Python, and a json[] of 460 explanations took ~26 ms of a finalize's CPU (one
# ``json.dumps``: ~1 ms). A window stored before (some point was there: a replayed
# finalize) skips the rollups and the caller recomputes them from the points; ``fresh``
# sees the table as it was before the statement (as every part of one statement does).
_CREATE_WINDOW = text("""
WITH u AS (
    SELECT * FROM json_to_recordset(CAST(:points AS json))
    AS u(metric text, field text, value float8, score float8, anomalous boolean,
         explanation json, low float8, high float8)
), fresh AS (
    SELECT NOT EXISTS (
        SELECT 1 FROM metric_points p JOIN u ON p.metric = u.metric AND p.field = u.field
        WHERE p.dataset = :dataset AND p.window_start = :window_start) AS all_new
), ins AS (
    INSERT INTO metric_points AS p (dataset, metric, field, window_start, window_end, value,
                                    score, anomalous, explanation)
    SELECT :dataset, metric, field, :window_start, :window_end, value, score, anomalous,
           explanation FROM u
    ON CONFLICT (dataset, metric, field, window_start) DO UPDATE SET
        value = excluded.value, window_end = excluded.window_end,
        explanation = excluded.explanation,
        score = CASE WHEN :scored THEN excluded.score ELSE p.score END,
        anomalous = CASE WHEN :scored THEN excluded.anomalous ELSE p.anomalous END
), roll AS (
    INSERT INTO metric_rollups AS c (dataset, metric, field, resolution, bucket_start, points,
        value_count, sum, min, max, last, last_at, score, anomalous, first_at, expected_low,
        expected_high)
    SELECT :dataset, u.metric, u.field, r.resolution, r.bucket, 1,
           CASE WHEN u.value IS NULL THEN 0 ELSE 1 END, u.value, u.value, u.value, u.value,
           :window_start, u.score, u.anomalous, :window_start, u.low, u.high
    FROM u CROSS JOIN (VALUES (3600, CAST(:hour AS float8)), (86400, CAST(:day AS float8)))
         AS r(resolution, bucket)
    WHERE (SELECT all_new FROM fresh)
    ON CONFLICT (dataset, metric, field, resolution, bucket_start) DO UPDATE SET
        points = c.points + excluded.points,
        value_count = c.value_count + excluded.value_count,
        sum = CASE WHEN excluded.sum IS NULL THEN c.sum WHEN c.sum IS NULL THEN excluded.sum
                   ELSE c.sum + excluded.sum END,
        min = CASE WHEN excluded.min IS NULL OR excluded.min >= c.min THEN c.min
                   ELSE excluded.min END,
        max = CASE WHEN excluded.max IS NULL OR excluded.max <= c.max THEN c.max
                   ELSE excluded.max END,
        last = CASE WHEN excluded.last_at >= c.last_at THEN excluded.last ELSE c.last END,
        last_at = CASE WHEN excluded.last_at >= c.last_at THEN excluded.last_at
                       ELSE c.last_at END,
        first_at = CASE WHEN excluded.first_at < c.first_at THEN excluded.first_at
                        ELSE c.first_at END,
        expected_low = CASE WHEN excluded.first_at < c.first_at THEN excluded.expected_low
                            ELSE c.expected_low END,
        expected_high = CASE WHEN excluded.first_at < c.first_at THEN excluded.expected_high
                             ELSE c.expected_high END,
        score = CASE WHEN excluded.score IS NULL OR excluded.score <= c.score THEN c.score
                     ELSE excluded.score END,
        anomalous = c.anomalous OR excluded.anomalous
)
SELECT all_new FROM fresh
""")


def _number(value: float | None) -> float | str | None:
    """A float for JSON: NaN and the infinities as the strings float8 reads them from."""
    return value if value is None or math.isfinite(value) else str(value)


def create_window(conn: Connection, *, dataset: str, window_start: float,
                      window_end: float, points: Sequence[MetricPoint],
                      scores: Scores | None) -> None:
    # one row per series (an upsert may not touch a row twice): the last point wins
    given = scores or {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for p in points:
        key = (p.metric, p.field)
        if key in given:
            score, anomalous, explanation = given[key]
            low, high = rollups.band(explanation)
        else:
            score, anomalous, explanation = None, False, dict(p.extra) if p.extra else None
            low = high = None
        rows[key] = {"metric": p.metric, "field": p.field, "value": _number(p.value),
                     "score": _number(score), "anomalous": bool(anomalous),
                     "explanation": explanation, "low": _number(low), "high": _number(high)}
    all_new = conn.execute(_CREATE_WINDOW, {
        "dataset": dataset, "window_start": window_start, "window_end": window_end,
        "scored": scores is not None, "hour": rollups.bucket_of(window_start, rollups.HOUR),
        "day": rollups.bucket_of(window_start, rollups.DAY),
        # a NUL (an Avro string's, a detector's text) would fail the write: jsonb has none
        "points": without_nul_text(json.dumps(list(rows.values()), allow_nan=False))}).scalar()
    if not all_new:
        rollups.rebuild(conn, dataset=dataset, start=window_start, end=window_end)
