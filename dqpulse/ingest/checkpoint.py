"""The exactly-once checkpoint protocol: snapshot -> write (one fenced transaction) ->
apply, or reload after fencing.

A checkpoint writes, for every owned (dataset, partition) that changed, its aggregator
state, its next offset and the window partials it closed since the last one, in ONE
transaction; Kafka offsets are committed only after it (:func:`apply` returns them). The
snapshot (:func:`prepare`) is taken on the consuming thread, so what is written is
consistent however far consumption moves on while :func:`write` runs on another thread.
A row whose stored version moved on since it was loaded raises
:class:`~dqpulse.store.checkpoints.FencedError`: another worker owns the partition now,
and :func:`reload` drops the in-memory progress in favour of the stored checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine

from dqpulse.ingest.partition import AggregatorOptions, OwnedPartition, PartitionKey
from dqpulse.sources.base import Source, TopicPartition
from dqpulse.spec import DatasetSpec
from dqpulse.store import checkpoints

log = logging.getLogger(__name__)

FencedError = checkpoints.FencedError


@dataclass(frozen=True, slots=True)
class EndOffsets:
    """End offsets of partitions (for lag); ``fresh``: asked of the broker just now."""

    offsets: Mapping[TopicPartition, int]
    fresh: frozenset[TopicPartition] = frozenset()


@dataclass(slots=True)
class CheckpointRow:
    """What one partition's checkpoint writes, snapshotted on the consuming thread."""

    key: PartitionKey
    owned: OwnedPartition
    loaded_version: int | None
    next_offset: int
    watermark: float
    last_record_at: float | None
    end_offset: int | None
    state: bytes
    closed: list[tuple[float, bytes]]
    #: (offset, hash) of a record the state counted (dqpulse.ingest.witness)
    witness: tuple[int, int] | None = None
    #: the topic ``next_offset`` is a position in
    topic: str | None = None


@dataclass
class CheckpointJob:
    """One checkpoint: the partitions it covers, the rows that changed, the outcome."""

    keys: list[PartitionKey]
    rows: list[CheckpointRow] = field(default_factory=list)
    #: written as the worker stops or hands the partitions over: their restores are
    #: forgotten (see dqpulse.ingest.careful)
    clean: bool = False
    versions: list[int] = field(default_factory=list)
    error: BaseException | None = None
    #: seconds spent on it: the snapshot (consuming thread), the transaction (writer)
    prepare_s: float = 0.0
    write_s: float = 0.0


def read_end_offsets(source: Source, owned: Mapping[PartitionKey, OwnedPartition],
                     keys: Sequence[PartitionKey], topic_of: Callable[[str], str],
                     now: float, *, ask_broker: bool = True) -> EndOffsets:
    """End offsets for lag, asked of the broker only for partitions that may be idle.

    A partition that had records within ``idle_partition_timeout_s`` cannot be ticked
    anyway, so the end offset the client learned from its fetches (no round trip) is
    enough for its lag; the others need a fresh one to decide they are caught up.
    ``ask_broker=False`` (the last checkpoint before a stop): no round trip at all, so no idle
    partition is ticked; its next owner does that."""
    tps = sorted({(topic_of(name), partition) for name, partition in keys})
    idle_set = {(topic_of(name), partition) for name, partition in keys
                if ask_broker and owned[(name, partition)].aggregator.is_idle(now)}
    ends: dict[TopicPartition, int] = {}
    fresh: frozenset[TopicPartition] = frozenset()
    try:
        busy = [tp for tp in tps if tp not in idle_set]
        if busy:
            ends.update(source.end_offsets(busy, fresh=False))
        if idle_set:
            asked = source.end_offsets(sorted(idle_set), fresh=True)
            ends.update(asked)
            fresh = frozenset(asked)
    except Exception:  # noqa: BLE001 - no lag info this round; idle ticks wait
        log.warning("could not read end offsets", exc_info=True)
    return EndOffsets(ends, fresh)


