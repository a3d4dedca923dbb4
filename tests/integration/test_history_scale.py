"""History at scale, on Postgres (partitioned by day) and SQLite (the demo, one table):
migration 0005 converts existing points and backfills the rollups, a write never fails for
a missing partition, rollups stay exact (also for a replayed window), retention drops
whole days (Postgres) or deletes by time (SQLite), and the history API pages with a
cursor, says when it truncated, picks raw or a rollup by the step and validates its
parameters."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from dqpulse.config import Settings
from dqpulse.records import MetricPoint
from dqpulse.services.retention import run_retention
from dqpulse.spec import parse_spec
from dqpulse.store import datasets as dataset_store
from dqpulse.store import metrics as metric_store
from dqpulse.store import partitions, rollups
from dqpulse.store.db import MIGRATIONS_DIR, make_engine, upgrade_to_head
from dqpulse.store.tables import incidents, metric_points, metric_rollups
from service.app import create_app

pytestmark = pytest.mark.integration

SPEC = parse_spec("""
datasets:
  - name: orders
    topic: orders
    window: 15m
""")
DAY = 86_400.0
BASE = 1_800_230_400.0  # 2027-01-18 00:00 UTC, a multiple of a day
URL = "/api/v1/datasets/orders/metrics/volume.records"


@pytest.fixture
def engine(store_engine: object) -> object:
    return store_engine


def _seed(engine, days: float = 3, start: float = BASE, seed: int = 7) -> list[float]:
    """15-minute windows of volume.records (random values, some missing) from ``start``."""
    rng = random.Random(seed)
    values = []
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=SPEC)
        for i in range(int(days * 96)):
            at = start + 900 * i
            value = None if i % 37 == 5 else float(rng.randint(0, 1000))
            values.append(value)
            metric_store.create_window(conn, dataset="orders", window_start=at,
                                       window_end=at + 900,
                                       points=[MetricPoint("volume.records", value)])
            metric_store.update_scores(conn, dataset="orders", window_start=at, scores=[
                ("volume.records", "", i / 1000, i == 100,
                 {"expected_low": float(i), "expected_high": i + 10.0})])
    return values


def _expected(values: list[float | None], start: float, size: float) -> list[dict]:
    """Buckets of ``size`` seconds computed in Python from the seeded values."""
    buckets: dict[float, list[tuple[int, float | None]]] = {}
    for i, value in enumerate(values):
        at = start + 900 * i
        buckets.setdefault(at // size * size, []).append((i, value))
    out = []
    for bucket, items in sorted(buckets.items()):
        known = [v for _, v in items if v is not None]
        out.append({"window_start": bucket, "points": len(items),
                    "value": sum(known) / len(known) if known else None,
                    "min": min(known, default=None), "max": max(known, default=None),
                    "last": items[-1][1], "score": items[-1][0] / 1000,
                    "anomalous": any(i == 100 for i, _ in items),
                    "expected_low": float(items[0][0])})
    return out


def _rollup_rows(conn) -> list[tuple]:
    c = metric_rollups.c
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row)
            for row in conn.execute(
        select(c.resolution, c.bucket_start, c.points, c.value_count, c.sum, c.min, c.max,
               c.last, c.last_at, c.score, c.anomalous, c.first_at, c.expected_low,
               c.expected_high)
        .where(c.metric == "volume.records").order_by(c.resolution, c.bucket_start))]


def test_rollups_match_the_points_and_a_replayed_window_is_not_counted_twice(engine):
    values = _seed(engine, days=2)
    with engine.begin() as conn:
        incremental = _rollup_rows(conn)
        rollups.rebuild(conn, start=BASE, end=BASE + 2 * DAY)
        assert _rollup_rows(conn) == incremental
        hours = [r for r in incremental if r[0] == 3600]
        assert len(hours) == 48 and all(r[2] == 4 for r in hours)
        # a replayed finalize writes window 10 again with another value
        metric_store.create_window(conn, dataset="orders", window_start=BASE + 9000,
                                   window_end=BASE + 9900,
                                   points=[MetricPoint("volume.records", 5000.0)])
        # a later point of the same window (the autoencoder's) is added, not recomputed
        metric_store.create_window(conn, dataset="orders", window_start=BASE + 9000,
                                   window_end=BASE + 9900,
                                   points=[MetricPoint("anomaly.autoencoder", 0.5)])
        after = {(r[0], r[1]): r for r in _rollup_rows(conn)}
        c = metric_rollups.c
        assert conn.execute(select(c.points, c.last).where(
            c.metric == "anomaly.autoencoder")).all() == [(1, 0.5), (1, 0.5)]
    values[10] = 5000.0
    for size in (3600, 86_400):
        for bucket in _expected(values, BASE, size):
            row = after[(size, bucket["window_start"])]
            assert row[2] == bucket["points"]
            assert (row[5], row[6], row[7]) == (bucket["min"], bucket["max"], bucket["last"])
            assert row[4] / row[3] == pytest.approx(bucket["value"])
            first = int((bucket["window_start"] - BASE) // 900)
            assert (row[11], row[12], row[13]) == (bucket["window_start"], first, first + 10)


def test_the_api_picks_a_rollup_by_step_and_matches_the_points(engine):
    values = _seed(engine, days=3)
    client = TestClient(create_app(Settings(database_url="sqlite://", auth="open"), engine=engine,
                                   spec=SPEC))
    for step, source in [(900, "raw"), (1800, "raw"), (5400, "raw"), (3600, "rollup_1h"),
                         (7200, "rollup_1h"), (86_400, "rollup_1d"),
                         (2 * 86_400, "rollup_1d")]:
        body = client.get(URL, params={"step": step, "start": BASE,
                                       "end": BASE + 3 * DAY}).json()
        assert body["source"] == source, step
        assert body["truncated"] is False and body["next_cursor"] is None
        expected = _expected(values, BASE - BASE % step, step)
        got = [{k: p[k] for k in expected[0]} for p in body["points"]]
        assert [g["window_start"] for g in got] == [e["window_start"] for e in expected]
        for g, e in zip(got, expected, strict=True):
            assert g == pytest.approx(e), (step, g, e)


def test_pages_walk_back_with_a_cursor_and_say_when_they_truncated(engine):
    _seed(engine, days=1)
    client = TestClient(create_app(Settings(database_url="sqlite://", auth="open"), engine=engine,
                                   spec=SPEC))
    for params, total in [({}, 96), ({"step": 3600}, 24), ({"step": 1800}, 48)]:
        seen: list[float] = []
        pages = 0
        query = {**params, "limit": 10}
        while True:
            response = client.get(URL, params=query)
            assert response.status_code == 200, response.text
            body = response.json()
            pages += 1
            starts = [p["window_start"] for p in body["points"]]
            assert starts == sorted(starts) and len(starts) <= 10
            seen = starts + seen
            if not body["truncated"]:
                assert body["next_cursor"] is None and "link" not in response.headers
                break
            link = response.headers["link"]
            assert link.endswith('>; rel="next"')
            linked = parse_qs(urlsplit(link[1:link.index(">")]).query)
            assert linked["cursor"] == [body["next_cursor"]]
            query = {**params, "limit": 10, "cursor": body["next_cursor"]}
        assert len(seen) == len(set(seen)) == total, params
        assert pages == -(-total // 10)
    newest = client.get(URL, params={"limit": 1}).json()
    assert newest["truncated"] is True
    assert [p["window_start"] for p in newest["points"]] == [BASE + 95 * 900]


@pytest.mark.parametrize("params, names", [
    ({"step": "5e-324"}, "step"), ({"step": 0.5}, "step"), ({"step": "nan"}, "step"),
    ({"step": 1e12}, "step"), ({"limit": 0}, "limit"), ({"limit": 100_001}, "limit"),
    ({"start": "1e300"}, "start"), ({"end": "-5"}, "end"),
    ({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "x" * 201}, "cursor"),
])
def test_history_parameters_are_bounded_with_a_precise_422(params, names, tmp_path):
    url = f"sqlite:///{tmp_path / 'v.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=SPEC)
    client = TestClient(create_app(Settings(database_url=url, auth="open"), engine=engine,
                                   spec=SPEC))
    response = client.get(URL, params=params)
    assert response.status_code == 422, response.text
    assert names in response.text
    engine.dispose()


def test_a_cursor_of_another_step_is_refused(engine):
    _seed(engine, days=1)
    client = TestClient(create_app(Settings(database_url="sqlite://", auth="open"), engine=engine,
                                   spec=SPEC))
    cursor = client.get(URL, params={"limit": 5}).json()["next_cursor"]
    response = client.get(URL, params={"step": 3600, "cursor": cursor})
    assert response.status_code == 422 and "cursor" in response.json()["detail"]


def _in_default(conn) -> int:
    return int(conn.execute(text(
        f"SELECT count(*) FROM {partitions.DEFAULT_PARTITION}")).scalar())


def test_a_window_past_every_partition_is_written_then_moved_into_its_day(db_engine):
    with db_engine.begin() as conn:
        assert partitions.is_partitioned(conn)
        assert BASE not in partitions.day_partitions(conn)
    _seed(db_engine, days=1)  # 2027: no partition for these days yet
    with db_engine.begin() as conn:
        assert _in_default(conn) == 96
        created = partitions.ensure_partitions(conn, now=BASE + 3600, ahead_days=2,
                                               keep_from=0.0)
        assert partitions.partition_name(BASE) in created
        assert _in_default(conn) == 0
        assert conn.execute(text(f"SELECT count(*) FROM {partitions.partition_name(BASE)}")
                            ).scalar() == 96
        assert conn.execute(select(func.count()).select_from(metric_points)).scalar() == 96
        # the days ahead exist: the next window goes straight into its day
        assert {BASE + DAY, BASE + 2 * DAY} <= set(partitions.day_partitions(conn))
        assert partitions.ensure_partitions(conn, now=BASE + 3600, ahead_days=2,
                                            keep_from=0.0) == []


def _incident(status: str, resolved_at: datetime | None) -> dict:
    opened = datetime.fromtimestamp(BASE, UTC)
    return {"dataset": "orders", "kind": "anomaly", "severity": "warning", "status": status,
            "dedup_key": f"k-{status}-{resolved_at}", "opened_at": opened,
            "last_alert_at": opened, "resolved_at": resolved_at, "summary": "s"}


def test_retention_drops_expired_days_and_deletes_expired_rows(engine):
    with engine.begin() as conn:
        partitioned = partitions.is_partitioned(conn)
        if partitioned:
            for day in range(4):
                partitions.create_day(conn, BASE + day * DAY)
    _seed(engine, days=4)
    old = datetime.fromtimestamp(BASE + DAY, UTC)
    with engine.begin() as conn:
        conn.execute(incidents.insert(), [_incident("resolved", old),
                                          _incident("open", None),
                                          _incident("resolved", datetime.fromtimestamp(
                                              BASE + 3.5 * DAY, UTC))])
    settings = Settings(database_url="sqlite://", retention_points_days=2,
                        retention_rollups_days=3, retention_incidents_days=1)
    now = BASE + 4 * DAY  # keeps the points of days 2 and 3, rollups of days 1 to 3
    report = run_retention(engine, settings, now=now)
    assert report.ran
    with engine.begin() as conn:
        starts = [r[0] for r in conn.execute(select(metric_points.c.window_start))]
        days = {r[0] for r in conn.execute(select(metric_rollups.c.bucket_start).where(
            metric_rollups.c.resolution == 86_400))}
        statuses = sorted(r[0] for r in conn.execute(select(incidents.c.status)))
        if partitioned:
            assert set(partitions.day_partitions(conn)).isdisjoint({BASE, BASE + DAY})
    assert min(starts) == BASE + 2 * DAY and len(starts) == 2 * 96
    assert days == {BASE + DAY, BASE + 2 * DAY, BASE + 3 * DAY}
    assert statuses == ["open", "resolved"]  # the old resolved one went
    assert report.incidents_deleted == 1
    if partitioned:
        dropped = {d.name for d in report.partitions_dropped}  # and the migration's days
        assert {partitions.partition_name(BASE), partitions.partition_name(BASE + DAY)} \
            <= dropped
        assert partitions.partition_name(BASE + 2 * DAY) not in dropped
        assert all(d.seconds < 1.0 for d in report.partitions_dropped)
        assert report.points_deleted == 0  # whole days, not rows
    else:
        assert report.points_deleted == 2 * 96


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    return config


@pytest.fixture(params=["postgres", "sqlite"])
def migrated_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("fresh_db"))
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade_to_head(url)
    return url


def test_migration_0005_converts_existing_points_and_backfills_the_rollups(migrated_url):
    config = _config(migrated_url)
    command.downgrade(config, "0004")
    engine = make_engine(migrated_url)
    rows = [{"dataset": "orders", "metric": "volume.records", "field": "",
             "window_start": BASE + 900 * i, "window_end": BASE + 900 * (i + 1),
             "value": float(i), "anomalous": i == 3} for i in range(200)]
    with engine.begin() as conn:
        columns = {r[1] for r in conn.exec_driver_sql(
            "SELECT 0, column_name FROM information_schema.columns "
            "WHERE table_name = 'metric_points'")} if conn.dialect.name == "postgresql" else {
            r[1] for r in conn.exec_driver_sql("PRAGMA table_info(metric_points)")}
        assert "id" in columns  # the table as 0001 made it
        conn.execute(text(
            "INSERT INTO metric_points (dataset, metric, field, window_start, window_end, "
            "value, anomalous) VALUES (:dataset, :metric, :field, :window_start, "
            ":window_end, :value, :anomalous)"), rows)
    command.upgrade(config, "head")
    command.check(config)
    with engine.begin() as conn:
        got = conn.execute(select(metric_points.c.window_start, metric_points.c.value)
                           .order_by(metric_points.c.window_start)).all()
        assert [tuple(r) for r in got] == [(r["window_start"], r["value"]) for r in rows]
        hours = conn.execute(select(metric_rollups.c.points, metric_rollups.c.last,
                                    metric_rollups.c.anomalous)
                             .where(metric_rollups.c.resolution == 3600)
                             .order_by(metric_rollups.c.bucket_start)).all()
        assert [tuple(h) for h in hours[:2]] == [(4, 3.0, True), (4, 7.0, False)]
        assert len(hours) == 50
        if conn.dialect.name == "postgresql":
            assert partitions.is_partitioned(conn)
            assert {BASE, BASE + DAY, BASE + 2 * DAY} <= set(partitions.day_partitions(conn))
            assert _in_default(conn) == 0
    command.downgrade(config, "0004")  # and back: the points survive
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM metric_points")).scalar() == 200
    engine.dispose()


def test_the_retention_command_runs_one_pass_and_reports_it(fresh_db):
    """`dqpulse retention` as cron runs it, on Postgres: creates the days ahead and drops
    the expired ones, and says so."""
    engine = make_engine(fresh_db)
    with engine.begin() as conn:
        partitions.create_day(conn, partitions.day_floor(1_700_000_000.0))  # 2023: expired
    engine.dispose()
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "retention"], capture_output=True, text=True,
        timeout=120, env={**os.environ, "DQPULSE_DATABASE_URL": fresh_db,
                          "DQPULSE_PARTITIONS_AHEAD_DAYS": "10"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ran"] is True
    assert [d["name"] for d in report["partitions_dropped"]] == ["metric_points_p20231114"]
    assert len(report["partitions_created"]) == 3  # days 8 to 10 ahead (0005 made 7)


def test_an_empty_range_and_an_empty_cursor_are_well_formed(engine):
    _seed(engine, days=1)
    client = TestClient(create_app(Settings(database_url="sqlite://", auth="open"), engine=engine,
                                   spec=SPEC))
    url = "/api/v1/datasets/orders/metrics/volume.records"
    for params in ({"start": 0, "end": 0, "step": 1}, {"start": 100, "end": 50},
                   {"cursor": "", "limit": 5}):
        response = client.get(url, params=params)
        assert response.status_code == 200, (params, response.text)
        body = response.json()
        assert body["truncated"] is (params.get("limit") == 5)
        assert (body["points"] == []) is ("end" in params)
