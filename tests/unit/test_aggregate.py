from __future__ import annotations

import math

import orjson
import pytest

from dqpulse.aggregate import UNPROCESSABLE, PartitionAggregator, add_isolating
from dqpulse.metrics import FinalizeContext, WindowState, finalize_window, merge_partials
from dqpulse.records import PartitionBatch, RawMessage
from dqpulse.spec import DatasetSpec

SPEC = DatasetSpec(name="orders", topic="orders", event_time="ts", window=60, lateness=30)


def message(value: dict | bytes | None, offset: int = 0, kafka_s: float = 1000.0) -> RawMessage:
    data = orjson.dumps(value) if isinstance(value, dict) else value
    return RawMessage("orders", 0, offset, int(kafka_s * 1000), data)


def records_of(blob: bytes, spec: DatasetSpec = SPEC) -> int:
    return WindowState.from_bytes(spec, blob).volume.records


def test_records_go_to_the_window_of_their_event_time():
    aggregator = PartitionAggregator(SPEC, 0)
    messages = [message({"ts": t, "v": 1}, i) for i, t in enumerate([0, 59.9, 60, 125, 61])]
    report = aggregator.add(messages, now=200.0)
    assert (report.accepted, report.late, report.bad) == (5, 0, [])
    assert aggregator.open_windows == [0.0, 60.0, 120.0]
    assert aggregator.watermark == 125.0
    assert aggregator.last_record_at == 200.0
    closed = aggregator.pop_closed()  # 0 + 60 + 30 <= 125
    assert [(start, records_of(blob)) for start, blob in closed] == [(0.0, 2)]
    assert aggregator.open_windows == [60.0, 120.0]


def test_event_time_in_ms_and_iso_and_fallback_to_the_kafka_timestamp():
    base = 1_700_000_040  # a window start
    aggregator = PartitionAggregator(SPEC, 0)
    now = base + 500.0
    report = aggregator.add([message({"ts": (base + 1) * 1000}, 0)], now=now)  # ms
    assert report.event_time_fallbacks == 0
    report = aggregator.add([
        message({"ts": "2023-11-14T22:15:02Z"}, 1),  # ISO, base + 62
        message({"ts": "garbage"}, 2, kafka_s=base + 130.0),  # -> Kafka timestamp
        message({"other": 1}, 3, kafka_s=base + 10.0),  # missing -> Kafka timestamp
    ], now=now)
    assert report.accepted == 3
    assert report.event_time_fallbacks == 2
    assert aggregator.open_windows == [base, base + 60.0, base + 120.0]


def test_event_times_far_in_the_future_fall_back():
    aggregator = PartitionAggregator(SPEC, 0, max_future_s=3600)
    report = aggregator.add([message({"ts": 10_000_000}, 0, kafka_s=100.0)], now=100.0)
    assert report.event_time_fallbacks == 1
    assert aggregator.open_windows == [60.0]


def test_event_times_before_1970_and_in_us_or_ns_are_read_as_a_producer_means_them():
    base = 1_700_000_040
    aggregator = PartitionAggregator(SPEC, 0)
    report = aggregator.add([
        message({"ts": -1e300}, 0, kafka_s=base + 5.0),  # absurd: -> Kafka timestamp
        message({"ts": -5}, 1, kafka_s=base + 6.0),  # before 1970: -> Kafka timestamp
        message({"ts": (base + 61) * 1_000_000}, 2),  # microseconds
        message({"ts": (base + 121) * 1_000_000_000}, 3),  # nanoseconds
    ], now=base + 500.0)
    assert (report.accepted, report.event_time_fallbacks) == (4, 2)
    assert aggregator.open_windows == [base, base + 60.0, base + 120.0]


def test_without_event_time_the_kafka_timestamp_is_used():
    spec = DatasetSpec(name="orders", topic="orders", window=60, lateness=0)
    aggregator = PartitionAggregator(spec, 0)
    aggregator.add([message({"a": 1}, 0, kafka_s=125.0)], now=126.0)
    assert aggregator.open_windows == [120.0]


