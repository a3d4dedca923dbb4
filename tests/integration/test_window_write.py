"""A window's points written once with their scores (the finalize path since issue 16)
leave the same points and rollups as points written first and scored after (the path
of a hook run on its own), on Postgres (one statement) and SQLite, also for a replayed
window and a window that gets the autoencoder's point."""

from __future__ import annotations

import math
import random

import pytest
from sqlalchemy import delete, select

from dqpulse.records import MetricPoint
from dqpulse.store import metrics as metric_store
from dqpulse.store.tables import metric_points, metric_rollups

pytestmark = pytest.mark.integration

BASE = 1_800_230_400.0  # 2027-01-18 00:00 UTC
SERIES = [("volume.records", ""), ("completeness.null_ratio", "a"),
          ("distribution.mean", "a"), ("distribution.mean", "b"), ("schema.new_fields", "")]


@pytest.fixture
def engine(store_engine: object) -> object:
    return store_engine


def _windows(seed: int = 3) -> list[tuple[float, list[MetricPoint], dict]]:
    """40 windows of 15 minutes (10 hours, 2 days' buckets): values with gaps, scores for
    all but the schema series, some anomalous, bands in some explanations."""
    rng = random.Random(seed)
    out = []
    for i in range(40):
        at = BASE - 5 * 3600 + 900 * i  # across midnight: two day buckets
        points, scores = [], {}
        for metric, field in SERIES:
            value = None if rng.random() < 0.1 else rng.uniform(0, 100)
            points.append(MetricPoint(metric, value, field=field,
                                      extra={"n": i} if metric.startswith("schema") else None))
            if metric.startswith("schema"):
                continue
            band = ({"expected_low": rng.uniform(0, 10), "expected_high": rng.uniform(90, 99)}
                    if rng.random() < 0.7 else {"note": "warm-up"})
            scores[(metric, field)] = (rng.uniform(0, 1), rng.random() < 0.1, band)
        out.append((at, points, scores))
    return out


def _rows(conn) -> tuple[list[tuple], list[tuple]]:
    def rounded(row: tuple) -> tuple:
        return tuple(round(v, 6) if isinstance(v, float) else v for v in row)

    p, r = metric_points.c, metric_rollups.c
    points = [rounded(row) for row in conn.execute(
        select(p.metric, p.field, p.window_start, p.window_end, p.value, p.score, p.anomalous,
               p.explanation).order_by(p.metric, p.field, p.window_start)).tuples()]
    buckets = [rounded(row) for row in conn.execute(
        select(r.metric, r.field, r.resolution, r.bucket_start, r.points, r.value_count, r.sum,
               r.min, r.max, r.last, r.last_at, r.score, r.anomalous, r.first_at,
               r.expected_low, r.expected_high)
        .order_by(r.metric, r.field, r.resolution, r.bucket_start)).tuples()]
    return points, buckets


def _write(conn, windows, *, at_once: bool) -> None:
    for at, points, scores in windows:
        autoencoder = MetricPoint("anomaly.autoencoder", at % 7)
        ae_score = {("anomaly.autoencoder", ""): (at % 7, False, {"features": {"x": 1.0}})}
        if at_once:
            metric_store.create_window(conn, dataset="orders", window_start=at,
                                       window_end=at + 900, points=[*points, autoencoder],
                                       scores={**scores, **ae_score})
            continue
        metric_store.create_window(conn, dataset="orders", window_start=at,
                                   window_end=at + 900, points=points)
        metric_store.create_window(conn, dataset="orders", window_start=at,
                                   window_end=at + 900, points=[autoencoder])
        metric_store.update_scores(conn, dataset="orders", window_start=at, scores=[
            (m, f, s, a, e) for (m, f), (s, a, e) in {**scores, **ae_score}.items()])


