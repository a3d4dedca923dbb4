"""Kafka source on kafka-python (pure Python): same interface, slower per record."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, TypeVar

import numpy as np
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    LogTruncationError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)
from kafka.net.compat import KafkaNetClient
from kafka.structs import OffsetAndMetadata

from dqpulse.config import Settings
from dqpulse.records import PartitionBatch, RawMessage, group_by_partition
from dqpulse.sources.base import (
    AssignCallback,
    OffsetReset,
    RevokeCallback,
    SourceStopped,
    TopicPartition,
)
from dqpulse.sources.kafka_common import KAFKA_PYTHON_NAMES, connection_config, dead_letter_headers

log = logging.getLogger(__name__)
_key = attrgetter("key")
_Client = TypeVar("_Client")

#: how long one try to reach a broker waits (kafka-python reads the brokers' API versions
#: in its constructors, and its own default gives up after 30 s)
BOOTSTRAP_TIMEOUT_MS = 10_000
#: how long a caller with no stop event waits, once (kafka-python's default)
ONE_TRY_TIMEOUT_MS = 30_000
#: seconds between tries while no broker answers
BOOTSTRAP_RETRY_S = 2.0


def bootstrapped(build: Callable[..., _Client], what: str, servers: Sequence[str],
                 stop: threading.Event | None, **options: Any) -> _Client:
    """``build(**options)`` (a KafkaConsumer or KafkaProducer), tried again every
    ``BOOTSTRAP_RETRY_S`` while no broker answers, until ``stop`` is set (then
    :class:`SourceStopped`). kafka-python's constructors contact a broker and raise
    KafkaTimeoutError when none answers; a worker started before its broker (a host
    reboot, a deployment that starts both) used to exit there. The network client of a
    failed try is closed, so its I/O thread does not outlive it. Without ``stop``, one
    try of ``ONE_TRY_TIMEOUT_MS`` and its failure is raised, as before."""
    made: list[KafkaNetClient] = []

    def client(**config: Any) -> KafkaNetClient:
        made.append(KafkaNetClient(**config))
        return made[-1]

    tries = 0
    while True:
        made.clear()
        try:
            return build(**options, kafka_client=client, bootstrap_timeout_ms=(
                BOOTSTRAP_TIMEOUT_MS if stop is not None else ONE_TRY_TIMEOUT_MS))
        except KafkaTimeoutError as exc:
            for net in made:
                net.close()
            if stop is None:
                raise
            tries += 1
            if tries == 1 or tries % 10 == 0:
                log.warning("kafka: no broker of %s answered the %s (%s, try %d); trying "
                            "again every %gs", ",".join(servers), what, exc, tries,
                            BOOTSTRAP_RETRY_S)
        if stop.wait(BOOTSTRAP_RETRY_S):
            raise SourceStopped(f"stopped while waiting for a broker of {','.join(servers)}")


def client_config(settings: Settings) -> dict[str, Any]:
    """kafka-python settings shared by consumer and producer, SASL/SSL passed through."""
    config = connection_config(settings, KAFKA_PYTHON_NAMES)
    config["bootstrap_servers"] = settings.kafka_bootstrap.split(",")
    return config


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaPythonSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: list[KpTopicPartition]) -> None:
        if revoked and self.source._on_revoke is not None:
            # kafka-python runs this on its network thread: no blocking metadata calls
            self.source._in_callback = True
            try:
                self.source._on_revoke([(tp.topic, tp.partition) for tp in revoked])
            finally:
                self.source._in_callback = False

    def on_partitions_assigned(self, assigned: list[KpTopicPartition]) -> None:
        if not assigned or self.source._on_assign is None:
            return
        self.source._in_callback = True
        try:
            starts = self.source._on_assign([(tp.topic, tp.partition) for tp in assigned])
        finally:
            self.source._in_callback = False
        consumer = self.source._consumer
        for tp in assigned:
            start = starts.get((tp.topic, tp.partition))
            if start is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)


class KafkaPythonSource:
    #: a restored partition starts at its checkpoint's witness, compared with what the log
    #: holds there (dqpulse.ingest.witness): offsets in a Kafka log name one record for ever
    witnesses = True

    def __init__(self, settings: Settings, *, group_id: str | None = None,
                 client_id: str = "dqpulse-ingest",
                 stop: threading.Event | None = None) -> None:
        """``stop``: wait for a broker until it is set (see :func:`bootstrapped`);
        without it, no broker within ``BOOTSTRAP_TIMEOUT_MS`` raises KafkaTimeoutError."""
        config = client_config(settings)
        self._consumer = bootstrapped(
            KafkaConsumer, "consumer", config["bootstrap_servers"], stop,
            group_id=group_id or settings.kafka_group,
            client_id=client_id,
            enable_auto_commit=False,
            # a position its log does not hold raises, never resets silently (see poll)
            auto_offset_reset="none",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=1_000,
            # a bounced broker is met again within seconds, not after up to 30 s (its own
            # default back-off, which stalled ingest that long in tests/chaos)
            reconnect_backoff_max_ms=settings.kafka_reconnect_backoff_max_ms,
            max_poll_records=settings.poll_max_records,
            fetch_max_bytes=52_428_800,
            max_partition_fetch_bytes=4_194_304,
            **config,
        )
        self._on_assign: AssignCallback | None = None
        self._on_revoke: RevokeCallback | None = None
        self._in_callback = False
        self._partition_counts: dict[str, int] = {}
        self._resets: list[OffsetReset] = []
        # topics to subscribe to once the broker answers (it was away at subscribe())
        self._unsubscribed: list[str] | None = None
        self._retry_at = 0.0

    #: seconds between tries to subscribe while the broker does not answer
    SUBSCRIBE_RETRY_S = 2.0

    def subscribe(self, topics: Sequence[str], *, on_assign: AssignCallback,
                  on_revoke: RevokeCallback) -> None:
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._unsubscribed = list(topics)
        self._try_subscribe()

    def _try_subscribe(self) -> bool:
        """Subscribe, once every topic's partition count is known. Rebalance callbacks may
        run on kafka-python's network thread, where no blocking call is allowed: the
        counts are learned first, on the caller's thread. A broker that is away (a worker
        started, or its model reloaded, while the broker restarts) leaves the worker
        consuming nothing, retried from :meth:`poll` every ``SUBSCRIBE_RETRY_S``; before
        session 47 the connection error ended the worker (found by tests/chaos)."""
        topics = self._unsubscribed
        if topics is None:
            return True
        try:
            for topic in topics:
                self._partition_counts[topic] = self._fetch_partition_count(topic)
        except KafkaError as exc:
            log.warning("kafka: the partition counts of %s were not read (%s); subscribing "
                        "once the broker answers", ", ".join(topics), exc)
            self._retry_at = time.monotonic() + self.SUBSCRIBE_RETRY_S
            return False
        self._consumer.subscribe(list(topics), listener=_Listener(self))
        self._unsubscribed = None
        return True

    def poll(self, max_records: int, timeout_s: float) -> list[PartitionBatch]:
        if self._unsubscribed is not None and (
                time.monotonic() < self._retry_at or not self._try_subscribe()):
            time.sleep(min(timeout_s, 0.5))  # as long as a poll would have waited, at most
            return []
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000),
                                          max_records=max_records)
        except KafkaConnectionError as exc:
            # the broker is away: kafka-python lets the coordinator lookup's connection
            # error out of poll() (before any fetch, so no position moved); the next poll
            # retries. Uncaught, it ended the worker (found by tests/chaos).
            log.warning("kafka poll: %s; retrying", exc)
            time.sleep(min(timeout_s, 0.5))  # as long as a poll would have waited, at most
            return []
        except NoOffsetForPartitionError as exc:  # (every assigned partition is sought)
            log.warning("kafka poll: partitions %s have no position: reading them from "
                        "their start (what was counted before is skipped)", exc)
            for tp in exc.args[0] if exc.args else ():
                self._consumer.seek_to_beginning(tp)
            return []
        except OffsetOutOfRangeError as exc:  # {partition: the offset that failed}
            failed = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            self._reset(failed, replaced=False, why="are out of range")
            return []
        except LogTruncationError as exc:  # KIP-320, kafka-python >= 3
            # the broker says a partition's log diverges from the records read (its
            # leader epoch's log ends before the position): the topic was deleted and
            # recreated, or an unclean leader election truncated it. Uncaught, this ended
            # the worker (found in session 49: a recreated topic, kafka-python 3). Read as
            # a replaced log: again from the log's start, reported as ``replaced`` at the
            # first diverging offset
            self._reset({tp: None if point is None else point.offset
                         for tp, point in exc.divergent_offsets.items()},
                        replaced=True, why="diverge from the records read")
            return []
        out: list[PartitionBatch] = []
        for tp, records in batches.items():
            if not records:
                continue
            n = len(records)
            out.extend(group_by_partition(
                [tp.topic] * n, np.full(n, tp.partition, dtype=np.int64),
                [r.value for r in records],
                np.fromiter((r.timestamp for r in records), dtype=np.int64, count=n),
                np.fromiter((r.offset for r in records), dtype=np.int64, count=n),
                records, _key))
        return out

    def _reset(self, failed: Mapping[KpTopicPartition, int | None], *, replaced: bool,
               why: str) -> None:
        """Move each partition of ``failed`` (the offset where its log failed it; None:
        not known) to where its :class:`OffsetReset` says, and keep the reset for the
        worker. A broker that does not say where the logs are leaves them as they are:
        the next poll fails the same way, and this is tried again."""
        parts = list(failed)
        try:
            lows = self._consumer.beginning_offsets(parts)
            highs = self._consumer.end_offsets(parts)
        except KafkaError as error:
            log.warning("offsets %s %s and the broker did not say where the logs are (%s)",
                        dict(failed), why, error)
            return
        for tp, failed_at in failed.items():
            at = lows[tp] if failed_at is None else int(failed_at)
            reset = OffsetReset(tp.topic, tp.partition, at, lows[tp], highs[tp],
                                replaced_at=at if replaced else None)
            self._consumer.seek(tp, reset.to)
            self._resets.append(reset)

    def take_resets(self) -> list[OffsetReset]:
        resets, self._resets = self._resets, []
        return resets

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        payload = {KpTopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                   for (t, p), o in offsets.items()}
        if self._in_callback:
            self._consumer.commit_async(payload)  # no blocking on the network thread
        else:
            self._consumer.commit(payload)

    def seek(self, topic: str, partition: int, offset: int | None) -> None:
        tp = KpTopicPartition(topic, partition)
        try:
            if offset is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)
        except Exception:  # noqa: BLE001 - not assigned any more: the new owner resumes
            log.info("seek %s[%s] skipped: partition no longer assigned", topic, partition)

    def end_offsets(self, partitions: Sequence[TopicPartition], *,
                    fresh: bool = True) -> dict[TopicPartition, int]:
        """Fresh end offsets (a ListOffsets request). Inside a rebalance callback, which may
        run on kafka-python's network thread where blocking is not allowed, none: the
        caller then skips idle ticks for that checkpoint. Not ``fresh``: the high watermark
        of the last fetch response where there is one (after a reassignment it can be
        stale, so the caller never decides "caught up" from it)."""
        if not fresh:
            cached = {(t, p): self._consumer.highwater(KpTopicPartition(t, p))
                      for t, p in partitions}
            return {tp: high for tp, high in cached.items() if high is not None}
        if self._in_callback or not partitions:
            return {}
        ends = self._consumer.end_offsets([KpTopicPartition(t, p) for t, p in partitions])
        return {(tp.topic, tp.partition): off for tp, off in ends.items()}

    def partition_count(self, topic: str) -> int:
        partitions = self._consumer.partitions_for_topic(topic)
        if partitions:
            self._partition_counts[topic] = len(partitions)
            return len(partitions)
        if self._in_callback or topic in self._partition_counts:
            return self._partition_counts[topic]
        return self._fetch_partition_count(topic)

    def _fetch_partition_count(self, topic: str) -> int:
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            self._consumer.topics()  # a metadata request (blocking)
            partitions = self._consumer.partitions_for_topic(topic) or set()
        return len(partitions)

    def close(self) -> None:
        self._consumer.close()


class KafkaPythonDeadLetterSink:
    def __init__(self, settings: Settings, topic: str, *,
                 stop: threading.Event | None = None) -> None:
        config = client_config(settings)
        self._producer = bootstrapped(
            KafkaProducer, "dead-letter producer", config["bootstrap_servers"], stop,
            max_request_size=16_777_216, linger_ms=20, **config)
        self._topic = topic

    def send(self, message: RawMessage, reason: str, detail: str) -> None:
        headers = dead_letter_headers(message, reason, detail)
        self._producer.send(self._topic, value=message.value, key=message.key, headers=headers)

    def flush(self) -> None:
        self._producer.flush(30.0)
