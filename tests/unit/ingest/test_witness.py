"""The record a checkpoint names (dqpulse.ingest.witness): which record a partition names
as it reads, what a restored partition makes of the log it meets there, and the reset it
reports when the log was replaced. Pure logic; a real recreated topic on a real Kafka is in
tests/integration/test_offset_resets.py."""

from __future__ import annotations

import logging

import numpy as np
from prometheus_client import CollectorRegistry

from dqpulse.aggregate import PartitionAggregator
from dqpulse.ingest.checkpoint import EndOffsets, prepare
from dqpulse.ingest.partition import OwnedPartition
from dqpulse.ingest.resets import apply_reset
from dqpulse.ingest.witness import Witness, witness_of
from dqpulse.records import PartitionBatch
from dqpulse.sources.base import OffsetReset
from dqpulse.spec import DatasetSpec
from dqpulse.telemetry import Telemetry

SPEC = DatasetSpec(name="orders", topic="orders", event_time="ts", window=60, lateness=0)


def _batch(first: int, n: int, *, tag: str = "a", ts: int = 1_700_000_000_000
           ) -> PartitionBatch:
    offsets = np.arange(first, first + n, dtype=np.int64)
    values: list[bytes | None] = [
        f'{{"ts": {ts // 1000 + int(o)}, "tag": "{tag}"}}'.encode() for o in offsets]
    return PartitionBatch("orders", 0, values, ts + offsets * 1000, offsets)


def _owned(next_offset: int | None = None) -> OwnedPartition:
    return OwnedPartition(PartitionAggregator(SPEC, 0), None, next_offset)


def test_a_partition_names_the_last_record_it_aggregated_never_a_held_one():
    owned = _owned()
    owned.add(_batch(0, 10), now=1.0)
    assert owned.witness == witness_of(_batch(0, 10), 9)
    # coalescing: the next batch is held, so the checkpoint saves offset 10 and the
    # witness stays below it
    owned.add(_batch(10, 3), now=2.0, coalesce=100)
    assert owned.held and owned.checkpoint_offset == 10
    assert owned.witness is not None and owned.witness[0] == 9
    owned.flush()
    assert owned.witness == witness_of(_batch(10, 3), 2) and owned.checkpoint_offset == 13


def test_a_checkpoint_row_carries_the_witness_below_its_offset():
    owned = _owned()
    owned.add(_batch(0, 5), now=1.0)
    job = prepare({("orders", 0): owned}, [("orders", 0)], EndOffsets({}),
                  lambda name: "orders", now=1.0)
    (row,) = job.rows
    assert row.next_offset == 5 and row.witness == witness_of(_batch(0, 5), 4)


def test_the_same_record_holds_another_one_is_a_replaced_log():
    witness = Witness(*witness_of(_batch(0, 100), 41))
    assert witness.check(_batch(0, 20)) is None  # not there yet: nothing decided
    assert witness.check(_batch(41, 10)) is True
    assert witness.check(_batch(30, 30)) is True
    # a recreated topic: other records at the same offsets (another payload, or the same
    # payload produced again at another time)
    assert witness.check(_batch(40, 10, tag="b")) is False
    assert witness.check(_batch(40, 10, ts=1_700_000_500_000)) is False
    # nothing at that offset any more (compacted, deleted): nothing to compare
    assert witness.check(_batch(42, 10, tag="b")) is True
    gap = _batch(38, 10).part(0, 3)  # offsets 38-40, then a batch from 43
    gapped = PartitionBatch.concat([gap, _batch(43, 5, tag="b")])
    assert witness.check(gapped) is True


def test_the_key_is_part_of_the_record():
    batch = _batch(0, 1)
    keyed = PartitionBatch("orders", 0, batch.values, batch.timestamps_ms, batch.offsets,
                           natives=[b"k1"], key_of=lambda native: native)
    other = PartitionBatch("orders", 0, batch.values, batch.timestamps_ms, batch.offsets,
                           natives=[b"k2"], key_of=lambda native: native)
    assert witness_of(keyed, 0) != witness_of(other, 0) != witness_of(batch, 0)


def test_a_replaced_log_is_counted_again_from_offset_0(caplog):
    telemetry = Telemetry(CollectorRegistry())
    owned = {("orders", 0): _owned(500), ("refunds", 0): _owned(480)}
    reset = OffsetReset("orders", 0, at=500, low=0, high=900, replaced_at=499)
    assert (reset.reason, reset.to, reset.unread) == ("replaced", 0, 0)
    with caplog.at_level(logging.ERROR):
        moved = apply_reset(reset, [("orders", 0), ("refunds", 0)], owned, telemetry)
    assert moved == [("orders", 0), ("refunds", 0)]
    assert all(part.next_offset == 0 and part.dirty for part in owned.values())
    assert telemetry.registry.get_sample_value(
        "dqpulse_ingest_offset_resets_total", {"dataset": "refunds", "reason": "replaced"}) == 1
    assert "orders[0]: the record at offset 499 is not the one orders counted there" in (
        caplog.text)
