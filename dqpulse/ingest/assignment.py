"""Partition assignment: restore checkpoints on assign, resume positions after a reload.

On assignment a worker loads each (dataset, partition)'s checkpoint and the consumer
starts at its stored ``next_offset``; without a checkpoint it starts where the group's
reset policy says. A database error while restoring is retried with back-off for a
while (a blip during a rebalance is survived); no start offset is ever guessed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from dqpulse.ingest.careful import CarefulCount
from dqpulse.ingest.partition import AggregatorOptions, OwnedPartition, PartitionKey
from dqpulse.ingest.witness import Witness
from dqpulse.sources.base import Source, TopicPartition
from dqpulse.spec import DatasetSpec
from dqpulse.store import checkpoints

log = logging.getLogger(__name__)

#: how long partition assignment retries a database error before the worker gives up
ASSIGN_RETRY_S = 30.0

T = TypeVar("T")


def restore(engine: Engine, owned: MutableMapping[PartitionKey, OwnedPartition],
            partitions: Sequence[TopicPartition], *,
            by_topic: Mapping[str, Sequence[DatasetSpec]], partition_counts: Mapping[str, int],
            options: AggregatorOptions,
            careful: MutableMapping[PartitionKey, CarefulCount] | None = None,
            witnesses: bool = False,
            ) -> dict[TopicPartition, int | None]:
    """Load the assigned partitions' checkpoints into ``owned``; returns where to start
    each topic partition (None: no checkpoint for some dataset on it, use the reset
    policy). The partitions whose checkpoint workers restored before and died before
    their first checkpoint go into ``careful`` (:mod:`dqpulse.ingest.careful`).
    ``witnesses``: a checkpoint that names a record it counted starts its partition at
    that record, to be compared with what the log holds there (:mod:`dqpulse.ingest.witness`)."""
    starts: dict[TopicPartition, int | None] = {}
    with engine.begin() as conn:
        for topic, partition in partitions:
            datasets = by_topic.get(topic, [])
            offsets: list[int] = []
            for dataset in datasets:
                now_has = partition_counts[topic]
                before = checkpoints.set_partition_count(conn, dataset=dataset.name,
                                                         partition_count=now_has)
                if before is not None and now_has < before:
                    retire_gone(conn, dataset, topic, before, now_has, options)
                saved = checkpoints.get(conn, dataset=dataset.name, partition=partition)
                owned[(dataset.name, partition)] = options.new(dataset, partition, saved)
                if careful is not None:
                    careful.pop((dataset.name, partition), None)
                if saved is not None and saved.topic is not None and saved.topic != topic:
                    _moved(owned[(dataset.name, partition)], dataset, partition, saved.topic)
                elif saved is not None:
                    if witnesses and saved.witness is not None:
                        owned[(dataset.name, partition)].verify = Witness(*saved.witness)
                        offsets.append(saved.witness[0])
                    else:
                        offsets.append(saved.next_offset)
                    restored = _note_restore(conn, dataset.name, partition, saved)
                    count = CarefulCount.after(restored, saved.next_offset)
                    if count is not None and careful is not None:
                        careful[(dataset.name, partition)] = count
                        _log_careful(dataset.name, partition, saved.next_offset, count)
                    # its first checkpoint writes it, whatever changed (a save that
                    # moved past the restored offset clears the count of restores, and so
                    # does a worker that stops or hands it over in good order)
                    owned[(dataset.name, partition)].dirty = True
            # several datasets on one topic: start from the least advanced; the others
            # skip what they already counted (OwnedPartition.add)
            starts[(topic, partition)] = (min(offsets) if offsets
                                          and len(offsets) == len(datasets) else None)
    return starts


def _moved(part: OwnedPartition, dataset: DatasetSpec, partition: int, old_topic: str) -> None:
    """The checkpoint's offsets are positions in another topic: the dataset was moved
    (its ``topic`` changed by ``dqpulse apply``). Its windows and watermark go on; the new
    topic's partition is read from its start, no record of it skipped as counted (before
    session 48 the old offsets were taken for positions in the new topic, and the move
    for the old topic deleted and recreated: logged as errors, alerting)."""
    part.next_offset = None
    part.witness = None  # a record of the old topic
    part.dirty = True  # its first checkpoint names the new topic
    log.info("dataset %s moved from topic %s to %s: partition %d is read from the start "
             "of %s (its open windows and watermark go on)", dataset.name, old_topic,
             dataset.topic, partition, dataset.topic,
             extra={"dataset": dataset.name, "partitions": [partition]})


def retire_gone(conn: Connection, dataset: DatasetSpec, topic: str, before: int, count: int,
                options: AggregatorOptions) -> None:
    """The topic has fewer partitions than before: it was deleted and created again (Kafka
    adds partitions, never removes them). The checkpoints of the partitions it no longer
    has would hold every window back for ever (a window is finalized once every partition
    passed it): each is deleted, the windows it held open handed to the finalizer as they
    are (what they counted stays counted)."""
    retired, moved_from = [], set()
    for saved in checkpoints.beyond(conn, dataset=dataset.name, partition_count=count):
        aggregator = options.new(dataset, saved.partition, saved).aggregator
        if checkpoints.retire(conn, dataset=dataset.name, partition=saved.partition,
                              version=saved.version, closed=aggregator.pop_all()):
            retired.append(saved.partition)
        if saved.topic is not None and saved.topic != topic:
            moved_from.add(saved.topic)
    if moved_from:  # the dataset moved to a topic with fewer partitions: meant, no error
        log.info("dataset %s moved from topic %s (%d partitions) to %s (%d): the checkpoints "
                 "of partitions %s are retired (their open windows finalized as they are)",
                 dataset.name, ", ".join(sorted(moved_from)), before, topic, count,
                 ", ".join(map(str, retired)) or "none (retired already)",
                 extra={"dataset": dataset.name, "partitions": retired})
        return
    log.error("topic %s has %d partitions, fewer than the %d of dataset %s's checkpoints: "
              "it was deleted and created again; the checkpoints of partitions %s are "
              "retired (their open windows finalized as they are)", topic, count, before,
              dataset.name, ", ".join(map(str, retired)) or "none (retired already)",
              extra={"dataset": dataset.name, "partitions": retired})


#: restores of one checkpoint version after which each is logged as an error
RESTORES_LOGGED = 3


def _note_restore(conn: Connection, dataset: str, partition: int,
                  saved: checkpoints.Checkpoint) -> checkpoints.Restored:
    """Count this restore of the checkpoint; from the third of one version (each worker
    before died before its next checkpoint), say so: a record after its offset may kill
    the worker as it is read."""
    restored = checkpoints.note_restore(conn, dataset=dataset, partition=partition,
                                        version=saved.version)
    restores = restored.restores
    if restores >= RESTORES_LOGGED:
        log.error("%s[%d] restored from its checkpoint at offset %d for the %d%s time with "
                  "no newer checkpoint: each worker before died first (a record after that "
                  "offset that kills the worker as it is read? the log has each crash's "
                  "stack); `dqpulse partitions skip` moves the checkpoint past records",
                  dataset, partition, saved.next_offset, restores, _ordinal(restores),
                  extra={"dataset": dataset, "partitions": [partition]})
    return restored


def _log_careful(dataset: str, partition: int, offset: int, count: CarefulCount) -> None:
    if count.poison is not None:
        step = (f"dead-lettering offset {count.poison}, which killed {count.deaths} workers "
                "counting it alone")
    elif count.at is not None:
        step = (f"counting offset {count.at}, where the worker before died counting it "
                "alone, alone once more (if this worker dies too, the next dead-letters it)")
    elif count.first is not None:
        step = (f"counting offsets {count.first}-{count.last}, where the worker before died, "
                "one record at a time")
    else:
        step = "noting each run of records in the database before counting it"
    log.warning("%s[%d]: the worker before died before its first checkpoint after "
                "restoring offset %d; counting carefully until past where it died: %s",
                dataset, partition, offset, step,
                extra={"dataset": dataset, "partitions": [partition]})


def _ordinal(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def retry_database_errors(action: Callable[[], T], *, stop: threading.Event,
                          retry_for_s: float = ASSIGN_RETRY_S) -> T:
    """``action()``, retried on database errors with back-off for up to ``retry_for_s``;
    after that (or once ``stop`` is set) the error propagates."""
    deadline = time.monotonic() + retry_for_s
    delay = 0.5
    while True:
        try:
            return action()
        except DBAPIError as exc:
            if stop.is_set() or time.monotonic() + delay > deadline:
                raise
            log.warning("restoring assigned partitions failed (%s); retrying in %.1fs",
                        type(exc.orig).__name__ if exc.orig else exc, delay)
            time.sleep(delay)
            delay = min(4.0, delay * 2)


def revoked_keys(partitions: Sequence[TopicPartition],
                 by_topic: Mapping[str, Sequence[DatasetSpec]]) -> list[PartitionKey]:
    return [(d.name, p) for t, p in partitions for d in by_topic.get(t, [])]


def resume_positions(source: Source, owned: Mapping[PartitionKey, OwnedPartition],
                     keys: Sequence[PartitionKey], topic_of: Callable[[str], str]) -> None:
    """Seek the consumer back to where the (reloaded) partitions continue."""
    seek = getattr(source, "seek", None)
    if seek is None:
        return
    for name, partition in keys:
        state = owned.get((name, partition))
        if state is not None:
            seek(topic_of(name), partition, state.next_offset)
