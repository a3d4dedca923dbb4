"""The ingest worker: consume, aggregate per partition, checkpoint exactly once, finalize.

Loop: poll a batch -> per (dataset, partition) ``PartitionAggregator.add`` -> bad
messages counted and dead-lettered -> every ``checkpoint_interval_s`` (or as soon as a
poll returns less than a full batch, i.e. the worker has caught up, with records not yet
checkpointed, at most every quarter interval): tick idle
partitions, write every assigned partition's state + next offset + newly closed window
partials in ONE transaction, then commit offsets to Kafka, then finalize windows that
all partitions have passed. A crash anywhere replays from the last checkpoint, whose
state matches its offsets exactly, so nothing is lost or counted twice.

On Postgres the transaction and the finalization run on a writer thread while the next
batches are consumed: the snapshot (states, offsets, closed windows) is taken on the
consuming thread, so what is written is consistent however far consumption has moved
on; one checkpoint is in flight at a time, and its outcome (new versions and the offset
commit, a fencing reload, or a database-outage back-off) is applied on the consuming
thread. ``checkpoint()`` itself stays synchronous (revocation, shutdown).
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from dqpulse.aggregate import PartitionAggregator
from dqpulse.config import Settings
from dqpulse.pipeline import WindowHook, finalize_ready
from dqpulse.records import PartitionBatch
from dqpulse.sources.base import DeadLetterSink, Source, TopicPartition
from dqpulse.spec import DatasetSpec
from dqpulse.store import checkpoints
from dqpulse.telemetry import Telemetry

log = logging.getLogger(__name__)

#: how long partition assignment retries a database error before the worker gives up
_ASSIGN_RETRY_S = 30.0


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


@dataclass(slots=True)
class _CheckpointRow:
    """What one partition's checkpoint writes, snapshotted on the consuming thread."""

    key: tuple[str, int]
    owned: _Owned
    loaded_version: int | None
    next_offset: int
    watermark: float
    last_record_at: float | None
    end_offset: int | None
    state: bytes
    closed: list[tuple[float, bytes]]


