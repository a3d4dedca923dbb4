"""The SQLite store (the demo's, the benchmarks'): a window's write stays one index range
whatever the history."""

from __future__ import annotations

from sqlalchemy import select

from dqpulse.records import MetricPoint
from dqpulse.store import metrics as metric_store
from dqpulse.store.db import make_engine, upgrade_to_head
from dqpulse.store.tables import metric_points, metric_rollups


def _write(conn, start: float, value: float) -> None:
    metric_store.create_window(conn, dataset="orders", window_start=start,
                               window_end=start + 60.0,
                               points=[MetricPoint("volume.records", value),
                                       MetricPoint("completeness.null_ratio", 0.1, "amount")])


def test_the_replay_check_reads_one_window_through_the_dataset_time_index(tmp_path):
    url = f"sqlite:///{tmp_path / 'dq.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        # without the named index SQLite scanned the dataset's whole history through the
        # primary key (it covers metric and field): every window got slower
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + metric_store._STORED_IN_WINDOW.text,
            {"dataset": "orders", "window_start": 0.0}).fetchall()
        assert any("ix_metric_points_dataset_time (dataset=? AND window_start=?)" in row[-1]
                   for row in plan), plan
        for i in range(5):
            _write(conn, i * 60.0, 10.0)
        _write(conn, 120.0, 30.0)  # a replayed window: replaced, its rollups recomputed
        values = dict(conn.execute(select(metric_points.c.window_start, metric_points.c.value)
                                   .where(metric_points.c.metric == "volume.records")).all())
        hour = conn.execute(select(metric_rollups.c.sum, metric_rollups.c.points).where(
            metric_rollups.c.metric == "volume.records",
            metric_rollups.c.resolution == 3600)).one()
    engine.dispose()
    assert values == {0.0: 10.0, 60.0: 10.0, 120.0: 30.0, 180.0: 10.0, 240.0: 10.0}
    assert tuple(hour) == (70.0, 5)  # the replayed window counted once, with its new value
