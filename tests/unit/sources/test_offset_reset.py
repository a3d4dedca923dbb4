"""A partition whose position its log did not hold: what a source reports
(:class:`OffsetReset`) and what the worker makes of it per data set
(:func:`dqpulse.ingest.resets.apply_reset`). Pure logic; the real consumers are in
tests/integration/test_offset_resets.py."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from dqpulse.aggregate import PartitionAggregator
from dqpulse.ingest.partition import OwnedPartition
from dqpulse.ingest.resets import apply_reset
from dqpulse.sources.base import OffsetReset
from dqpulse.spec import DatasetSpec
from dqpulse.telemetry import Telemetry


def test_the_three_reasons_and_where_each_reads_on():
    retention = OffsetReset("orders", 3, at=1000, low=1500, high=2000)
    assert (retention.reason, retention.to, retention.unread) == ("retention", 1500, 500)
    shorter = OffsetReset("orders", 3, at=1000, low=0, high=30)
    assert (shorter.reason, shorter.to, shorter.unread) == ("log_shorter", 0, 0)
    moved = OffsetReset("orders", 3, at=1000, low=900, high=1200)
    assert (moved.reason, moved.to, moved.unread) == ("retried", 1000, 0)
    at_end = OffsetReset("orders", 3, at=30, low=0, high=30)  # the next offset to come
    assert at_end.reason == "retried" and at_end.to == 30


def _owned(name: str, next_offset: int | None) -> OwnedPartition:
    spec = DatasetSpec(name=name, topic="orders", event_time="ts", window=60, lateness=0)
    return OwnedPartition(PartitionAggregator(spec, 3), 1, next_offset, dirty=False)


def _sample(telemetry: Telemetry, name: str, **labels: str) -> float:
    return telemetry.registry.get_sample_value(name, labels) or 0.0


def test_retention_counts_what_each_data_set_had_not_read(caplog):
    """Two data sets on one topic: the consumer resumed at the least advanced one's
    offset, so each lost what lay between its own offset and the log's start."""
    telemetry = Telemetry(CollectorRegistry())
    owned = {("a", 3): _owned("a", 1000), ("b", 3): _owned("b", 1200)}
    with caplog.at_level(logging.WARNING):
        moved = apply_reset(OffsetReset("orders", 3, at=1000, low=1500, high=2000),
                            [("a", 3), ("b", 3), ("gone", 3)], owned, telemetry)
    assert moved == []  # records from the log's start were never counted: read on
    assert owned[("a", 3)].next_offset == 1000 and not owned[("a", 3)].dirty
    assert _sample(telemetry, "dqpulse_ingest_records_unread_total", dataset="a") == 500
    assert _sample(telemetry, "dqpulse_ingest_records_unread_total", dataset="b") == 300
    assert _sample(telemetry, "dqpulse_ingest_offset_resets_total", dataset="b",
                   reason="retention") == 1
    assert "orders[3]: offsets 1200-1499 were deleted from the topic" in caplog.text
    # a data set already past the log's start lost nothing: not counted, not logged
    owned[("c", 3)] = _owned("c", 1600)
    apply_reset(OffsetReset("orders", 3, at=1000, low=1500, high=2000), [("c", 3)], owned,
                telemetry)
    assert _sample(telemetry, "dqpulse_ingest_offset_resets_total", dataset="c",
                   reason="retention") == 0
    assert "of c never counted" not in caplog.text


def test_a_log_shorter_than_the_position_is_counted_from_its_start(caplog):
    telemetry = Telemetry(CollectorRegistry())
    owned = {("a", 3): _owned("a", 100)}
    with caplog.at_level(logging.ERROR):
        moved = apply_reset(OffsetReset("orders", 3, at=100, low=0, high=30), [("a", 3)],
                            owned, telemetry)
    assert moved == [("a", 3)]
    assert owned[("a", 3)].next_offset == 0 and owned[("a", 3)].dirty  # saved at the next
    assert _sample(telemetry, "dqpulse_ingest_offset_resets_total", dataset="a",
                   reason="log_shorter") == 1
    assert _sample(telemetry, "dqpulse_ingest_records_unread_total", dataset="a") == 0
    assert ("orders[3]: its log holds offsets 0-29, and a had read it up to offset 100: "
            "the topic was deleted and recreated") in caplog.text


def test_an_empty_log_says_so(caplog):
    """A topic recreated a moment ago holds nothing yet: no range ``0--1`` in the log."""
    owned = {("a", 3): _owned("a", 100)}
    with caplog.at_level(logging.ERROR):
        apply_reset(OffsetReset("orders", 3, at=100, low=0, high=0), [("a", 3)], owned,
                    Telemetry(CollectorRegistry()))
    assert owned[("a", 3)].next_offset == 0
    assert ("orders[3]: its log is empty (next offset 0), and a had read it up to offset "
            "100: the topic was deleted and recreated") in caplog.text


def test_a_late_second_report_of_the_same_fetch_is_not_applied_again(caplog):
    """librdkafka reported offset 95 out of range twice for one partition of a topic moved
    to a shorter log (the second after re-assigning its neighbour restarted the stale
    fetch): applied again, it moved the data set back to 0 after it had counted 0-9, and
    counted them twice (tests/integration/test_topic_change.py, session 48)."""
    telemetry = Telemetry(CollectorRegistry())
    owned = {("a", 0): _owned("a", 96)}
    first = OffsetReset("orders", 0, at=95, low=0, high=10)  # the fetch at the witness
    assert apply_reset(first, [("a", 0)], owned, telemetry) == [("a", 0)]
    owned[("a", 0)].next_offset = 10  # records 0-9 of the new log counted since
    with caplog.at_level(logging.INFO):
        again = apply_reset(OffsetReset("orders", 0, at=95, low=0, high=25), [("a", 0)],
                            owned, telemetry)
    assert again == [] and owned[("a", 0)].next_offset == 10  # 0-9 skipped as counted
    assert _sample(telemetry, "dqpulse_ingest_offset_resets_total", dataset="a",
                   reason="log_shorter") == 1
    assert "a second report that offset 95 is out of range" in caplog.text
    # a new log shorter than where it reads now is a reset again
    assert apply_reset(OffsetReset("orders", 0, at=10, low=0, high=4), [("a", 0)], owned,
                       telemetry) == [("a", 0)]
    assert owned[("a", 0)].next_offset == 0
