"""The ingest loop: consume, aggregate per partition, checkpoint exactly once, finalize.

Loop: poll a batch -> per (dataset, partition) ``OwnedPartition.add`` -> bad messages
counted and dead-lettered -> every ``checkpoint_interval_s`` (or as soon as a poll returns
less than a full batch, i.e. the worker has caught up, with records not yet
checkpointed, at most every quarter interval): tick idle partitions, write every assigned
partition's state + next offset + newly closed window partials in ONE transaction
(:mod:`dqpulse.ingest.checkpoint`), then commit offsets to Kafka, then finalize windows
that all partitions have passed. A crash anywhere replays from the last checkpoint, whose
state matches its offsets exactly, so nothing is lost or counted twice. A metric update
that raises (a bug met by a record) is contained the same way, without the crash: the
partition alone is reloaded from its checkpoint and replayed, and the batch that raised
is counted without the records that make it raise (``unprocessable``, dead-lettered).

On Postgres the transaction runs on a writer thread while the next batches are consumed:
the snapshot (states, offsets, closed windows) is taken on the consuming thread, so what
is written is consistent however far consumption has moved on; one checkpoint is in
flight at a time, and its outcome (new versions and the offset commit, a fencing reload,
or a database-outage back-off) is applied on the consuming thread. ``checkpoint()``
itself stays synchronous (revocation, shutdown).

Finalization runs on a third thread, beside the checkpoints rather than after each one:
it reads only what checkpoints committed (window partials and watermarks, under the
dataset's advisory lock, as another worker's finalization does), so a checkpoint never
waits for it and exactly-once does not depend on it. Its backlog (windows every
partition has passed, not finalized yet) is exported as a gauge and bounded: above
``finalize_max_backlog_windows`` each poll first waits for the finalize pass in flight.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from dqpulse.aggregate import AddReport, Decoded, add_isolating
from dqpulse.config import Settings
from dqpulse.decode import json as json_decoding
from dqpulse.finalize import WindowHook
from dqpulse.health import Health
from dqpulse.ingest import assignment
from dqpulse.ingest import careful as careful_module
from dqpulse.ingest import checkpoint as protocol
from dqpulse.ingest.careful import CarefulCount, count_carefully
from dqpulse.ingest.checkpoint import CheckpointJob
from dqpulse.ingest.finalizer import Finalizer
from dqpulse.ingest.partition import AddJob, AggregatorOptions, OwnedPartition, PartitionKey
from dqpulse.ingest.resets import apply_reset
from dqpulse.ingest.witness import Witness
from dqpulse.records import PartitionBatch
from dqpulse.sources.base import DeadLetterSink, OffsetReset, Source, TopicPartition
from dqpulse.spec import DatasetSpec
from dqpulse.telemetry import Telemetry

log = logging.getLogger(__name__)

#: per partition, how many offset ranges of batches that raised are remembered
MAX_SUSPECT_RANGES = 64


@dataclass
class IngestStats:
    polled: int = 0
    accepted: int = 0
    bad: int = 0
    late: int = 0
    checkpoints: int = 0
    fenced: int = 0
    batch_failures: int = 0
    windows: int = 0
    by_reason: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class IngestWorker:
    """Consumes the datasets' topics and keeps their partitions' metrics exactly once."""

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
        health: Health | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.source = source
        self.dead_letter = dead_letter
        self.telemetry = telemetry or Telemetry()
        self.hooks = list(hooks)
        self.finalize = finalize
        self.clock = clock
        self.health = health or Health(stall_s=settings.health_stall_s)
        self.owner_id = f"{socket.gethostname()}:{os.getpid()}"
        self.by_topic: dict[str, list[DatasetSpec]] = defaultdict(list)
        self.datasets: list[DatasetSpec] = []
        self._by_name: dict[str, DatasetSpec] = {}
        self._set_datasets(datasets)
        self.owned: dict[PartitionKey, OwnedPartition] = {}
        self._held: set[PartitionKey] = set()  # partitions holding records to coalesce
        # offset ranges of batches whose metric update raised, counted record by record
        # when replayed (see _count)
        self._suspects: dict[PartitionKey, list[tuple[int, int]]] = {}
        # partitions whose workers before died before their first checkpoint, counted
        # with notes in the database until past where they died (see dqpulse.ingest.careful)
        self._careful: dict[PartitionKey, CarefulCount] = {}
        # when each partition was restored on assignment (monotonic): once it has been
        # owned for careful.SURVIVED_S, its count of restores is cleared
        self._restored_at: dict[PartitionKey, float] = {}
        # partitions started at their checkpoint's witness, not yet compared with it
        # (dqpulse.ingest.witness)
        self._unverified: set[TopicPartition] = set()
        self._pending_model: tuple[list[DatasetSpec], list[WindowHook]] | None = None
        self._model_lock = threading.Lock()
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
        self._inflight: Future[CheckpointJob] | None = None
        self._checkpoint_cost_s = 0.0  # the last periodic checkpoint's snapshot + write
        self.finalizer = Finalizer(self, stop=self._stop)
        # the next batches of a poll are decoded here while this thread counts the last
        self._decoder: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="dqpulse-decode")
            if self.settings.decode_ahead else None)

    def _set_datasets(self, datasets: Sequence[DatasetSpec]) -> None:
        self.datasets = list(datasets)
        self._by_name = {dataset.name: dataset for dataset in self.datasets}
        self.by_topic = defaultdict(list)
        for dataset in self.datasets:
            self.by_topic[dataset.topic].append(dataset)
        self._options = AggregatorOptions.from_settings(
            self.settings, self.datasets,
            on_corrupt=lambda name: self.telemetry.checkpoint_corrupt.labels(name).inc())

    # -- a new model, applied live ---------------------------------------------------------
    def update_model(self, datasets: Sequence[DatasetSpec],
                     hooks: Sequence[WindowHook]) -> None:
        """Run ``datasets`` and ``hooks`` from now on (any thread); the consuming thread
        applies it before its next poll (:meth:`_apply_model`)."""
        with self._model_lock:
            self._pending_model = (list(datasets), list(hooks))

    def _apply_model(self) -> None:
        """Checkpoint everything, swap the datasets and hooks, rebuild the assigned
        partitions' state from the checkpoint just written (so nothing is lost or counted
        twice), and follow a changed set of topics. A new dataset on a topic already
        consumed is measured from the current position, one on a new topic from its
        checkpoint or the start of the topic; a removed one stops being consumed and
        finalized (its history stays)."""
        with self._model_lock:
            pending, self._pending_model = self._pending_model, None
        if pending is None:
            return
        datasets, hooks = pending
        self.checkpoint(commit=True)
        assigned = sorted({(self._by_name[name].topic, partition)
                           for name, partition in self.owned if name in self._by_name})
        old_topics = set(self.by_topic)
        self.owned.clear()
        self._set_datasets(datasets)
        self.hooks = hooks
        keep = [tp for tp in assigned if tp[0] in self.by_topic]
        if keep:
            counts = {topic: self.source.partition_count(topic) for topic, _ in keep}
            assignment.retry_database_errors(
                lambda: assignment.restore(self.engine, self.owned, keep,
                                           by_topic=self.by_topic, partition_counts=counts,
                                           options=self._options),
                stop=self._stop)
        if set(self.by_topic) != old_topics:
            # a rebalance follows: revoked partitions are checkpointed, assigned ones
            # restored and sought to their checkpoints (the usual exactly-once path)
            self.source.subscribe(list(self.by_topic), on_assign=self.on_assign,
                                  on_revoke=self.on_revoke)
        self.telemetry.assigned_partitions.set(len(self.owned))
        log.info("model applied: %d datasets on %d topics", len(self.datasets),
                 len(self.by_topic))

    # -- rebalance callbacks -------------------------------------------------------------
    def on_assign(self, partitions: Sequence[TopicPartition]
                  ) -> Mapping[TopicPartition, int | None]:
        """Restore the assigned partitions' checkpoints; returns where to start each.

        A database error is retried with back-off for up to ``assignment.ASSIGN_RETRY_S``;
        after that it propagates and the worker exits, to be restarted by its supervisor."""
        self.health.set_condition("partitions", f"restoring {len(partitions)} assigned "
                                                "partitions from their checkpoints")
        counts = {topic: self.source.partition_count(topic) for topic, _ in partitions}
        starts = assignment.retry_database_errors(
            lambda: assignment.restore(self.engine, self.owned, partitions,
                                       by_topic=self.by_topic, partition_counts=counts,
                                       options=self._options, careful=self._careful,
                                       witnesses=getattr(self.source, "witnesses", False)),
            stop=self._stop)
        restored_at = time.monotonic()
        for topic, partition in partitions:
            for dataset in self.by_topic.get(topic, []):
                self._restored_at[(dataset.name, partition)] = restored_at
                owned = self.owned.get((dataset.name, partition))
                if owned is not None and owned.verify is not None:
                    self._unverified.add((topic, partition))
        self.telemetry.assigned_partitions.set(len(self.owned))
        self.health.set_condition("partitions", None)
        self.health.beat()
        log.info("assigned %d partitions", len(partitions),
                 extra={"partitions": [f"{t}[{p}]" for t, p in sorted(partitions)],
                        "offsets": {f"{t}[{p}]": starts.get((t, p)) for t, p in partitions}})
        return starts

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        keys = assignment.revoked_keys(partitions, self.by_topic)
        try:
            self.checkpoint(only=keys, commit=True)
        except Exception:  # noqa: BLE001 - losing the race is safe: the successor replays
            log.exception("checkpoint on revoke failed; the next owner replays from the last one")
        for key in keys:
            self.owned.pop(key, None)
            self._careful.pop(key, None)
            self._restored_at.pop(key, None)
        self._unverified.difference_update(partitions)
        self.telemetry.assigned_partitions.set(len(self.owned))
        log.info("revoked %d partitions", len(partitions),
                 extra={"partitions": [f"{t}[{p}]" for t, p in sorted(partitions)]})

    # -- main loop -----------------------------------------------------------------------
    def start(self) -> None:
        self.source.subscribe(list(self.by_topic), on_assign=self.on_assign,
                              on_revoke=self.on_revoke)
        # Everything built so far (modules, settings, engine, clients) lives as long as
        # the process: move it out of the cyclic collector's generations, so that the
        # full collections the per-poll allocations trigger do not rescan it. Measured
        # on the 1-partition bench: 119-141k -> 153-161k records/s (docs/benchmarks.md).
        _tune_gc(self.settings.gc_threshold)
        json_decoding.configure(threads=self.settings.decode_threads)

    def stop(self) -> None:
        self.health.set_condition("stopping", "stop requested")
        self._stop.set()

    def run(self, *, max_seconds: float | None = None) -> IngestStats:
        """Consume until :meth:`stop` (or ``max_seconds``); then the last checkpoint
        (without a round trip for end offsets: idle partitions are ticked by their next
        owner), leave the consumer group and return."""
        self.start()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.run_once()
            self._stop.set()  # a finalize pass in flight ends after its current dataset
            started = time.monotonic()
            self.checkpoint(commit=True)
            log.info("last checkpoint written in %.2fs", time.monotonic() - started,
                     extra={"partitions_owned": len(self.owned)})
        finally:
            self._writer.shutdown(wait=True)
            if self._decoder is not None:
                self._decoder.shutdown(wait=True)
            self.finalizer.shutdown()
            started = time.monotonic()
            self.source.close()
            log.info("left the consumer group in %.2fs", time.monotonic() - started)
        return self.stats

    def run_once(self) -> None:
        self.health.beat()
        if self._pending_model is not None:
            self._apply_model()
        self._collect(wait=False)
        if self.background_checkpoints and self.finalize:
            self.finalizer.due()
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
        elif self._held:  # a quiet poll: what was held long enough is aggregated now
            self._flush_held(self._due_held(self.clock()))
        for reset in self.source.take_resets():  # (after the records polled before it)
            self._offset_reset(reset)
        since = time.monotonic() - self._last_checkpoint
        # Caught up (the poll timed out before filling up) with records not yet
        # checkpointed: checkpoint now rather than at the next interval, so a burst's
        # metrics land sooner; at most every quarter interval.
        interval = self.checkpoint_interval_s
        caught_up = (polled < limit
                     and since >= interval / 4
                     and any(owned.dirty for owned in self.owned.values()))
        if caught_up or since >= interval:
            if self.background_checkpoints:
                self._checkpoint_due()
                return
            try:
                self.checkpoint(commit=True, hold=True)
            except DBAPIError as exc:
                self._db_unavailable(exc)
                return
            self._db_failures = 0
            if self.finalize:
                self.finalize_ready()

    def _owned_keys(self, topic: str, partition: int) -> list[PartitionKey]:
        """The owned (dataset, partition)s that read this topic partition."""
        return [(dataset.name, partition) for dataset in self.by_topic.get(topic, [])
                if (dataset.name, partition) in self.owned]

    def _offset_reset(self, reset: OffsetReset) -> None:
        """A partition whose position its log did not hold (dqpulse.ingest.resets)."""
        keys = self._owned_keys(reset.topic, reset.partition)
        if reset.reason in ("log_shorter", "replaced"):
            self._flush_held(keys)  # records of the old log, counted before the new one's
        if reset.reason != "retried":
            # read on from the log's start: a witness of the old log is no longer where the
            # partition reads (compared with a record of a new log, it would reset it again)
            for key in keys:
                self.owned[key].verify = None
            self._unverified.discard((reset.topic, reset.partition))
        for key in apply_reset(reset, keys, self.owned, self.telemetry):
            self._careful.pop(key, None)  # (it was careful of the old log)
        if reset.reason == "retried":
            self._witness_again(reset.topic, reset.partition, keys)

    def _witness_again(self, topic: str, partition: int, keys: Sequence[PartitionKey]) -> None:
        """The log holds the position it was out of range at a moment ago: a log that
        grew back past it (a topic recreated while this worker read it, refilled before
        the source read its bounds), or a fetch that failed while the log moved. Read
        again from the last record counted, and compare it (dqpulse.ingest.witness)."""
        seek = getattr(self.source, "seek", None)
        if seek is None or not getattr(self.source, "witnesses", False):
            return
        starts = []
        for key in keys:
            witness = self.owned[key].witness
            if witness is not None:
                self.owned[key].verify = Witness(*witness)
                starts.append(witness[0])
        if starts:
            self._unverified.add((topic, partition))
            seek(topic, partition, min(starts))

    def _witnessed(self, batch: PartitionBatch) -> bool:
        """Compare a partition started at its checkpoint's witness with what its log holds
        there (dqpulse.ingest.witness); False when the log was replaced: the batch is
        not counted, and the partition is read again from offset 0."""
        keys = self._owned_keys(batch.topic, batch.partition)
        replaced: tuple[int, int] | None = None
        pending = False
        for key in keys:
            owned = self.owned[key]
            if owned.verify is None:
                continue
            verdict = owned.verify.check(batch)
            if verdict is None:
                pending = True
                continue
            if verdict is False and replaced is None:
                replaced = (owned.verify.offset, owned.next_offset or 0)
            owned.verify = None
        if replaced is None:
            if not pending:
                self._unverified.discard((batch.topic, batch.partition))
            return True
        witness, read_to = replaced
        self._offset_reset(OffsetReset(batch.topic, batch.partition, read_to, 0,
                                       batch.last_offset + 1, replaced_at=witness))
        seek = getattr(self.source, "seek", None)
        if seek is not None:
            seek(batch.topic, batch.partition, 0)
        return False

    def _ingest(self, batches: list[PartitionBatch]) -> None:
        now = self.clock()
        coalesce = self.settings.coalesce_records
        max_wait = self.settings.coalesce_max_wait_s
        held = self._held
        jobs: list[tuple[PartitionKey, AddJob]] = []
        unverified = self._unverified
        for batch in batches:
            self.stats.polled += len(batch)
            if unverified and (batch.topic, batch.partition) in unverified and (
                    not self._witnessed(batch)):
                continue
            for dataset in self.by_topic.get(batch.topic, []):
                key = (dataset.name, batch.partition)
                owned = self.owned.get(key)
                if owned is None:
                    continue  # revoked between poll and now: the new owner replays it
                jobs += [(key, job) for job in owned.plan(batch, now, coalesce=coalesce,
                                                          max_wait_s=max_wait)]
                if owned.held:
                    held.add(key)
        if held:  # the partitions of this poll were planned in order; others held enough
            jobs += self._take_held(self._due_held(now))
        if held and (sum(self.owned[key].held_records for key in held if key in self.owned)
                     > self.settings.coalesce_max_held_records):
            jobs += self._take_held(None)
        self._aggregate(jobs)

    def _due_held(self, now: float) -> list[PartitionKey]:
        """Partitions whose held records should be aggregated now (held long enough)."""
        held = self._held
        held.intersection_update(self.owned)  # revoked: the next owner replays them
        coalesce = self.settings.coalesce_records
        max_wait = self.settings.coalesce_max_wait_s
        return [key for key in held if self.owned[key].due(now, coalesce, max_wait)]

    def _take_held(self, only: Sequence[PartitionKey] | None) -> list[tuple[PartitionKey, AddJob]]:
        """What partitions hold back for coalescing, as jobs to aggregate now."""
        keys = list(self._held) if only is None else [k for k in only if k in self._held]
        jobs: list[tuple[PartitionKey, AddJob]] = []
        for key in keys:
            self._held.discard(key)
            owned = self.owned.get(key)
            if owned is None:
                continue  # revoked (or reloaded after fencing): its next owner replays it
            jobs += [(key, job) for job in owned.take_held()]
        return jobs

    def _flush_held(self, only: Sequence[PartitionKey] | None) -> None:
        """Aggregate what partitions hold back for coalescing (``only`` these; None: all)."""
        self._aggregate(self._take_held(only))

    def _aggregate(self, jobs: Sequence[tuple[PartitionKey, AddJob]]) -> None:
        """Count ``jobs`` in order. With a decode thread, the jobs are decoded there in
        the same order (a partition's decoder learns its schema batch after batch) while
        this thread counts the ones already decoded: decoding (Arrow's JSON reader, Avro)
        runs outside the GIL and overlaps the metric updates, on a second core."""
        sizes = self.telemetry.aggregated_batch_records
        for _key, job in jobs:
            sizes.observe(len(job.batch))
        failed: set[PartitionKey] = set()  # reloaded: their later jobs are replayed
        pool = self._decoder
        # a careful count decodes on this thread, after its note (a crash in decoding
        # must happen where the note says)
        if pool is None or len(jobs) < 2 or (
                self._careful and any(key in self._careful for key, _ in jobs)):
            for key, job in jobs:
                if key not in failed:
                    self._count(key, job, None, failed)
            return
        futures = [pool.submit(self.owned[key].aggregator.prepare, job.batch)
                   for key, job in jobs]
        try:
            for (key, job), future in zip(jobs, futures, strict=True):
                if key not in failed:
                    self._count(key, job, future, failed)
        finally:  # no decoding left in flight (a decoder is used by one thread at a time)
            for future in futures:
                future.cancel()
            wait(futures)

    def _count(self, key: PartitionKey, job: AddJob, decoded: Future[Decoded] | None,
               failed: set[PartitionKey]) -> None:
        """Count one job into its partition's windows (``decoded``: prepared ahead).

        A metric update that raises (a bug met by some record) leaves the partition's
        state half updated: the partition is reloaded from its checkpoint and the
        consumer sent back there (:meth:`_batch_failed`); when the replay reaches the
        batch again, it is counted by :func:`add_isolating`, which leaves out the records
        that raise (dead-lettered as ``unprocessable``). One such record no longer stops
        the worker, and again after every restart."""
        owned = self.owned.get(key)
        if owned is None:
            return  # revoked meanwhile: the next owner replays it
        aggregator = owned.aggregator
        careful = self._careful.get(key)
        if self._is_suspect(key, job.batch):
            owned.aggregator, report = add_isolating(aggregator, job.batch, job.now,
                                                     job.poll_times)
        else:
            try:
                if careful is not None:
                    report = count_carefully(self.engine, key, aggregator, job, careful,
                                             self.health.beat)
                else:
                    report = (aggregator.add(job.batch, job.now, job.poll_times)
                              if decoded is None
                              else aggregator.apply(decoded.result(), job.now,
                                                    job.poll_times))
            except MemoryError:
                raise  # no bug of one record: the restart replays from the checkpoint
            except Exception as exc:  # noqa: BLE001 - contained: reload, replay, isolate
                failed.add(key)
                self._batch_failed(key, job.batch, exc)
                return
        self._account(self._by_name[key[0]], report)

    def _is_suspect(self, key: PartitionKey, batch: PartitionBatch) -> bool:
        return any(first <= batch.last_offset and batch.first_offset <= last
                   for first, last in self._suspects.get(key, ()))

    def _batch_failed(self, key: PartitionKey, batch: PartitionBatch,
                      exc: Exception) -> None:
        """A batch's metric update raised: remember its offsets, and reload the
        partition from its checkpoint (its in-memory state is no longer trusted) and seek
        back there. A database error while reloading propagates: the worker exits, and
        its restart replays from the checkpoint as well."""
        name, partition = key
        self.stats.batch_failures += 1
        self.telemetry.batch_failures.labels(name).inc()
        ranges = self._suspects.setdefault(key, [])
        ranges.append((batch.first_offset, batch.last_offset))
        del ranges[:-MAX_SUSPECT_RANGES]
        log.error("counting %d records of %s[%d] (offsets %d-%d, dataset %s) raised; "
                  "reloading the partition from its checkpoint to count them without the "
                  "records that raise", len(batch), batch.topic, partition,
                  batch.first_offset, batch.last_offset, name, exc_info=exc)
        self._collect(wait=True)  # a checkpoint in flight lands before the state is reloaded
        self._held.discard(key)
        protocol.reload(self.engine, self.owned, [key], self._by_name, self._options)
        assignment.resume_positions(self.source, self.owned, [key], self._topic_of)

    def _topic_of(self, dataset_name: str) -> str:
        return self._by_name[dataset_name].topic

    def _account(self, dataset: DatasetSpec, report: AddReport) -> None:
        t = self.telemetry
        self.stats.accepted += report.accepted
        self.stats.late += report.late
        self.stats.bad += len(report.bad)
        t.records.labels(dataset.name).inc(report.accepted)
        if report.late:
            t.late_records.labels(dataset.name).inc(report.late)
        if report.event_time_fallbacks:
            t.event_time_fallbacks.labels(dataset.name).inc(report.event_time_fallbacks)
        for item in report.bad:
            self.stats.by_reason[item.reason] += 1
            t.decode_errors.labels(dataset.name, item.reason).inc()
            if self.dead_letter is not None:
                self.dead_letter.send(item.message, item.reason, item.detail)
                t.dead_lettered.labels(dataset.name).inc()

    # -- checkpoint ----------------------------------------------------------------------
    def checkpoint(self, *, only: Sequence[PartitionKey] | None = None,
                   commit: bool = True, hold: bool = False) -> None:
        """Write state + offsets of owned partitions in one transaction, then commit offsets.

        Synchronous: waits for a background checkpoint in flight first, so on return every
        record polled so far is checkpointed (revocation, shutdown, tests); with ``hold``
        (the periodic checkpoint) records held back for coalescing stay held and their
        partitions are saved at the first held offset."""
        self._collect(wait=True)
        job = self._prepare(only, hold=hold)
        if job is None:
            return
        job.clean = not hold  # stopping, or handing partitions over: no crash loop
        try:
            job.versions = self._write(job)
        except protocol.FencedError as exc:
            self._fenced(job, exc)
            return
        except BaseException:
            protocol.failed(job)
            raise
        self._applied(job, commit=commit)

    def _checkpoint_due(self) -> None:
        """The periodic checkpoint of ``run_once`` with background checkpoints: the
        snapshot is taken here, the transaction runs on the writer thread while this one
        goes on consuming; ``_collect`` applies the outcome."""
        if self._inflight is not None:
            return  # the previous one is still writing; try again next loop
        job = self._prepare(None, hold=True)
        if job is not None:
            self._inflight = self._writer.submit(self._write_job, job)

    @property
    def checkpoint_interval_s(self) -> float:
        """How long the periodic checkpoint waits: ``checkpoint_interval_s``, stretched
        so that the last checkpoint's cost (snapshot + transaction) is at most
        ``checkpoint_max_share`` of the time, up to ``checkpoint_max_interval_s``.
        Exactly-once does not depend on it; what a crash replays and how soon a
        window's partials reach the finalizer do."""
        settings = self.settings
        stretched = self._checkpoint_cost_s / settings.checkpoint_max_share
        return max(settings.checkpoint_interval_s,
                   min(stretched, settings.checkpoint_max_interval_s))

    def _prepare(self, only: Sequence[PartitionKey] | None, *,
                 hold: bool = False) -> CheckpointJob | None:
        """Snapshot what to write (consuming thread); None when nothing is owned. Held
        records are aggregated first (``hold``: only those held long enough; the others
        stay held and their partitions are saved at the first held offset: a periodic
        checkpoint of many quiet partitions does not cut their batches short)."""
        self._last_checkpoint = time.monotonic()
        self._flush_held(self._due_held(self.clock()) if hold else only)
        started = time.monotonic()  # the records held back are not the checkpoint's cost
        job = self._snapshot(only)
        if job is not None:
            job.prepare_s = time.monotonic() - started
        return job

    def _snapshot(self, only: Sequence[PartitionKey] | None) -> CheckpointJob | None:
        keys = list(self.owned) if only is None else [k for k in only if k in self.owned]
        if not keys:
            if only is None:
                self.health.progress()  # nothing owned: nothing to checkpoint is up to date
            return None
        now = self.clock()
        ends = protocol.read_end_offsets(self.source, self.owned, keys, self._topic_of, now,
                                         ask_broker=not self._stop.is_set())
        if self.dead_letter is not None:
            self.dead_letter.flush()  # dead letters are durable before offsets move on
        return protocol.prepare(self.owned, keys, ends, self._topic_of, now)

    def _write(self, job: CheckpointJob) -> list[int]:
        started = time.perf_counter()
        versions = protocol.write(self.engine, job, owner_id=self.owner_id)
        job.write_s = time.perf_counter() - started
        self.telemetry.checkpoint_seconds.observe(job.write_s)
        return versions

    def _write_job(self, job: CheckpointJob) -> CheckpointJob:
        try:
            job.versions = self._write(job)
        except BaseException as exc:  # handed to the consuming thread by _collect
            job.error = exc
        return job

    def _collect(self, *, wait: bool) -> None:
        """Apply the outcome of the background checkpoint, if one finished (consuming
        thread)."""
        future = self._inflight
        if future is None or (not wait and not future.done()):
            return
        self._inflight = None
        job = future.result()
        error = job.error
        if error is None:
            self._db_failures = 0
            self._applied(job, commit=True)
        elif isinstance(error, protocol.FencedError):
            self._fenced(job, error)
        elif isinstance(error, DBAPIError):
            protocol.failed(job)
            self._db_unavailable(error)
        else:
            protocol.failed(job)
            raise error

    def _applied(self, job: CheckpointJob, *, commit: bool) -> None:
        if len(job.keys) >= len(self.owned):  # periodic (a revocation's covers only some)
            self._checkpoint_cost_s = job.prepare_s + job.write_s
            self.telemetry.checkpoint_interval.set(self.checkpoint_interval_s)
        commit_offsets = protocol.apply(self.owned, job, self._topic_of)
        for row in job.rows if self._careful else ():
            careful, key = self._careful.get(row.key), row.key
            if careful is not None and not careful.ahead(row.next_offset):
                del self._careful[key]
                log.info("%s[%d] is past where its worker died: counted as usual again",
                         *key, extra={"dataset": key[0], "partitions": [key[1]]})
        if self._restored_at:
            self._clear_survived()
        self.stats.checkpoints += 1
        self.telemetry.checkpoints.inc()
        self.health.progress()
        if commit and commit_offsets:
            try:
                self.source.commit(commit_offsets)
            except Exception:  # noqa: BLE001 - the checkpoint, not the group, is the truth
                log.warning("offset commit failed; checkpoints still hold the positions",
                            exc_info=True)

    def _clear_survived(self) -> None:
        """Clear the restores of the partitions this worker has owned for
        ``careful.SURVIVED_S`` (it did not die of them), unless a careful count knows where
        a worker died on one of them: that one goes on until it is past the place."""
        cutoff = time.monotonic() - careful_module.SURVIVED_S
        due = [key for key, at in self._restored_at.items() if at <= cutoff]
        if not due:
            return
        keys = [key for key in due
                if key not in self._careful or self._careful[key].blind]
        try:
            if keys:
                careful_module.clear_restores(self.engine, keys)
        except DBAPIError as exc:  # the next checkpoint tries again
            log.warning("clearing the restores of %d partitions failed: %s", len(keys), exc)
            return
        for key in due:
            del self._restored_at[key]
        for key in keys:
            self._careful.pop(key, None)

    def _fenced(self, job: CheckpointJob, exc: Exception) -> None:
        self.stats.fenced += 1
        self.telemetry.checkpoint_fenced.inc()
        log.warning("%s; reloading owned partitions from their checkpoints", exc)
        protocol.reload(self.engine, self.owned, job.keys, self._by_name, self._options)
        assignment.resume_positions(self.source, self.owned, job.keys, self._topic_of)

    def _db_unavailable(self, exc: DBAPIError) -> None:
        # Nothing is lost: offsets are not committed, in-memory state and positions stay
        # consistent, and the next checkpoint writes everything since the last.
        self._db_failures += 1
        backoff = min(30.0, 0.5 * 2 ** min(self._db_failures, 6))
        self._db_down_until = time.monotonic() + backoff
        self.telemetry.checkpoint_failures.inc()
        log.warning("checkpoint failed (%s); retrying in %.1fs",
                    type(exc.orig).__name__ if exc.orig else exc, backoff)

    def finalize_ready(self, only: set[str] | None = None) -> int:
        """Finalize ready windows now, on the calling thread (see :class:`Finalizer`)."""
        return self.finalizer.finalize_ready(only)


def _tune_gc(threshold: int) -> None:
    # No gc.unfreeze at exit: it handed the whole heap back to the final collections and
    # cost 1.5 s of a busy worker's 2.5 s stop here, growing with the heap (an exiting
    # process needs no collection; the OS takes the memory back).
    gc.freeze()
    # A poll allocates tens of thousands of objects (a message object per record, which
    # the cyclic collector tracks) that all live until the poll is counted: at Python's
    # threshold (700) every few hundred records ran a collection that found nothing.
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)
