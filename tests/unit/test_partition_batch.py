"""PartitionBatch: the columnar poll batch sources hand the worker."""

from __future__ import annotations

import numpy as np

from dqpulse.aggregate import PartitionAggregator
from dqpulse.records import PartitionBatch, RawMessage, batches_from_messages
from dqpulse.spec import DatasetSpec


def _messages() -> list[RawMessage]:
    # interleaved as a multi-partition poll returns them, two topics
    return [
        RawMessage("a", 1, 10, 1000, b'{"x": 1}', b"k10"),
        RawMessage("a", 0, 5, 1001, b'{"x": 2}', None),
        RawMessage("a", 1, 11, 1002, b'{"x": 3}', b"k11"),
        RawMessage("b", 1, 7, 1003, b'{"x": 4}', None),
        RawMessage("a", 0, 6, 1004, b'{"x": 5}', None),
        RawMessage("a", 1, 13, 1005, b'{"x": 6}', b"k13"),
    ]


def test_grouping_keeps_offset_order_within_each_partition() -> None:
    batches = batches_from_messages(_messages())
    got = {(b.topic, b.partition): (b.offsets.tolist(), b.values, b.timestamps_ms.tolist())
           for b in batches}
    assert got == {
        ("a", 0): ([5, 6], [b'{"x": 2}', b'{"x": 5}'], [1001, 1004]),
        ("a", 1): ([10, 11, 13], [b'{"x": 1}', b'{"x": 3}', b'{"x": 6}'], [1000, 1002, 1005]),
        ("b", 1): ([7], [b'{"x": 4}'], [1003]),
    }
    assert sum(map(len, batches)) == len(_messages())


def test_one_partition_poll_is_passed_through_whole() -> None:
    messages = [m for m in _messages() if (m.topic, m.partition) == ("a", 1)]
    [batch] = batches_from_messages(messages)
    assert (batch.first_offset, batch.last_offset, len(batch)) == (10, 13, 3)


def test_message_rebuilds_the_raw_message_with_its_key() -> None:
    batch = next(b for b in batches_from_messages(_messages()) if b.partition == 1
                 and b.topic == "a")
    assert batch.message(2) == RawMessage("a", 1, 13, 1005, b'{"x": 6}', b"k13")


def test_since_skips_already_counted_offsets_even_with_gaps() -> None:
    batch = next(b for b in batches_from_messages(_messages()) if b.partition == 1
                 and b.topic == "a")
    later = batch.since(12)  # offset 12 is a gap (compaction, transaction marker)
    assert later.offsets.tolist() == [13]
    assert later.message(0).key == b"k13"
    assert len(batch.since(14)) == 0
    assert batch.since(0).offsets.tolist() == [10, 11, 13]


def test_aggregator_counts_a_partition_batch_like_raw_messages() -> None:
    spec = DatasetSpec(name="d", topic="a")
    messages = [RawMessage("a", 0, i, 1_000_000 + i, b'{"x": %d}' % i if i != 3 else b"{bad")
                for i in range(6)]
    columnar = PartitionAggregator(spec, 0).add(PartitionBatch.from_messages(messages), 2000.0)
    plain = PartitionAggregator(spec, 0).add(messages, 2000.0)
    assert (columnar.accepted, columnar.bad_by_reason) == (plain.accepted, plain.bad_by_reason)
    assert columnar.accepted == 5
    assert [b.message for b in columnar.bad] == [messages[3]]


def test_empty_poll_gives_no_batches() -> None:
    assert batches_from_messages([]) == []
    assert len(PartitionBatch.from_messages([])) == 0
    assert np.asarray(PartitionBatch.from_messages([]).offsets).size == 0
