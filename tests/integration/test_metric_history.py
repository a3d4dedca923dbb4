"""The downsampled metric history the console reads, on Postgres and on SQLite (the demo):
buckets aggregated in the database, the expected band, the series list without counts and
the newest window found by index probes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dqpulse.config import Settings
from dqpulse.records import MetricPoint
from dqpulse.spec import parse_spec
from dqpulse.store import datasets as dataset_store
from dqpulse.store import metrics as metric_store
from service.app import create_app

pytestmark = pytest.mark.integration

SPEC = parse_spec("""
datasets:
  - name: orders
    topic: orders
    window: 1m
""")
BASE = 1_800_000_000.0  # a multiple of 3600


@pytest.fixture
def engine(store_engine: object) -> object:
    return store_engine


def _seed(engine) -> None:
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=SPEC)
        for i in range(180):  # three hours of one-minute windows
            start = BASE + 60 * i
            metric_store.create_window(conn, dataset="orders", window_start=start,
                                       window_end=start + 60, points=[
                                           MetricPoint("volume.records", float(i)),
                                           MetricPoint("completeness.null_ratio", 0.01,
                                                       "amount")])
            metric_store.update_scores(conn, dataset="orders", window_start=start, scores=[
                ("volume.records", "", 0.9 if i == 70 else 0.1, i == 70,
                 {"expected_low": float(i) - 5, "expected_high": float(i) + 5,
                  "observed": float(i)})])


def test_buckets_hold_mean_max_score_any_anomaly_and_the_first_windows_band(engine):
    _seed(engine)
    with engine.begin() as conn:
        buckets = metric_store.get_buckets(conn, dataset="orders", metric="volume.records",
                                           step=3600, start=BASE, end=BASE + 3 * 3600)
    assert [b["window_start"] for b in buckets] == [BASE, BASE + 3600, BASE + 7200]
    assert [b["points"] for b in buckets] == [60, 60, 60]
    assert [b["value"] for b in buckets] == pytest.approx([29.5, 89.5, 149.5])
    assert [b["score"] for b in buckets] == pytest.approx([0.1, 0.9, 0.1])
    assert [bool(b["anomalous"]) for b in buckets] == [False, True, False]
    assert [(b["expected_low"], b["expected_high"]) for b in buckets] == \
        [(-5.0, 5.0), (55.0, 65.0), (115.0, 125.0)]
    with engine.begin() as conn:
        newest = metric_store.get_buckets(conn, dataset="orders", metric="volume.records",
                                          step=3600, limit=1)
    assert [b["window_start"] for b in newest] == [BASE + 7200]  # the newest, not the oldest


def test_one_windows_scores_of_many_series_land_on_their_points_and_buckets(engine):
    # Postgres writes a window's scores in one statement per table (unnest), SQLite one
    # per point: the same rows either way; a series scored twice keeps its last score on
    # the point and its highest in the buckets, as sequential updates did
    fields = [f"f{i:02d}" for i in range(40)]
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=SPEC)
        metric_store.create_window(conn, dataset="orders", window_start=BASE,
                                   window_end=BASE + 60, points=[
                                       MetricPoint("completeness.null_ratio", 0.0, f)
                                       for f in fields])
        metric_store.update_scores(conn, dataset="orders", window_start=BASE, scores=[
            *[("completeness.null_ratio", f, i / 100, i == 7, {"expected_low": float(i)})
              for i, f in enumerate(fields)],
            ("completeness.null_ratio", "f03", 0.01, False, None)])
    for i, field in enumerate(fields):
        with engine.begin() as conn:
            [bucket] = metric_store.get_buckets(
                conn, dataset="orders", metric="completeness.null_ratio", field=field,
                step=3600, start=BASE, end=BASE + 3600)
            [raw] = metric_store.get_buckets(
                conn, dataset="orders", metric="completeness.null_ratio", field=field,
                step=60, start=BASE, end=BASE + 60)
        assert bucket["score"] == pytest.approx(i / 100), field
        assert bool(bucket["anomalous"]) is (i == 7), field
        assert raw["score"] == pytest.approx(0.01 if field == "f03" else i / 100), field
        assert bucket["expected_low"] == (None if field == "f03" else float(i)), field


def test_series_names_and_the_newest_window_match_the_full_scans(engine):
    _seed(engine)
    with engine.begin() as conn:
        full = metric_store.get_series_list(conn, dataset="orders")
        names = metric_store.get_series_names(conn, dataset="orders")
        latest = metric_store.get_latest_window(conn, dataset="orders")
    assert [{k: v for k, v in s.items() if k != "points"} for s in full] == names
    assert {(p["metric"], p["field"]) for p in latest} == \
        {("volume.records", ""), ("completeness.null_ratio", "amount")}
    assert {p["window_start"] for p in latest} == {BASE + 179 * 60}


def test_history_api_serves_buckets_with_the_band_and_series_without_counts(engine):
    _seed(engine)
    client = TestClient(create_app(Settings(database_url="sqlite://", auth="open"), engine=engine,
                                   spec=SPEC))
    body = client.get("/api/v1/datasets/orders/metrics/volume.records",
                      params={"step": 3600, "start": BASE, "end": BASE + 3 * 3600}).json()
    assert body["step"] == 3600
    assert [(p["window_start"], p["points"], p["expected_low"]) for p in body["points"]] == \
        [(BASE, 60, -5.0), (BASE + 3600, 60, 55.0), (BASE + 7200, 60, 115.0)]
    raw = client.get("/api/v1/datasets/orders/metrics/volume.records",
                     params={"start": BASE, "end": BASE + 120}).json()["points"]
    assert [(p["expected_low"], p["expected_high"]) for p in raw] == [(-5.0, 5.0), (-4.0, 6.0)]
    series = client.get("/api/v1/datasets/orders/metrics", params={"counts": "false"}).json()
    assert {(s["metric"], s["points"]) for s in series} == \
        {("volume.records", None), ("completeness.null_ratio", None)}
    dataset = client.get("/api/v1/datasets/orders").json()
    assert dataset["last_window_start"] == BASE + 179 * 60
    assert dataset["open_incidents"] == 0