def test_late_records_are_counted_once_never_in_a_closed_windows_volume():
    aggregator = PartitionAggregator(SPEC, 0)
    aggregator.add([message({"ts": 10}, 0), message({"ts": 200}, 1)], now=300.0)
    closed = aggregator.pop_closed()
    assert [(s, records_of(b)) for s, b in closed] == [(0.0, 1)]
    report = aggregator.add([message({"ts": 20}, 2), message({"ts": 201}, 3)], now=301.0)
    assert (report.accepted, report.late) == (1, 1)
    state = WindowState.from_bytes(SPEC, aggregator.snapshot_window(180.0))
    assert (state.volume.records, state.volume.late_records) == (2, 1)
    assert aggregator.counters["late"] == 1


def test_bad_messages_are_reported_by_reason_and_not_counted():
    aggregator = PartitionAggregator(SPEC, 0, max_message_bytes=100)
    messages = [
        message({"ts": 1}, 0),
        message(None, 1),
        message(b"", 2),
        message(b'{"ts": 1, "x": "' + b"y" * 200 + b'"}', 3),
        message(b'{"ts": 1', 4),
        message(b"[1]", 5),
        message(b"nope", 6),
    ]
    report = aggregator.add(messages, now=10.0)
    assert report.accepted == 1
    assert sorted((b.message.offset, b.reason) for b in report.bad) == [
        (1, "empty"), (2, "empty"), (3, "oversized"), (4, "truncated"),
        (5, "not_an_object"), (6, "invalid_json")]
    assert report.bad_by_reason == {"empty": 2, "oversized": 1, "truncated": 1,
                                    "not_an_object": 1, "invalid_json": 1}
    aggregator.tick(1000.0)
    [(_, blob)] = aggregator.pop_closed()
    assert records_of(blob) == 1


def test_idle_tick_closes_windows_on_wall_clock():
    aggregator = PartitionAggregator(SPEC, 0, idle_timeout_s=10)
    aggregator.add([message({"ts": 100}, 0)], now=100.0)
    aggregator.tick(105.0)
    assert aggregator.pop_closed() == []
    aggregator.tick(200.0)
    assert aggregator.watermark == 200.0
    assert [s for s, _ in aggregator.pop_closed()] == [60.0]


def test_a_partition_that_never_saw_a_record_follows_the_wall_clock():
    aggregator = PartitionAggregator(SPEC, 3)
    aggregator.tick(500.0)
    assert aggregator.watermark == 500.0
    assert aggregator.last_record_at is None


def batches():
    return [
        [message({"ts": t, "k": f"k{t % 7}", "v": t * 1.5}, i) for i, t in enumerate(range(50))],
        [message({"ts": t, "k": f"k{t % 5}", "v": None}, 100 + i)
         for i, t in enumerate(range(40, 150))],
        [message({"ts": 5}, 300), message({"ts": 160, "new": True}, 301)],
    ]


def finalized(aggregator: PartitionAggregator) -> dict:
    aggregator.tick(10_000.0)
    out = {}
    for start, blob in aggregator.pop_closed():
        state = merge_partials(SPEC, [blob])
        ctx = FinalizeContext(start, start + 60, 10_000.0, aggregator.last_record_at, 0)
        for point in finalize_window(SPEC, state, ctx, None).points:
            out[(start, point.metric, point.field)] = point.value
    return out


@pytest.mark.parametrize("cut", [1, 2])
def test_snapshot_restore_then_add_equals_uninterrupted(cut):
    straight = PartitionAggregator(SPEC, 0)
    for number, batch in enumerate(batches()):
        straight.add(batch, now=200.0 + number)
    resumed = PartitionAggregator(SPEC, 0)
    for number, batch in enumerate(batches()[:cut]):
        resumed.add(batch, now=200.0 + number)
    blob = resumed.snapshot()
    assert blob == resumed.snapshot()  # deterministic
    resumed = PartitionAggregator.restore(SPEC, 0, blob)
    for number, batch in enumerate(batches()[cut:], start=cut):
        resumed.add(batch, now=200.0 + number)
    assert resumed.watermark == straight.watermark == 160.0
    assert resumed.last_record_at == straight.last_record_at
    assert resumed.counters == straight.counters
    got, want = finalized(resumed), finalized(straight)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == (value if value is None else pytest.approx(value, rel=1e-12)), key