@dataclass
class _CheckpointJob:
    keys: list[tuple[str, int]]
    rows: list[_CheckpointRow] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    error: BaseException | None = None


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
        background_checkpoints: bool | None = None,
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
        # Checkpoint transactions (and finalization) on a writer thread, overlapping the
        # next polls; off on SQLite (one writer at a time) unless asked for.
        self.background_checkpoints = (engine.dialect.name != "sqlite"
                                       if background_checkpoints is None
                                       else background_checkpoints)
        self._writer = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix="dqpulse-checkpoint")
        self._inflight: Future[_CheckpointJob | None] | None = None
        self._fresh_ends: set[TopicPartition] = set()

    # -- rebalance callbacks -------------------------------------------------------------
    def on_assign(self, partitions: Sequence[TopicPartition]
                  ) -> Mapping[TopicPartition, int | None]:
        """Restore the assigned partitions' checkpoints; returns where to start each.

        A database error is retried with back-off for up to ``_ASSIGN_RETRY_S`` (a short
        blip during a rebalance is survived); after that it propagates and the worker
        exits, to be restarted by its supervisor (no start offset is ever guessed)."""
        counts = {topic: self.source.partition_count(topic) for topic, _ in partitions}
        deadline = time.monotonic() + _ASSIGN_RETRY_S
        delay = 0.5
        while True:
            try:
                return self._restore_assigned(partitions, counts)
            except DBAPIError as exc:
                if self._stop.is_set() or time.monotonic() + delay > deadline:
                    raise
                log.warning("restoring assigned partitions failed (%s); retrying in %.1fs",
                            type(exc.orig).__name__ if exc.orig else exc, delay)
                time.sleep(delay)
                delay = min(4.0, delay * 2)

    def _restore_assigned(self, partitions: Sequence[TopicPartition], counts: Mapping[str, int]
                          ) -> Mapping[TopicPartition, int | None]:
        starts: dict[TopicPartition, int | None] = {}
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
        # Everything built so far (modules, settings, engine, clients) lives as long as
        # the process: move it out of the cyclic collector's generations, so that the
        # full collections the per-poll allocations trigger do not rescan it. Measured
        # on the 1-partition bench: 119-141k -> 153-161k records/s (docs/benchmarks.md).
        _freeze_gc()

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
            self._writer.shutdown(wait=True)
            self.source.close()
        return self.stats

    def run_once(self) -> None:
        self._collect(wait=False)
        if self._db_down_until > time.monotonic():
            # the database is away: stop consuming (memory stays bounded; Kafka keeps the
            # records) until the next checkpoint attempt
            time.sleep(min(0.5, self._db_down_until - time.monotonic()))
            return
        limit = self.settings.poll_max_records
        batches = self.source.poll(limit, self.settings.poll_timeout_s)
        polled = sum(map(len, batches))
        if batches:
            self._ingest(batches)
        since = time.monotonic() - self._last_checkpoint
        # Caught up (the poll timed out before filling up) with records not yet
        # checkpointed: checkpoint now rather than at the next interval, so a burst's
        # metrics land sooner; at most every quarter interval.
        caught_up = (polled < limit
                     and since >= self.settings.checkpoint_interval_s / 4
                     and any(owned.dirty for owned in self.owned.values()))
        if caught_up or since >= self.settings.checkpoint_interval_s:
            if self.background_checkpoints:
                self._checkpoint_due()
                return
            try:
                self.checkpoint(commit=True)
            except DBAPIError as exc:
                self._db_unavailable(exc)
                return
            self._db_failures = 0
            if self.finalize:
                self.finalize_ready()

    def _ingest(self, batches: list[PartitionBatch]) -> None:
        now = self.clock()
        touched: set[tuple[str, int]] = set()
        for batch in batches:
            self.stats.polled += len(batch)
            touched.add((batch.topic, batch.partition))
            for dataset in self.by_topic.get(batch.topic, []):
                owned = self.owned.get((dataset.name, batch.partition))
                if owned is None:
                    continue  # revoked between poll and now: the new owner replays it
                todo = batch
                if owned.next_offset is not None and todo.first_offset < owned.next_offset:
                    todo = todo.since(owned.next_offset)  # counted before (several datasets)
                    if not len(todo):
                        continue
                report = owned.aggregator.add(todo, now)
                owned.next_offset = todo.last_offset + 1
                owned.dirty = True
                owned.idle_polls = 0
                self._account(dataset, report)
        for key, owned in self.owned.items():
            if (self._topic_of(key[0]), key[1]) not in touched:
                owned.idle_polls += 1

    def _topic_of(self, dataset_name: str) -> str:
        return self._by_name[dataset_name].topic

    def _account(self, dataset: DatasetSpec, report: object) -> None:
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
        """Write state + offsets of owned partitions in one transaction, then commit offsets.

        Synchronous: waits for a background checkpoint in flight first, so on return every
        record polled so far is checkpointed (revocation, shutdown, tests)."""
        self._collect(wait=True)
        job = self._prepare(only)
        if job is None:
            return
        try:
            job.versions = self._write(job)
        except checkpoints.FencedError as exc:
            self._fenced(job, exc)
            return
        except BaseException:
            self._failed(job)
            raise
        self._applied(job, commit=commit)

    def _checkpoint_due(self) -> None:
        """The periodic checkpoint of ``run_once`` with background checkpoints: the
        snapshot is taken here, the transaction (and then finalization) runs on the writer
        thread while this one goes on consuming; ``_collect`` applies the outcome."""
        if self._inflight is not None:
            return  # the previous one is still writing; try again next loop
        job = self._prepare(None)
        if job is None:
            if self.finalize:
                self._inflight = self._writer.submit(self._finalize_only)
            return
        self._inflight = self._writer.submit(self._write_and_finalize, job)

    def _prepare(self, only: Sequence[tuple[str, int]] | None) -> _CheckpointJob | None:
        """Snapshot what to write (main thread): states, offsets, newly closed windows."""
        self._last_checkpoint = time.monotonic()
        keys = list(self.owned) if only is None else [k for k in only if k in self.owned]
        if not keys:
            return None
        now = self.clock()
        end_offsets = self._end_offsets(keys, now)
        if self.dead_letter is not None:
            self.dead_letter.flush()  # dead letters are durable before offsets move on
        job = _CheckpointJob(keys=keys)
        for key in keys:
            owned = self.owned[key]
            topic = self._topic_of(key[0])
            end = end_offsets.get((topic, key[1]))
            fresh = (topic, key[1]) in self._fresh_ends
            caught_up = fresh and end is not None and (owned.next_offset or 0) >= end
            if caught_up or (fresh and owned.next_offset is None and end == 0):
                owned.aggregator.tick(now)
            owned.pending_closed.extend(owned.aggregator.pop_closed())
            closed = list(owned.pending_closed)
            if (not closed and not owned.dirty and owned.version is not None
                    and owned.saved_watermark == owned.aggregator.watermark):
                continue
            job.rows.append(_CheckpointRow(
                key=key, owned=owned, loaded_version=owned.version,
                next_offset=owned.next_offset if owned.next_offset is not None else 0,
                watermark=owned.aggregator.watermark,
                last_record_at=owned.aggregator.last_record_at, end_offset=end,
                state=owned.aggregator.snapshot(), closed=closed))
            owned.dirty = False  # records ingested from here on set it again
        return job

    def _write(self, job: _CheckpointJob) -> list[int]:
        """One transaction for every row of the job (any thread); returns the versions."""
        started = time.perf_counter()
        versions: list[int] = []
        if job.rows:
            with self.engine.begin() as conn:
                for row in job.rows:
                    versions.append(checkpoints.save(
                        conn, dataset=row.key[0], partition=row.key[1],
                        loaded_version=row.loaded_version, next_offset=row.next_offset,
                        watermark=row.watermark, last_record_at=row.last_record_at,
                        high_watermark_offset=row.end_offset, state=row.state,
                        closed=row.closed, owner_id=self.owner_id))
        self.telemetry.checkpoint_seconds.observe(time.perf_counter() - started)
        return versions

    def _write_and_finalize(self, job: _CheckpointJob) -> _CheckpointJob:
        try:
            job.versions = self._write(job)
        except BaseException as exc:  # handed to the main thread by _collect
            job.error = exc
            return job
        if self.finalize:
            self.finalize_ready()
        return job

    def _finalize_only(self) -> None:
        self.finalize_ready()

    def _collect(self, *, wait: bool) -> None:
        """Apply the outcome of the background checkpoint, if one finished (main thread)."""
        future = self._inflight
        if future is None or (not wait and not future.done()):
            return
        self._inflight = None
        job = future.result()
        if job is None:  # a finalize-only pass
            return
        error = job.error
        if error is None:
            self._db_failures = 0
            self._applied(job, commit=True)
        elif isinstance(error, checkpoints.FencedError):
            self._fenced(job, error)
        elif isinstance(error, DBAPIError):
            self._failed(job)
            self._db_unavailable(error)
        else:
            self._failed(job)
            raise error

    def _applied(self, job: _CheckpointJob, *, commit: bool) -> None:
        commit_offsets: dict[TopicPartition, int] = {}
        for row, version in zip(job.rows, job.versions, strict=True):
            owned = row.owned
            if self.owned.get(row.key) is not owned:
                continue  # revoked meanwhile
            owned.version = version
            owned.saved_watermark = row.watermark
            del owned.pending_closed[:len(row.closed)]
            tp = (self._topic_of(row.key[0]), row.key[1])
            commit_offsets[tp] = min(commit_offsets.get(tp, row.next_offset), row.next_offset)
        self.stats.checkpoints += 1
        self.telemetry.checkpoints.inc()
        if commit and commit_offsets:
            try:
                self.source.commit(commit_offsets)
            except Exception:  # noqa: BLE001 - the checkpoint, not the group, is the truth
                log.warning("offset commit failed; checkpoints still hold the positions",
                            exc_info=True)

    def _failed(self, job: _CheckpointJob) -> None:
        """Nothing of the job was written: its rows are written again by the next one."""
        for row in job.rows:
            row.owned.dirty = True

    def _fenced(self, job: _CheckpointJob, exc: Exception) -> None:
        self.stats.fenced += 1
        self.telemetry.checkpoint_fenced.inc()
        log.warning("%s; reloading owned partitions from their checkpoints", exc)
        self._reload(job.keys)

    def _db_unavailable(self, exc: DBAPIError) -> None:
        # Nothing is lost: offsets are not committed, in-memory state and positions stay
        # consistent, and the next checkpoint writes everything since the last.
        self._db_failures += 1
        backoff = min(30.0, 0.5 * 2 ** min(self._db_failures, 6))
        self._db_down_until = time.monotonic() + backoff
        self.telemetry.checkpoint_failures.inc()
        log.warning("checkpoint failed (%s); retrying in %.1fs",
                    type(exc.orig).__name__ if exc.orig else exc, backoff)

    def _end_offsets(self, keys: Sequence[tuple[str, int]], now: float
                     ) -> dict[TopicPartition, int]:
        """End offsets for lag, asked of the broker only for partitions that may be idle.

        A partition that had records within ``idle_partition_timeout_s`` cannot be ticked
        anyway, so the end offset the client learned from its fetches (no round trip) is
        enough for its lag; the others need a fresh one to decide they are caught up.
        ``_fresh_ends`` says which values are fresh."""
        tps = sorted({(self._topic_of(name), partition) for name, partition in keys})
        idle_set = {(self._topic_of(name), partition) for name, partition in keys
                    if self.owned[(name, partition)].aggregator.is_idle(now)}
        idle = sorted(idle_set)
        ends: dict[TopicPartition, int] = {}
        self._fresh_ends = set()
        try:
            busy = [tp for tp in tps if tp not in idle_set]
            if busy:
                ends.update(self.source.end_offsets(busy, fresh=False))
            if idle:
                fresh = self.source.end_offsets(idle, fresh=True)
                ends.update(fresh)
                self._fresh_ends = set(fresh)
        except Exception:  # noqa: BLE001 - no lag info this round; idle ticks wait
            log.warning("could not read end offsets", exc_info=True)
        return ends

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


_unfreeze_registered = False


def _freeze_gc() -> None:
    global _unfreeze_registered
    gc.freeze()
    if not _unfreeze_registered:  # let the interpreter's final collections free them
        atexit.register(gc.unfreeze)
        _unfreeze_registered = True


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
