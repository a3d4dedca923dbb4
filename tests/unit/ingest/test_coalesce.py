"""Coalescing: a partition polled a few records at a time holds them back and aggregates
them as one batch; nothing is lost, counted twice, or given the wrong poll time."""

from __future__ import annotations

import numpy as np
import orjson

from dqpulse.aggregate import PartitionAggregator
from dqpulse.ingest.partition import OwnedPartition
from dqpulse.metrics.freshness import FreshnessState
from dqpulse.metrics.window_state import WindowState
from dqpulse.records import PartitionBatch
from dqpulse.spec import DatasetSpec

SPEC = DatasetSpec(name="d", topic="t", event_time="ts", window=60, lateness=0)


def batch(offsets: range, ts: float = 90.0, bad: int | None = None) -> PartitionBatch:
    values: list[bytes | None] = [
        b'{"ts": 90, "v": ' if o == bad else orjson.dumps({"ts": ts, "v": o, "s": f"x{o % 3}"})
        for o in offsets]
    return PartitionBatch("t", 0, values, np.full(len(values), int(ts * 1000), dtype=np.int64),
                          np.asarray(list(offsets), dtype=np.int64))


def owned() -> OwnedPartition:
    return OwnedPartition(PartitionAggregator(SPEC, 0), None, None)


def test_small_batches_are_held_until_the_partition_holds_enough():
    part = owned()
    assert part.add(batch(range(0, 5)), 100.0, coalesce=12) is None
    assert part.add(batch(range(5, 10)), 101.0, coalesce=12) is None
    assert (part.next_offset, part.held_records, part.dirty) == (10, 10, True)
    assert part.aggregator.counters["accepted"] == 0  # held, not aggregated yet
    # a replay of what is held is not held twice
    assert part.add(batch(range(3, 8)), 101.5, coalesce=12) is None
    assert part.held_records == 10
    report = part.add(batch(range(10, 15), bad=12), 102.0, coalesce=12)
    assert report is not None
    assert (report.accepted, len(report.bad)) == (14, 1)
    assert report.bad[0].message.offset == 12  # the bad record keeps its own offset
    assert part.aggregator.counters["accepted"] == 14
    assert (part.held, part.held_records, part.next_offset) == ([], 0, 15)


def test_a_large_batch_is_aggregated_at_once_and_flush_empties_what_is_held():
    part = owned()
    report = part.add(batch(range(0, 20)), 100.0, coalesce=12)
    assert report is not None and report.accepted == 20
    assert part.add(batch(range(20, 23)), 101.0, coalesce=12) is None
    flushed = part.flush()
    assert flushed is not None and flushed.accepted == 3
    assert part.flush() is None
    assert part.aggregator.counters["accepted"] == 23


def test_coalesced_metrics_equal_the_batch_by_batch_ones():
    one_by_one, coalesced = owned(), owned()
    for start in range(0, 60, 6):
        one_by_one.add(batch(range(start, start + 6)), 100.0)
        coalesced.add(batch(range(start, start + 6)), 100.0, coalesce=1000)
    coalesced.flush()
    points = {}
    for label, part in (("a", one_by_one), ("b", coalesced)):
        state = WindowState.from_bytes(SPEC, part.aggregator.snapshot_window(60.0))
        points[label] = {(p.metric, p.field): p.value for f in state.families.values()
                         for p in f.points()}
    assert points["a"].keys() == points["b"].keys()
    for key, value in points["a"].items():
        other = points["b"][key]
        if isinstance(value, float) and isinstance(other, float):
            assert abs(value - other) <= 1e-9 * max(1.0, abs(value)), key
        else:
            assert value == other, key
    assert points["b"][("volume.records", "")] == 60


def test_each_held_record_keeps_the_time_it_was_polled():
    part = owned()
    part.add(batch(range(0, 5), ts=90.0), 100.0, coalesce=100)
    part.add(batch(range(5, 10), ts=90.0), 105.0, coalesce=100)
    part.flush()
    state = part.aggregator._windows[60.0].families["freshness"]
    assert isinstance(state, FreshnessState)
    assert state.lag.get_min_value() == 10.0  # polled at 100: 10 s behind, not 15
    assert state.lag_max == 15.0