def test_window_records_sum_to_the_accepted_records():
    aggregator = PartitionAggregator(SPEC, 0)
    accepted = 0
    for batch in batches():
        accepted += aggregator.add(batch, now=300.0).accepted
    aggregator.tick(10_000.0)
    total = sum(records_of(blob) for _, blob in aggregator.pop_closed())
    assert total == accepted == 161


def test_message_key_prefixes_feed_the_segments_also_when_keys_are_not_utf8():
    spec = SPEC.model_copy(update={"dimensions": ["kafka.key_prefix"]})
    aggregator = PartitionAggregator(spec, 0)
    keyed = [RawMessage("orders", 0, i, 1_000_000, orjson.dumps({"ts": 1}), key)
             for i, key in enumerate([b"checkout:1", b"checkout:2", b"\xff\xfe:3", None,
                                      b"-lead", b"cart|9"])]
    report = aggregator.add(keyed, now=2000.0)  # a binary key must not stop ingest
    assert report.accepted == 6
    aggregator.tick(10_000.0)
    [(_, blob)] = aggregator.pop_closed()
    table = WindowState.from_bytes(spec, blob).segments.tables["kafka.key_prefix"]
    counts = {value: row[0] for value, row in table.rows().items()}
    assert counts == {"checkout": 2, "\ufffd\ufffd": 1, "(null)": 2, "cart": 1}
    plain = PartitionAggregator(SPEC, 0)  # not declared: keys are not even read
    plain.add(keyed, now=2000.0)
    plain.tick(10_000.0)
    [(_, blob)] = plain.pop_closed()
    assert list(WindowState.from_bytes(SPEC, blob).segments.tables) == ["kafka.partition"]


def test_a_window_with_values_whose_squares_overflow_still_merges_and_finalizes():
    """1e160 squared is beyond the float range: the moments' m2 became infinite, JSON wrote
    it as null, and merging two partials of the window failed (TypeError) on every
    finalization pass, so the whole data set stopped. Now that window's spread is NaN."""
    spec = DatasetSpec(name="orders", topic="orders", event_time="ts", window=60,
                       lateness=30)
    aggregator = PartitionAggregator(spec, 0)
    report = aggregator.add([message({"ts": 10, "amount": 1e160}, 0),
                             message({"ts": 11, "amount": 5.5}, 1),
                             message({"ts": 500, "amount": 1.0}, 2)], now=1000.0)
    assert report.accepted == 3
    (start, blob), = aggregator.pop_closed()
    state = merge_partials(spec, [blob, blob])  # two partitions' partials of one window
    points = {(p.metric, p.field): p.value for p in finalize_window(
        spec, state, FinalizeContext(start, start + 60, 1000.0, 1000.0, 0), None).points}
    assert points["volume.records", ""] == 4
    assert points["distribution.max", "amount"] == 1e160
    assert math.isnan(points["distribution.std", "amount"])


def _poisoned_update(monkeypatch):
    """Make a window update count the batch, then raise when it holds a record whose
    ``v`` is negative: a bug met by one record, after the state was half updated."""
    real = WindowState.update

    def update(self, batch):
        real(self, batch)
        if (batch.frame["v"] < 0).any():
            raise ValueError("a bug met by this record")

    monkeypatch.setattr(WindowState, "update", update)