def prepare(owned: Mapping[PartitionKey, OwnedPartition], keys: Sequence[PartitionKey],
            ends: EndOffsets, topic_of: Callable[[str], str], now: float) -> CheckpointJob:
    """Snapshot what to write (consuming thread): states, offsets, newly closed windows.
    A partition still holding records for coalescing saves its state without them and
    the first held offset: a crash replays them.

    A partition known to be caught up (a fresh end offset it has reached) is ticked
    first, so an idle topic's windows close on wall-clock time. Partitions with nothing
    new since their last checkpoint get no row."""
    job = CheckpointJob(keys=list(keys))
    for key in keys:
        partition = owned[key]
        tp = (topic_of(key[0]), key[1])
        end = ends.offsets.get(tp)
        fresh = tp in ends.fresh
        # a partition holding records is not caught up: ticking it would close windows
        # its held records still belong to
        caught_up = (fresh and end is not None and (partition.next_offset or 0) >= end
                     and not partition.held)
        if caught_up or (fresh and partition.next_offset is None and end == 0):
            partition.aggregator.tick(now)
        partition.pending_closed.extend(partition.aggregator.pop_closed())
        closed = list(partition.pending_closed)
        if (not closed and not partition.dirty and partition.version is not None
                and partition.saved_watermark == partition.aggregator.watermark):
            continue
        next_offset = partition.checkpoint_offset or 0
        witness = partition.witness
        job.rows.append(CheckpointRow(
            key=key, owned=partition, loaded_version=partition.version,
            next_offset=next_offset,
            watermark=partition.aggregator.watermark,
            last_record_at=partition.aggregator.last_record_at, end_offset=end,
            state=partition.aggregator.snapshot(), closed=closed,
            witness=witness if witness is not None and witness[0] < next_offset else None,
            topic=tp[0]))
        partition.dirty = False  # records ingested from here on set it again
    return job


def write(engine: Engine, job: CheckpointJob, *, owner_id: str) -> list[int]:
    """One transaction for every row of the job (any thread); returns the new versions.

    Raises ``FencedError`` (nothing written) when another worker saved one of the
    partitions since this one loaded it."""
    versions: list[int] = []
    if job.rows or job.clean:
        with engine.begin() as conn:
            for row in job.rows:
                versions.append(checkpoints.save(
                    conn, dataset=row.key[0], partition=row.key[1],
                    loaded_version=row.loaded_version, next_offset=row.next_offset,
                    watermark=row.watermark, last_record_at=row.last_record_at,
                    high_watermark_offset=row.end_offset, state=row.state,
                    closed=row.closed, owner_id=owner_id, witness=row.witness,
                    topic=row.topic))
            if job.clean:
                checkpoints.clear_restores(conn, keys=job.keys)
    return versions


def apply(owned: Mapping[PartitionKey, OwnedPartition], job: CheckpointJob,
          topic_of: Callable[[str], str]) -> dict[TopicPartition, int]:
    """Record a written job in the partitions it covers (consuming thread); returns the
    offsets that may now be committed to Kafka (per topic partition, the least advanced
    of its datasets)."""
    commit_offsets: dict[TopicPartition, int] = {}
    for row, version in zip(job.rows, job.versions, strict=True):
        partition = row.owned
        if owned.get(row.key) is not partition:
            continue  # revoked meanwhile
        partition.version = version
        partition.saved_watermark = row.watermark
        del partition.pending_closed[:len(row.closed)]
        tp = (topic_of(row.key[0]), row.key[1])
        commit_offsets[tp] = min(commit_offsets.get(tp, row.next_offset), row.next_offset)
    return commit_offsets


def failed(job: CheckpointJob) -> None:
    """Nothing of the job was written: its rows are written again by the next one."""
    for row in job.rows:
        row.owned.dirty = True


def reload(engine: Engine, owned: MutableMapping[PartitionKey, OwnedPartition],
           keys: Sequence[PartitionKey], datasets: Mapping[str, DatasetSpec],
           options: AggregatorOptions) -> None:
    """After fencing: drop in-memory progress of the still owned ``keys`` and continue
    from their stored checkpoints."""
    with engine.begin() as conn:
        for name, partition in keys:
            if (name, partition) not in owned:
                continue
            saved = checkpoints.get(conn, dataset=name, partition=partition)
            owned[(name, partition)] = options.new(datasets[name], partition, saved)
