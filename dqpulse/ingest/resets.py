"""A partition whose position its log does not hold (the consumer's fetch was out of range).

The consumers are told never to reset a position silently (``auto.offset.reset`` is
``error`` for librdkafka, ``none`` for kafka-python): each source moves such a partition to
its log's start and reports an :class:`~dqpulse.sources.base.OffsetReset`, which the worker
applies here, per data set reading the partition:

- ``retention``: the log starts after the position (the records between were deleted by
  the topic's retention, or by deleted records, before a worker read them, typically after
  workers were down or behind for longer than ``retention.ms``): a warning with the range,
  ``dqpulse_ingest_records_unread_total`` counts them, and the count goes on from the log's
  start (nothing there was counted before).
- ``replaced`` (session 47): the log holds another record than the one the checkpoint
  named as counted (:mod:`dqpulse.ingest.witness`): a recreated topic that already holds
  more records than the position. As ``log_shorter``, read again from offset 0.
- ``log_shorter``: the log ends before the position, so it is not the log that was counted
  up to there: the topic was deleted and recreated (or an unclean leader election truncated
  the partition). Before session 46 the consumer went back to the log's start silently and
  the worker skipped every record below its old position as counted before, losing a
  recreated topic's records until its offsets passed the old ones. Now an error is logged,
  and the partition is counted from the log's start: every record of a recreated topic
  counts. (Where an unclean election truncated the log instead, the records that stayed are
  counted again; such elections are off unless ``unclean.leader.election.enable`` is set.)

A ``log_shorter`` reset for an offset beyond where the data set reads now is from a fetch
made before an earlier reset of the partition, reported late: ignored (applying it again
counted the records since that reset twice).

A ``retried`` reset is checked with the partition's witness all the same: a log that was
shorter than the position a moment ago and holds it again may be a recreated topic
refilled meanwhile (``IngestWorker._witness_again``).

Each is counted in ``dqpulse_ingest_offset_resets_total{dataset,reason}`` and alerts
(``DqpulsePartitionLogReset``). A recreated topic that already holds more records than the
old position when its partition is next read is not out of range: the checkpoint's witness
tells it apart (``replaced``) when the partition is next restored; a running worker
whose next fetch (librdkafka) already finds the old position held is not told (a known
limit, docs/operations.md). kafka-python 3 reports a log that diverges from the records
read (KIP-320) itself: its source reports that as ``replaced``. (A topic recreated with
fewer partitions is met on assignment instead:
:func:`dqpulse.ingest.assignment.retire_gone`.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from dqpulse.ingest.partition import OwnedPartition, PartitionKey
from dqpulse.sources.base import OffsetReset
from dqpulse.telemetry import Telemetry

log = logging.getLogger(__name__)

__all__ = ["apply_reset"]


def apply_reset(reset: OffsetReset, keys: Sequence[PartitionKey],
                owned: Mapping[PartitionKey, OwnedPartition],
                telemetry: Telemetry) -> list[PartitionKey]:
    """Log and count ``reset`` for the data sets (``keys``) reading its partition, and move
    back the ones it says to count from the log's start; returns those (their held records
    must have been counted first: they are from the old log)."""
    where = f"{reset.topic}[{reset.partition}]"
    moved: list[PartitionKey] = []
    for key in keys:
        part = owned.get(key)
        if part is None:
            continue
        extra = {"dataset": key[0], "partitions": [reset.partition]}
        read_to = reset.at if part.next_offset is None else max(reset.at, part.next_offset)
        if reset.reason == "retention" and read_to >= reset.low:
            continue  # another data set of the topic was behind: this one lost nothing
        if (reset.reason == "log_shorter" and part.next_offset is not None
                and reset.at > part.next_offset):
            # a fetch from before a reset this data set has applied already (librdkafka
            # reported offset 95 out of range twice for one partition of a topic moved
            # with its log shorter, the second after the partition was counted from 0 to
            # 10: applied again, it counted 0-9 twice; session 48). The source has moved
            # the consumer to the log's start again; the records below next_offset are
            # skipped as counted.
            log.info("%s: a second report that offset %d is out of range, from before %s "
                     "was moved back to offset %d: nothing to do", where, reset.at, key[0],
                     part.next_offset, extra=extra)
            continue
        telemetry.offset_resets.labels(key[0], reset.reason).inc()
        if reset.reason == "retention":
            first, unread = read_to, reset.low - read_to
            telemetry.records_unread.labels(key[0]).inc(unread)
            log.warning("%s: offsets %d-%d were deleted from the topic (its retention, or "
                        "deleted records) before they were read: %d records of %s never "
                        "counted; reading on from offset %d", where, first, reset.low - 1,
                        unread, key[0], reset.low, extra=extra)
        elif reset.reason == "replaced":
            log.error("%s: the record at offset %d is not the one %s counted there: the "
                      "topic was deleted and recreated (or an unclean leader election "
                      "truncated the partition and it was written since), and %s had read "
                      "the old log up to offset %d; counting it from offset %d",
                      where, reset.replaced_at, key[0], key[0], read_to, reset.to,
                      extra=extra)
            part.next_offset = reset.to
            part.dirty = True
            moved.append(key)
        elif reset.reason == "log_shorter":
            held = (f"holds offsets {reset.low}-{reset.high - 1}" if reset.high > reset.low
                    else f"is empty (next offset {reset.high})")
            log.error("%s: its log %s, and %s had read it up to offset %d: the topic was "
                      "deleted and recreated (or an unclean leader election truncated the "
                      "partition); counting it from its start, offset %d",
                      where, held, key[0], read_to, reset.low, extra=extra)
            if part.next_offset is None or part.next_offset > reset.to:
                part.next_offset = reset.to
                part.dirty = True
                moved.append(key)
        else:
            log.info("%s: offset %d was out of range and is in the log now (%d-%d): "
                     "reading on from it", where, reset.at, reset.low, reset.high - 1,
                     extra=extra)
    return moved
