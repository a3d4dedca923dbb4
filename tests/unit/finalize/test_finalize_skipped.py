"""``finalize_skipped`` (``dqpulse windows refinalize``) on SQLite; the integration test in
tests/integration/test_ingest_behaviour.py runs the CLI on Postgres."""

from __future__ import annotations

import numpy as np
import orjson
from sqlalchemy import insert, select

from dqpulse.aggregate import PartitionAggregator
from dqpulse.finalize import finalize_skipped, skipped_windows
from dqpulse.records import MetricPoint, RawMessage
from dqpulse.spec import DatasetSpec
from dqpulse.store import checkpoints
from dqpulse.store import metrics as metric_store
from dqpulse.store.tables import schema_versions, window_partials

SPEC = DatasetSpec(name="orders", topic="orders", event_time="ts", window=60, lateness=0)


def _partial(records: int, start: float, partition: int) -> bytes:
    aggregator = PartitionAggregator(SPEC, partition)
    aggregator.add([RawMessage("orders", partition, i, int(start * 1000),
                               orjson.dumps({"ts": start + 1, "amount": float(i)}))
                    for i in range(records)], now=start + 100.0)
    return aggregator.snapshot_window(start)


def test_a_skipped_window_is_written_unscored_and_a_window_with_points_is_left_alone(
        engine):
    skipped, written = 600.0, 660.0
    with engine.begin() as conn:
        checkpoints.set_partition_count(conn, dataset="orders", partition_count=2)
        checkpoints.mark_finalized(conn, dataset="orders", until=720.0, baseline=b"",
                                   last_schema={})
        for start, partition, records in ((skipped, 0, 30), (skipped, 1, 12),
                                          (written, 0, 5)):
            conn.execute(insert(window_partials).values(
                dataset="orders", partition=partition, window_start=start,
                state=_partial(records, start, partition)))
        # the window at 660 has points already (written by a pass): its partial stays
        metric_store.create_window(conn, dataset="orders", window_start=written,
                                   window_end=written + 60,
                                   points=[MetricPoint("volume.records", 7.0)])
    assert skipped_windows(engine) == {"orders": [skipped, written]}

    done = {item.window_start: item for item in finalize_skipped(engine, SPEC, now=900.0)}
    assert done[skipped].error is None and done[skipped].records == 42
    assert done[skipped].points > 5
    assert "has points in the history already" in (done[written].error or "")
    assert skipped_windows(engine) == {"orders": [written]}
    with engine.connect() as conn:
        volume = {p["window_start"]: p for p in metric_store.get_points(
            conn, dataset="orders", metric="volume.records", limit=10)}
        mean = metric_store.get_points(conn, dataset="orders", metric="distribution.mean",
                                       field="amount", limit=10)
        history = conn.execute(select(schema_versions)).all()
    assert {start: p["value"] for start, p in volume.items()} == {skipped: 42, written: 7}
    assert volume[skipped]["score"] is None  # unscored
    expected = (sum(range(30)) + sum(range(12))) / 42
    assert np.isclose(mean[0]["value"], expected)
    assert history == []  # no schema observation for a window finalized out of order
    assert finalize_skipped(engine, SPEC, window_start=skipped) == []  # nothing left there
