"""Per (dataset, partition) ingest state: the aggregator, the next offset, what is unsaved."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from dqpulse.aggregate import AddReport, PartitionAggregator
from dqpulse.config import Settings
from dqpulse.decode import Decoder, decoder_for
from dqpulse.errors import ConfigError
from dqpulse.ingest.witness import Witness, witness_of
from dqpulse.metrics.codec import CorruptState
from dqpulse.metrics.samples import SampleBoard
from dqpulse.records import PartitionBatch
from dqpulse.spec import DatasetSpec
from dqpulse.store.checkpoints import Checkpoint

log = logging.getLogger(__name__)

#: (dataset name, partition number)
PartitionKey = tuple[str, int]


@dataclass(slots=True)
class AddJob:
    """A batch to aggregate, with its poll time (and each record's, when coalesced)."""

    batch: PartitionBatch
    now: float
    poll_times: npt.NDArray[np.float64] | None = None


@dataclass
class OwnedPartition:
    """One assigned (dataset, partition): its aggregator and how far it is saved."""

    aggregator: PartitionAggregator
    #: version of the stored checkpoint this state continues; None: none stored yet
    version: int | None
    next_offset: int | None
    #: records were added since the last checkpoint snapshot
    dirty: bool = True
    saved_watermark: float | None = None
    # closed window partials popped from the aggregator but not yet committed (a failed
    # checkpoint transaction must not lose them)
    pending_closed: list[tuple[float, bytes]] = field(default_factory=list)
    # polled batches held back to be aggregated as one (``coalesce``), with their poll
    # times; a checkpoint may keep holding them: it then saves the state without them and
    # the first held offset (``checkpoint_offset``), so a crash replays them
    held: list[tuple[PartitionBatch, float]] = field(default_factory=list)
    held_records: int = 0
    #: the held records' window can close once the stream passes this (seconds since the
    #: epoch, by Kafka timestamps: the end of the oldest window they may belong to, plus
    #: lateness); ``held_deadline``: the same by the worker's clock, for a live stream
    held_until: float = math.inf
    held_deadline: float = math.inf
    held_newest: float = -math.inf  # the newest Kafka timestamp held (seconds)
    #: (offset, hash) of the last record aggregated: below :attr:`checkpoint_offset`, saved
    #: with the checkpoint (dqpulse.ingest.witness)
    witness: tuple[int, int] | None = None
    #: the restored checkpoint's witness, until the log read has been compared with it
    verify: Witness | None = None

    @property
    def checkpoint_offset(self) -> int | None:
        """The next offset the aggregated state accounts for: the first held record's
        (held records are not in the state yet), else :attr:`next_offset`."""
        return self.held[0][0].first_offset if self.held else self.next_offset

    def add(self, batch: PartitionBatch, now: float, *, coalesce: int = 1,
            max_wait_s: float = math.inf) -> AddReport | None:
        """Aggregate the part of ``batch`` this partition has not counted yet, or hold it
        until the partition holds ``coalesce`` records or its oldest held batch was polled
        ``max_wait_s`` before ``now`` (then all of them at once: a metric update has a
        fixed cost of milliseconds per batch, so a fleet of partitions polled a few
        records at a time pays it once per ``coalesce`` records rather than per poll).
        ``next_offset`` counts held records; a checkpoint saves ``checkpoint_offset``
        (the first held one), so the saved state and offset always agree.

        Held records are also aggregated as soon as their window may close: when a held
        record's Kafka timestamp passes the end of the oldest window they may belong to
        plus lateness, or (a live stream) the worker's clock does. So holding does not
        delay a window while event time follows Kafka time, and a quiet partition pays a
        metric update about once per window rather than once per ``max_wait_s``.

        Several datasets on one topic resume from the least advanced offset, so a batch
        may start before ``next_offset``: that part was counted before and is skipped.
        Returns the report of what was aggregated now (None: nothing was)."""
        return self.run(self.plan(batch, now, coalesce=coalesce, max_wait_s=max_wait_s))

    def plan(self, batch: PartitionBatch, now: float, *, coalesce: int = 1,
             max_wait_s: float = math.inf) -> list[AddJob]:
        """What :meth:`add` would aggregate, in order, without aggregating it (the worker
        decodes the jobs of a whole poll ahead on another thread); the offsets and what
        is held move as in :meth:`add`. Run the jobs in order with :meth:`run`."""
        todo = batch
        if self.next_offset is not None and todo.first_offset < self.next_offset:
            todo = todo.since(self.next_offset)
            if not len(todo):
                return []
        self.next_offset = todo.last_offset + 1
        # held for max_wait: aggregated before anything newer, so lateness is judged in
        # order; held until their window may close: aggregated with the new records,
        # which may be the ones that close it
        jobs = (self.take_held() if self.held and now - self.held[0][1] >= max_wait_s
                else [])
        if not self.held and len(todo) >= coalesce:
            jobs.append(AddJob(todo, now))
            self.witness = witness_of(todo, len(todo) - 1)
            self.dirty = True  # (records held back change neither state nor saved offset)
        else:
            self._hold(todo, now)
            if self.due(now, coalesce, max_wait_s):
                jobs += self.take_held()  # marks it dirty
        return jobs

    def _hold(self, batch: PartitionBatch, now: float) -> None:
        stamps = batch.timestamps_ms
        if not self.held and len(stamps) and stamps[0] >= 0:
            spec = self.aggregator.spec
            first = float(stamps[0]) / 1000.0
            start = math.floor(first / spec.window) * spec.window
            opened = self.aggregator.open_windows
            if opened:
                start = min(start, opened[0])
            self.held_until = start + spec.window + spec.lateness
            # a record already past it (a backlog) is held by count and max_wait only
            self.held_deadline = self.held_until if self.held_until > now else math.inf
        if len(stamps):
            self.held_newest = max(self.held_newest, float(stamps.max()) / 1000.0)
        self.held.append((batch, now))
        self.held_records += len(batch)

    def flush(self) -> AddReport | None:
        """Aggregate the held batches as one batch (each record keeps its poll time)."""
        return self.run(self.take_held())

    def take_held(self) -> list[AddJob]:
        """The held batches as one job (none when nothing is held); they are no longer held."""
        if not self.held:
            return []
        held, self.held, self.held_records = self.held, [], 0
        self.held_until = self.held_deadline = math.inf
        self.held_newest = -math.inf
        self.dirty = True  # a checkpoint taken while they were held did not save them
        self.witness = witness_of(held[-1][0], len(held[-1][0]) - 1)
        if len(held) == 1:
            return [AddJob(held[0][0], held[0][1])]
        batches = [batch for batch, _ in held]
        poll_times = np.repeat(np.array([now for _, now in held], dtype=np.float64),
                               [len(batch) for batch in batches])
        return [AddJob(PartitionBatch.concat(batches), held[-1][1], poll_times)]

    def run(self, jobs: Sequence[AddJob]) -> AddReport | None:
        """Aggregate ``jobs`` in order; their combined report (None: there were none)."""
        report: AddReport | None = None
        for job in jobs:
            done = self.aggregator.add(job.batch, job.now, job.poll_times)
            report = done if report is None else report.combined(done)
        return report

    def due(self, now: float, coalesce: float, max_wait_s: float) -> bool:
        """Whether what is held should be aggregated now: ``coalesce`` records held, the
        oldest polled ``max_wait_s`` ago, or their window may close (see :meth:`add`)."""
        return bool(self.held) and (self.held_records >= coalesce
                                    or now - self.held[0][1] >= max_wait_s
                                    or self.held_newest >= self.held_until
                                    or now >= self.held_deadline)


@dataclass(frozen=True, slots=True)
class AggregatorOptions:
    """What every partition's aggregator is built with (from settings, once)."""

    max_message_bytes: int
    idle_timeout_s: float
    decoders: Mapping[str, Decoder]
    #: per data set, shared by its partitions' aggregators (failing samples, collected
    #: only by the lowest-numbered partitions of each window that have them)
    boards: dict[str, SampleBoard] = field(default_factory=dict)
    #: called with the data set's name when a stored checkpoint state is corrupt
    on_corrupt: Callable[[str], None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, datasets: Sequence[DatasetSpec], *,
                      on_corrupt: Callable[[str], None] | None = None
                      ) -> AggregatorOptions:
        return cls(max_message_bytes=settings.max_message_bytes,
                   idle_timeout_s=settings.idle_partition_timeout_s,
                   decoders=make_decoders(datasets, settings), on_corrupt=on_corrupt)

    def new(self, dataset: DatasetSpec, partition: int,
            saved: Checkpoint | None) -> OwnedPartition:
        """The partition's state: from its stored checkpoint, or empty when there is none."""
        common: dict[str, Any] = {
            "max_message_bytes": self.max_message_bytes, "idle_timeout_s": self.idle_timeout_s,
            "decoder": self.decoders.get(dataset.name),
            "samples_board": self.boards.setdefault(dataset.name, SampleBoard())}
        if saved is None:
            return OwnedPartition(PartitionAggregator(dataset, partition, **common), None, None)
        try:
            aggregator = PartitionAggregator.restore(dataset, partition, saved.state, **common)
        except CorruptState as exc:
            # Its bytes changed since they were written: reading them could crash the
            # process (a sketch deserializer), and a worker that stops on it would stop
            # again on every restart. Go on from the checkpoint's offset and watermark
            # (kept beside the state) without its open windows: what they had counted is
            # lost, and said so; the next checkpoint replaces the state.
            log.error("the checkpoint of dataset %s partition %d (version %d, offset %d) "
                      "is corrupt (%s); going on from its offset and watermark without "
                      "the windows it held open: the records they had counted are "
                      "missing from them", dataset.name, partition, saved.version,
                      saved.next_offset, exc)
            if self.on_corrupt is not None:
                self.on_corrupt(dataset.name)
            aggregator = PartitionAggregator(dataset, partition, **common)
            aggregator.resume(saved.watermark, saved.last_record_at)
            return OwnedPartition(aggregator, saved.version, saved.next_offset,
                                  witness=saved.witness)
        return OwnedPartition(aggregator, saved.version, saved.next_offset, dirty=False,
                              witness=saved.witness)


def make_decoders(datasets: Sequence[DatasetSpec], settings: Settings) -> dict[str, Decoder]:
    """Decoders that need settings: Avro in the Confluent wire format reads its schemas
    from ``DQPULSE_SCHEMA_REGISTRY_URL``; plain Avro uses the dataset's ``avro_schema``."""
    # imported here: the registry client (httpx) is needed only for Avro in the Confluent
    # wire format, and a JSON-only worker should not carry it
    from dqpulse.decode.registry import SchemaRegistryClient

    decoders: dict[str, Decoder] = {}
    registry: SchemaRegistryClient | None = None
    for dataset in datasets:
        if dataset.format != "avro":
            continue
        if settings.schema_registry_url:
            registry = registry or SchemaRegistryClient(settings.schema_registry_url)
            decoders[dataset.name] = decoder_for(dataset, schema_lookup=registry)
        elif dataset.avro_schema is None:
            raise ConfigError(f"dataset {dataset.name!r}: format avro needs 'avro_schema' "
                              "(plain Avro) or DQPULSE_SCHEMA_REGISTRY_URL (wire format)")
    return decoders