def test_points_written_with_their_scores_match_points_scored_after(engine):
    windows = _windows()
    with engine.begin() as conn:
        _write(conn, windows, at_once=False)
        before = _rows(conn)
        conn.execute(delete(metric_points))
        conn.execute(delete(metric_rollups))
        _write(conn, windows, at_once=True)
        assert _rows(conn) == before
        # a replayed window (written again, other values): recomputed, never added twice
        at, points, scores = windows[12]
        again = [MetricPoint(p.metric, 1000.0, field=p.field) for p in points]
        metric_store.create_window(conn, dataset="orders", window_start=at,
                                   window_end=at + 900, points=again, scores=scores)
        replayed = _rows(conn)
        conn.execute(delete(metric_points))
        conn.execute(delete(metric_rollups))
        _write(conn, windows, at_once=False)
        metric_store.create_window(conn, dataset="orders", window_start=at,
                                   window_end=at + 900, points=again)
        metric_store.update_scores(conn, dataset="orders", window_start=at, scores=[
            (m, f, s, a, e) for (m, f), (s, a, e) in scores.items()])
        assert _rows(conn) == replayed
    hours = [b for b in replayed[1] if b[0] == "volume.records" and b[2] == 3600]
    assert len(hours) == 10 and all(b[4] == 4 for b in hours)
    assert max(b[8] for b in hours) == 1000.0  # the replayed value is in its bucket


def test_missing_and_non_finite_values_are_stored_as_such(engine):
    """None stays NULL (value, score, explanation), NaN and the infinities stay floats."""
    at = BASE + 86_400
    points = [MetricPoint("distribution.mean", None, field="a"),
              MetricPoint("distribution.mean", float("nan"), field="b"),
              MetricPoint("distribution.max", float("inf"), field="a"),
              MetricPoint("distribution.min", float("-inf"), field="a"),
              MetricPoint("volume.records", 3.0)]
    scores = {("volume.records", ""): (0.25, False, {"expected_low": 1.0, "note": "a \"q\""}),
              ("distribution.mean", "a"): (None, False, None)}
    with engine.begin() as conn:
        metric_store.create_window(conn, dataset="finite", window_start=at,
                                   window_end=at + 900, points=points, scores=scores)
        p = metric_points.c
        rows = {(r.metric, r.field): r for r in conn.execute(
            select(p.metric, p.field, p.value, p.score, p.explanation)
            .where(p.dataset == "finite"))}
    assert rows[("distribution.mean", "a")].value is None
    assert rows[("distribution.mean", "a")].score is None
    assert rows[("distribution.mean", "a")].explanation is None
    assert rows[("distribution.mean", "b")].explanation is None
    nan = rows[("distribution.mean", "b")].value
    assert nan is None if engine.dialect.name == "sqlite" else math.isnan(nan)  # SQLite: NULL
    assert rows[("distribution.max", "a")].value == math.inf
    assert rows[("distribution.min", "a")].value == -math.inf
    assert rows[("volume.records", "")].value == 3.0
    assert rows[("volume.records", "")].score == 0.25
    assert rows[("volume.records", "")].explanation == {"expected_low": 1.0, "note": "a \"q\""}


def test_a_nul_in_a_field_or_an_explanation_is_written_as_u_fffd(engine):
    """PostgreSQL text holds no NUL: one in a field name or an explanation failed the
    window's write, and its data set's finalization retried it for ever (on PostgreSQL)."""
    at = BASE + 2 * 86_400
    points = [MetricPoint("distribution.mean", 1.0, field="a\x00b"),
              MetricPoint("volume.records", 3.0)]
    scores = {("volume.records", ""): (0.5, False, {"segment": {"key": "k\x00", "lit": "\\u0000"}})}
    with engine.begin() as conn:
        metric_store.create_window(conn, dataset="nul", window_start=at,
                                   window_end=at + 900, points=points, scores=scores)
        p = metric_points.c
        rows = {(r.metric, r.field): r for r in conn.execute(
            select(p.metric, p.field, p.explanation).where(p.dataset == "nul"))}
    nul = "\x00" if engine.dialect.name == "sqlite" else "\ufffd"  # SQLite holds NUL
    assert ("distribution.mean", f"a{nul}b") in rows
    assert rows[("volume.records", "")].explanation == {
        "segment": {"key": f"k{nul}", "lit": "\\u0000"}}