def test_add_isolating_leaves_out_only_the_records_whose_update_raises(monkeypatch):
    records = [{"ts": 10 + i, "v": float(i)} for i in range(40)]
    for i in (3, 17, 18, 39):
        records[i]["v"] = -1.0
    batch = PartitionBatch.from_messages([message(r, i) for i, r in enumerate(records)])
    _poisoned_update(monkeypatch)
    aggregator = PartitionAggregator(SPEC, 0)
    aggregator.add([message({"ts": 5, "v": 0.5}, 100)], now=200.0)
    before = aggregator.snapshot()
    with pytest.raises(ValueError):
        aggregator.clone().add(batch, now=200.0)

    counted, report = add_isolating(aggregator, batch, now=200.0)
    assert aggregator.snapshot() == before  # the state it started from is untouched
    assert (report.accepted, report.late) == (36, 0)
    assert [(b.message.offset, b.reason) for b in report.bad] == [
        (3, UNPROCESSABLE), (17, UNPROCESSABLE), (18, UNPROCESSABLE), (39, UNPROCESSABLE)]
    assert "ValueError: a bug met by this record" in report.bad[0].detail
    assert report.bad_by_reason == {UNPROCESSABLE: 4}
    assert counted.counters["accepted"] == 37 and counted.counters[f"bad.{UNPROCESSABLE}"] == 4
    # every other record counts exactly once: as if the poison had never been sent
    monkeypatch.undo()
    clean = PartitionAggregator(SPEC, 0)
    clean.add([message({"ts": 5, "v": 0.5}, 100)], now=200.0)
    clean.add([message(r, i) for i, r in enumerate(records) if r["v"] >= 0], now=200.0)
    [(start, blob)] = [(s, counted.snapshot_window(s)) for s in counted.open_windows]
    assert records_of(blob) == records_of(clean.snapshot_window(start)) == 37
    ctx = FinalizeContext(start, start + 60, 1000.0, 200.0, 0)

    def points(data: bytes) -> dict:
        state = WindowState.from_bytes(SPEC, data)
        return {(p.metric, p.field): p.value
                for p in finalize_window(SPEC, state, ctx, None).points
                if p.value is not None}

    assert points(blob) == pytest.approx(points(clean.snapshot_window(start)), rel=1e-12)


def test_add_isolating_counts_a_clean_batch_at_once_and_decode_failures_once():
    batch = PartitionBatch.from_messages(
        [message({"ts": 10, "v": 1.0}, 0), message(b"{nope", 1), message({"ts": 11}, 2)])
    aggregator = PartitionAggregator(SPEC, 0)
    counted, report = add_isolating(aggregator, batch, now=200.0)
    assert (report.accepted, [b.reason for b in report.bad]) == (2, ["invalid_json"])
    assert counted is not aggregator and aggregator.counters["accepted"] == 0


def test_add_isolating_when_every_record_raises_dead_letters_all_and_logs_a_few(
        monkeypatch, caplog):
    """A state that raises on any update (not one record's doing): every record is
    reported, none counted, and the log holds three tracebacks and a count, not one
    traceback per record."""
    def update(self, batch):
        raise RuntimeError("a broken state")

    monkeypatch.setattr(WindowState, "update", update)
    batch = PartitionBatch.from_messages([message({"ts": 10, "v": float(i)}, i)
                                          for i in range(50)])
    with caplog.at_level("ERROR", logger="dqpulse.aggregate"):
        counted, report = add_isolating(PartitionAggregator(SPEC, 0), batch, now=200.0)
    assert report.accepted == 0 and report.bad_by_reason == {UNPROCESSABLE: 50}
    assert [b.message.offset for b in report.bad] == list(range(50))
    assert counted.open_windows == []
    assert len(caplog.records) == 4 and "50 records of orders[0]" in caplog.records[-1].message


def test_add_isolating_drops_no_record_when_memory_runs_out(monkeypatch):
    """Running out of memory is no record's fault: it propagates (the worker restarts and
    replays from its checkpoint) instead of dead-lettering the batch record by record."""
    def update(self, batch):
        raise MemoryError

    monkeypatch.setattr(WindowState, "update", update)
    batch = PartitionBatch.from_messages([message({"ts": 10, "v": 1.0}, 0)])
    with pytest.raises(MemoryError):
        add_isolating(PartitionAggregator(SPEC, 0), batch, now=200.0)