def test_held_records_wait_at_most_max_wait_by_the_worker_clock():
    part = owned()
    assert part.add(batch(range(0, 5)), 100.0, coalesce=1000, max_wait_s=2.0) is None
    assert not part.due(101.9, 1000, 2.0)
    assert part.due(102.0, 1000, 2.0)
    # what waited long enough is aggregated first, on its own (lateness judged in order);
    # the new batch is held in its turn
    report = part.add(batch(range(5, 8)), 102.5, coalesce=1000, max_wait_s=2.0)
    assert report is not None and report.accepted == 5
    assert (part.held_records, part.next_offset) == (3, 8)
    assert part.add(batch(range(8, 10), bad=9), 105.0, coalesce=1000, max_wait_s=0.0) \
        .accepted == 4  # both flushes in one report
    assert not part.due(200.0, 1000, 2.0)  # nothing held


def stamped(offsets: range, kafka_ts: float, ts: float | None = None) -> PartitionBatch:
    """Records whose Kafka timestamp is ``kafka_ts`` (event time ``ts``, default the same)."""
    event = kafka_ts if ts is None else ts
    values: list[bytes | None] = [orjson.dumps({"ts": event, "v": o}) for o in offsets]
    return PartitionBatch("t", 0, values,
                          np.full(len(values), int(kafka_ts * 1000), dtype=np.int64),
                          np.asarray(list(offsets), dtype=np.int64))


LIVE = DatasetSpec(name="d", topic="t", event_time="ts", window=60, lateness=5)


def test_held_records_are_aggregated_when_the_stream_passes_their_window():
    """A live partition holds its records until a record's Kafka timestamp passes the end
    of their window plus lateness (then the window can close at once), not per max_wait."""
    part = OwnedPartition(PartitionAggregator(LIVE, 0), None, None)
    assert part.add(stamped(range(0, 3), 1000.0), 1000.5, coalesce=2000,
                    max_wait_s=600) is None
    assert part.held_until == 960.0 + 60 + 5  # window [960, 1020) + lateness
    for step, t in enumerate((1010.0, 1019.0, 1024.0)):
        assert part.add(stamped(range(3 + step, 4 + step), t), t + 0.5, coalesce=2000,
                        max_wait_s=600) is None  # still inside window + lateness
    report = part.add(stamped(range(6, 7), 1025.5), 1026.0, coalesce=2000, max_wait_s=600)
    assert report is not None and report.accepted == 7  # one metric update for all
    assert part.aggregator.watermark >= 1025.0 and part.held == []
    # the window closed with that update: nothing was late, nothing waits
    assert [start for start, _ in part.aggregator.pop_closed()] == [960.0]


def test_a_quiet_live_partition_is_aggregated_when_the_clock_passes_the_window():
    part = OwnedPartition(PartitionAggregator(LIVE, 0), None, None)
    assert part.add(stamped(range(0, 3), 1000.0), 1000.5, coalesce=2000,
                    max_wait_s=600) is None
    assert part.held_deadline == 1025.0
    assert not part.due(1024.9, 2000, 600)
    assert part.due(1025.0, 2000, 600)  # by the worker's clock: no newer record came


def test_an_old_window_is_held_by_count_and_max_wait_only_until_the_stream_passes_it():
    """Records of a window long past (a backlog): not aggregated at once because the clock
    passed their window, but when a later record passes it (or by count, or max_wait)."""
    part = OwnedPartition(PartitionAggregator(LIVE, 0), None, None)
    assert part.add(stamped(range(0, 3), 100.0), 5000.0, coalesce=2000,
                    max_wait_s=30) is None
    assert (part.held_until, part.held_deadline) == (125.0, float("inf"))
    assert not part.due(5029.0, 2000, 30)
    assert part.add(stamped(range(3, 5), 110.0), 5001.0, coalesce=2000, max_wait_s=30) is None
    report = part.add(stamped(range(5, 6), 126.0), 5002.0, coalesce=2000, max_wait_s=30)
    assert report is not None and report.accepted == 6


def test_a_window_still_open_from_before_bounds_how_long_newer_records_are_held():
    """Event time behind Kafka time: after an update that did not close the window, the
    next records are held only until they pass that still open window, not a window on."""
    part = OwnedPartition(PartitionAggregator(LIVE, 0), None, None)
    part.add(stamped(range(0, 3), 1030.0, ts=1015.0), 1030.5)  # event time 15 s behind
    assert part.aggregator.open_windows == [960.0]
    assert part.add(stamped(range(3, 4), 1031.0, ts=1016.0), 1031.5, coalesce=2000,
                    max_wait_s=600) is not None  # Kafka time is already past 1025
