"""The ingest worker: consume, aggregate per partition, checkpoint exactly once, finalize.

Loop: poll a batch -> per (dataset, partition) ``PartitionAggregator.add`` -> bad
messages counted and dead-lettered -> every ``checkpoint_interval_s``: tick idle
partitions, write every assigned partition's state + next offset + newly closed window
partials in ONE transaction, then commit offsets to Kafka, then finalize windows that
all partitions have passed. A crash anywhere replays from the last checkpoint, whose
state matches its offsets exactly, so nothing is lost or counted twice.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from dqpulse.aggregate import PartitionAggregator
from dqpulse.config import Settings
from dqpulse.pipeline import WindowHook, finalize_ready
from dqpulse.records import RawMessage
from dqpulse.sources.base import DeadLetterSink, Source, TopicPartition
from dqpulse.spec import DatasetSpec
from dqpulse.store import checkpoints
from dqpulse.telemetry import Telemetry

log = logging.getLogger(__name__)

_topic_partition = itemgetter(0, 1)  # RawMessage -> (topic, partition)
_partition_of = itemgetter(1)


@dataclass
class _Owned:
    aggregator: PartitionAggregator
    version: int | None
    next_offset: int | None
    dirty: bool = True
    idle_polls: int = 0
    saved_watermark: float | None = None
    # closed window partials popped from the aggregator but not yet committed (a failed
    # checkpoint transaction must not lose them)
    pending_closed: list[tuple[float, bytes]] = field(default_factory=list)


@dataclass
class IngestStats:
    polled: int = 0
    accepted: int = 0
    bad: int = 0
    late: int = 0
    checkpoints: int = 0
    fenced: int = 0
    windows: int = 0
    by_reason: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class IngestWorker:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        datasets: Sequence[DatasetSpec],
        source: Source,
        dead_letter: DeadLetterSink | None = None,
        telemetry: Telemetry | None = None,
        hooks: Sequence[WindowHook] = (),
        finalize: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.source = source
        self.dead_letter = dead_letter
        self.telemetry = telemetry or Telemetry()
        self.hooks = list(hooks)
        self.finalize = finalize
        self.clock = clock
        self.owner_id = f"{socket.gethostname()}:{os.getpid()}"
        self.by_topic: dict[str, list[DatasetSpec]] = defaultdict(list)
        for dataset in datasets:
            self.by_topic[dataset.topic].append(dataset)
        self.datasets = list(datasets)
        self._by_name = {dataset.name: dataset for dataset in self.datasets}
        self.owned: dict[tuple[str, int], _Owned] = {}
        self._decoders = make_decoders(self.datasets, settings)
        self.stats = IngestStats()
        self._stop = threading.Event()
        self._last_checkpoint = time.monotonic()
        self._db_failures = 0
        self._db_down_until = 0.0

    # -- rebalance callbacks -------------------------------------------------------------
    def on_assign(self, partitions: Sequence[TopicPartition]
                  ) -> Mapping[TopicPartition, int | None]:
        starts: dict[TopicPartition, int | None] = {}
        counts = {topic: self.source.partition_count(topic) for topic, _ in partitions}
        with self.engine.begin() as conn:
            for topic, partition in partitions:
                offsets: list[int] = []
                for dataset in self.by_topic.get(topic, []):
                    checkpoints.set_partition_count(conn, dataset=dataset.name,
                                                    partition_count=counts[topic])
                    saved = checkpoints.get(conn, dataset=dataset.name, partition=partition)
                    kwargs = self._aggregator_kwargs(dataset)
                    if saved is None:
                        aggregator = PartitionAggregator(dataset, partition, **kwargs)
                        self.owned[(dataset.name, partition)] = _Owned(aggregator, None, None)
                    else:
                        aggregator = PartitionAggregator.restore(dataset, partition, saved.state,
                                                                 **kwargs)
                        self.owned[(dataset.name, partition)] = _Owned(
                            aggregator, saved.version, saved.next_offset, dirty=False)
                        offsets.append(saved.next_offset)
                # several datasets on one topic: start from the least advanced; the others
                # skip what they already counted (see _ingest)
                starts[(topic, partition)] = min(offsets) if offsets and len(offsets) == len(
                    self.by_topic.get(topic, [])) else None
        self.telemetry.assigned_partitions.set(len(self.owned))
        log.info("assigned %s", sorted(partitions))
        return starts

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        keys = [(d.name, p) for t, p in partitions for d in self.by_topic.get(t, [])]
        try:
            self.checkpoint(only=keys, commit=True)
        except Exception:  # noqa: BLE001 - losing the race is safe: the successor replays
            log.exception("checkpoint on revoke failed; the next owner replays from the last one")
        for key in keys:
            self.owned.pop(key, None)
        self.telemetry.assigned_partitions.set(len(self.owned))
        log.info("revoked %s", sorted(partitions))

    def _aggregator_kwargs(self, dataset: DatasetSpec | None = None) -> dict[str, object]:
        kwargs: dict[str, object] = {"max_message_bytes": self.settings.max_message_bytes,
                                     "idle_timeout_s": self.settings.idle_partition_timeout_s}
        if dataset is not None and dataset.name in self._decoders:
            kwargs["decoder"] = self._decoders[dataset.name]
        return kwargs

    # -- main loop -----------------------------------------------------------------------
    def start(self) -> None:
        self.source.subscribe(list(self.by_topic), on_assign=self.on_assign,
                              on_revoke=self.on_revoke)

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, max_seconds: float | None = None) -> IngestStats:
        self.start()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.run_once()
            self.checkpoint(commit=True)
        finally:
            self.source.close()
        return self.stats

    def run_once(self) -> None:
        if self._db_down_until > time.monotonic():
            # the database is away: stop consuming (memory stays bounded; Kafka keeps the
            # records) until the next checkpoint attempt
            time.sleep(min(0.5, self._db_down_until - time.monotonic()))
            return
        messages = self.source.poll(self.settings.poll_max_records, self.settings.poll_timeout_s)
        if messages:
            self._ingest(messages)
        if time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval_s:
            try:
                self.checkpoint(commit=True)
            except DBAPIError as exc:
                # Nothing is lost: offsets are not committed, in-memory state and positions
                # stay consistent, and the next checkpoint writes everything since the last.
                self._db_failures += 1
                backoff = min(30.0, 0.5 * 2 ** min(self._db_failures, 6))
                self._db_down_until = time.monotonic() + backoff
                self.telemetry.checkpoint_failures.inc()
                log.warning("checkpoint failed (%s); retrying in %.1fs",
                            type(exc.orig).__name__ if exc.orig else exc, backoff)
                return
            self._db_failures = 0
            if self.finalize:
                self.finalize_ready()

    def _ingest(self, messages: list[RawMessage]) -> None:
        now = self.clock()
        self.stats.polled += len(messages)
        groups: dict[tuple[str, int], list[RawMessage]]
        first = messages[0]
        if (len(self.by_topic) == 1
                and list(map(_partition_of, messages)).count(first.partition) == len(messages)):
            # one topic subscribed and one partition in the batch (the usual case)
            groups = {(first.topic, first.partition): messages}
        else:
            # consume() hands messages over in runs per partition (offsets ascending within
            # a partition): append whole runs, not message by message
            groups = {}
            for key, run in groupby(messages, _topic_partition):
                batch = groups.get(key)
                if batch is None:
                    groups[key] = list(run)
                else:
                    batch.extend(run)
        touched = groups.keys()
        for (topic, partition), batch in groups.items():
            for dataset in self.by_topic.get(topic, []):
                owned = self.owned.get((dataset.name, partition))
                if owned is None:
                    continue  # revoked between poll and now: the new owner replays it
                if owned.next_offset is not None and batch[0].offset < owned.next_offset:
                    batch = [m for m in batch if m.offset >= owned.next_offset]
                    if not batch:
                        continue
                report = owned.aggregator.add(batch, now)
                owned.next_offset = batch[-1].offset + 1
                owned.dirty = True
                owned.idle_polls = 0
                self._account(dataset, batch, report)
        for key, owned in self.owned.items():
            if (self._topic_of(key[0]), key[1]) not in touched:
                owned.idle_polls += 1

    def _topic_of(self, dataset_name: str) -> str:
        return self._by_name[dataset_name].topic

    def _account(self, dataset: DatasetSpec, batch: list[RawMessage], report: object) -> None:
        t = self.telemetry
        accepted = getattr(report, "accepted", 0)
        late = getattr(report, "late", 0)
        bad = getattr(report, "bad", [])
        fallbacks = getattr(report, "event_time_fallbacks", 0)
        self.stats.accepted += accepted
        self.stats.late += late
        self.stats.bad += len(bad)
        t.records.labels(dataset.name).inc(accepted)
        if late:
            t.late_records.labels(dataset.name).inc(late)
        if fallbacks:
            t.event_time_fallbacks.labels(dataset.name).inc(fallbacks)
        for item in bad:
            self.stats.by_reason[item.reason] += 1
            t.decode_errors.labels(dataset.name, item.reason).inc()
            if self.dead_letter is not None:
                self.dead_letter.send(item.message, item.reason, item.detail)
                t.dead_lettered.labels(dataset.name).inc()

    # -- checkpoint ----------------------------------------------------------------------
    def checkpoint(self, *, only: Sequence[tuple[str, int]] | None = None,
                   commit: bool = True) -> None:
        """Write state + offsets of owned partitions in one transaction, then commit offsets."""
        self._last_checkpoint = time.monotonic()
        keys = list(self.owned) if only is None else [k for k in only if k in self.owned]
        if not keys:
            return
        now = self.clock()
        end_offsets = self._end_offsets(keys)
        if self.dead_letter is not None:
            self.dead_letter.flush()  # dead letters are durable before offsets move on
        pending: list[tuple[tuple[str, int], int, int]] = []
        started = time.perf_counter()
        try:
            with self.engine.begin() as conn:
                for key in keys:
                    owned = self.owned[key]
                    topic = self._topic_of(key[0])
                    end = end_offsets.get((topic, key[1]))
                    caught_up = end is not None and (owned.next_offset or 0) >= end
                    if caught_up or (owned.next_offset is None and end == 0):
                        owned.aggregator.tick(now)
                    owned.pending_closed.extend(owned.aggregator.pop_closed())
                    closed = list(owned.pending_closed)
                    if (not closed and not owned.dirty and owned.version is not None
                            and owned.saved_watermark == owned.aggregator.watermark):
                        continue
                    next_offset = owned.next_offset if owned.next_offset is not None else 0
                    version = checkpoints.save(
                        conn, dataset=key[0], partition=key[1], loaded_version=owned.version,
                        next_offset=next_offset, watermark=owned.aggregator.watermark,
                        last_record_at=owned.aggregator.last_record_at,
                        high_watermark_offset=end, state=owned.aggregator.snapshot(),
                        closed=closed, owner_id=self.owner_id)
                    pending.append((key, version, next_offset))
                    owned.saved_watermark = owned.aggregator.watermark
        except checkpoints.FencedError as exc:
            self.stats.fenced += 1
            self.telemetry.checkpoint_fenced.inc()
            log.warning("%s; reloading owned partitions from their checkpoints", exc)
            self._reload(keys)
            return
        self.telemetry.checkpoint_seconds.observe(time.perf_counter() - started)
        commit_offsets: dict[TopicPartition, int] = {}
        for key, version, next_offset in pending:
            owned = self.owned[key]
            owned.version = version
            owned.dirty = False
            owned.pending_closed.clear()
            tp = (self._topic_of(key[0]), key[1])
            commit_offsets[tp] = min(commit_offsets.get(tp, next_offset), next_offset)
        self.stats.checkpoints += 1
        self.telemetry.checkpoints.inc()
        if commit and commit_offsets:
            try:
                self.source.commit(commit_offsets)
            except Exception:  # noqa: BLE001 - the checkpoint, not the group, is the truth
                log.warning("offset commit failed; checkpoints still hold the positions",
                            exc_info=True)

    def _end_offsets(self, keys: Sequence[tuple[str, int]]) -> dict[TopicPartition, int]:
        tps = sorted({(self._topic_of(name), partition) for name, partition in keys})
        try:
            return self.source.end_offsets(tps)
        except Exception:  # noqa: BLE001 - no lag info this round; idle ticks wait
            log.warning("could not read end offsets", exc_info=True)
            return {}

    def _reload(self, keys: Sequence[tuple[str, int]]) -> None:
        """After fencing: drop in-memory progress and continue from the stored checkpoints."""
        with self.engine.begin() as conn:
            for name, partition in keys:
                owned = self.owned.get((name, partition))
                if owned is None:
                    continue
                dataset = self._by_name[name]
                saved = checkpoints.get(conn, dataset=name, partition=partition)
                if saved is None:
                    self.owned[(name, partition)] = _Owned(
                        PartitionAggregator(dataset, partition,
                                            **self._aggregator_kwargs(dataset)),
                        None, None)
                else:
                    self.owned[(name, partition)] = _Owned(
                        PartitionAggregator.restore(dataset, partition, saved.state,
                                                    **self._aggregator_kwargs(dataset)),
                        saved.version, saved.next_offset, dirty=False)
        self._resume_positions(keys)

    def _resume_positions(self, keys: Sequence[tuple[str, int]]) -> None:
        seek = getattr(self.source, "seek", None)
        if seek is None:
            return
        for name, partition in keys:
            owned = self.owned.get((name, partition))
            if owned is not None:
                seek(self._topic_of(name), partition, owned.next_offset)

    def finalize_ready(self) -> int:
        total = 0
        for dataset in self.datasets:
            try:
                windows = finalize_ready(self.engine, dataset, now=self.clock(),
                                         hooks=self.hooks, telemetry=self.telemetry)
            except Exception:  # noqa: BLE001 - scoring trouble must not stop ingest
                log.exception("finalizing %s failed; will retry", dataset.name)
                continue
            total += len(windows)
        self.stats.windows += total
        return total


def make_decoders(datasets: Sequence[DatasetSpec], settings: Settings) -> dict[str, object]:
    """Decoders that need settings: Avro in the Confluent wire format reads its schemas
    from ``DQPULSE_SCHEMA_REGISTRY_URL``; plain Avro uses the dataset's ``avro_schema``."""
    from dqpulse.decode import decoder_for
    from dqpulse.decode.registry import SchemaRegistryClient
    from dqpulse.errors import ConfigError

    decoders: dict[str, object] = {}
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


def install_signal_handlers(worker: IngestWorker) -> None:
    def handle(_signum: int, _frame: object) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
