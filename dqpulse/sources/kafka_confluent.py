"""Kafka source on confluent-kafka (librdkafka): the default, measured faster.

No blocking consumer call inside a rebalance callback. confluent-kafka keeps the state of
the call that serves callbacks (``consume()``) in a thread-local slot, and a blocking call
made from inside a callback (``list_topics``) clears that slot when it returns; the next
callback of the same ``consume()`` (a librdkafka log line, frequent while the broker is
away) then aborts the process (SIGABRT, ``CallState_get: Assertion 'cs != NULL'``; found
by tests/chaos, about 1 broker bounce in 7). So, while a callback runs: partition counts come
from a cache refreshed in :meth:`ConfluentSource.poll` before ``consume()``; offset commits
are asynchronous (Kafka's committed offsets are advisory: a worker restarts from its
Postgres checkpoint); no fresh end offsets are asked (idle partitions are ticked by the
next checkpoint or owner); seeks are skipped (the partitions are being revoked).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any, cast

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from confluent_kafka import TopicPartition as CkTopicPartition

from dqpulse.config import Settings
from dqpulse.records import PartitionBatch, RawMessage, group_by_partition
from dqpulse.sources.base import AssignCallback, OffsetReset, RevokeCallback, TopicPartition
from dqpulse.sources.kafka_common import LIBRDKAFKA_NAMES, connection_config, dead_letter_headers

log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("dqpulse.sources.librdkafka")

# Unbound methods of the C message type: ``map`` over them builds each column without a
# Python-level call per message.
_value, _topic, _partition = Message.value, Message.topic, Message.partition
_offset, _timestamp, _error, _key = Message.offset, Message.timestamp, Message.error, Message.key
_second = itemgetter(1)

#: how often (seconds) the cached partition counts are refreshed, outside callbacks
#: (librdkafka itself notices a topic's new partitions, and rebalances, every 300 s:
#: ``topic.metadata.refresh.interval.ms``); a topic without a count is retried sooner
PARTITION_COUNT_REFRESH_S = 30.0
UNKNOWN_COUNT_RETRY_S = 2.0
#: how long one metadata request for a partition count may take in the poll loop
METADATA_TIMEOUT_S = 5.0


def client_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings shared by consumer and producer, SASL/SSL passed through;
    librdkafka's own log lines go through Python logging (a JSON log stays JSON)."""
    config = connection_config(settings, LIBRDKAFKA_NAMES)
    config["logger"] = _librdkafka_log
    return config


class ConfluentSource:
    #: a restored partition starts at its checkpoint's witness, compared with what the log
    #: holds there (dqpulse.ingest.witness): offsets in a Kafka log name one record for ever
    witnesses = True

    def __init__(self, settings: Settings, *, group_id: str | None = None,
                 client_id: str = "dqpulse-ingest") -> None:
        config = client_config(settings)
        config.update({
            "group.id": group_id or settings.kafka_group,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # a position its log does not hold comes back as an error, never reset
            # silently: a recreated topic's records below the old checkpoint were skipped
            # as counted before (see _out_of_range)
            "auto.offset.reset": "error",
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "heartbeat.interval.ms": 1_000,
            "reconnect.backoff.max.ms": settings.kafka_reconnect_backoff_max_ms,
            "max.poll.interval.ms": 300_000,
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 4_194_304,
            # librdkafka (>= 2.1) postpones a partition's next fetch by
            # fetch.queue.backoff.ms (default 1000) once its local queue is above
            # queued.min.messages; a worker draining the queue in less than that then waits
            # for data. A short backoff with a smaller queue keeps the consumer fed and
            # holds less prefetched data per partition (docs/benchmarks.md, issue 3).
            "fetch.queue.backoff.ms": 10,
            "queued.min.messages": 20_000,
        })
        self._consumer = Consumer(config)
        self._on_assign: AssignCallback | None = None
        self._on_revoke: RevokeCallback | None = None
        self._in_callback = False
        self._topics: list[str] = []
        # a subscription waiting for its topics' partition counts: (topics, callbacks)
        self._subscription: tuple[list[str], Any, Any, Any] | None = None
        # topic -> partition count, as the broker last gave it
        self._partition_counts: dict[str, int] = {}
        self._counted_at = 0.0  # monotonic time of the last metadata request
        self._unreachable = False  # that request was not answered
        # seeks asked for inside a callback: made right after the consume() that ran it
        self._pending_seeks: dict[TopicPartition, int | None] = {}
        self._resets: list[OffsetReset] = []
        # where each partition was last asked to start (assigned or sought): a partition
        # assigned again before it consumed anything starts there
        self._asked: dict[TopicPartition, int | None] = {}

    def subscribe(self, topics: Sequence[str], *, on_assign: AssignCallback,
                  on_revoke: RevokeCallback) -> None:
        """Subscribe to ``topics`` once their partition counts are known: the callbacks
        read them from the cache, filled here, on the caller's thread and outside any
        callback; when the broker does not answer, :meth:`poll` asks again and subscribes
        then. Until then the consumer keeps its earlier subscription (topics counted
        before), so ``consume()`` never runs an assignment without its counts and can
        always be called: it also serves librdkafka's log lines, which would otherwise
        wait in memory for as long as the broker is away."""
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._topics = list(topics)

        def assign(consumer: Consumer, partitions: list[CkTopicPartition]) -> None:
            assert self._on_assign is not None
            self._check_counts(partitions)
            with self._callback():
                starts = self._on_assign([(p.topic, p.partition) for p in partitions])
            for p in partitions:
                self._pending_seeks.pop((p.topic, p.partition), None)  # started right below
                start = starts.get((p.topic, p.partition))
                p.offset = OFFSET_BEGINNING if start is None else start
                self._asked[(p.topic, p.partition)] = start
            consumer.assign(partitions)  # not blocking: librdkafka applies it in the background

        def revoke(consumer: Consumer, partitions: list[CkTopicPartition]) -> None:
            assert self._on_revoke is not None
            with self._callback():
                self._on_revoke([(p.topic, p.partition) for p in partitions])
            consumer.unassign()
            self._asked.clear()

        def lost(consumer: Consumer, partitions: list[CkTopicPartition]) -> None:
            # Lost (not revoked): another member may own them already; the checkpoint's
            # compare-and-set fences any write we would still make, so we only drop state.
            assert self._on_revoke is not None
            with self._callback():
                self._on_revoke([(p.topic, p.partition) for p in partitions])
            consumer.unassign()
            self._asked.clear()

        self._subscription = (list(topics), assign, revoke, lost)
        if self._refresh_partition_counts(force=True):
            self._subscribe_now()

    def _subscribe_now(self) -> None:
        assert self._subscription is not None
        topics, assign, revoke, lost = self._subscription
        self._consumer.subscribe(topics, on_assign=assign, on_revoke=revoke, on_lost=lost)
        self._subscription = None

    def _check_counts(self, partitions: list[CkTopicPartition]) -> None:
        """A partition beyond the cached count: the topic grew since the last refresh and
        librdkafka noticed first. Stop rather than store a short count (which would
        finalize windows before every partition passed them); the restart reads it."""
        for p in partitions:
            known = self._partition_counts.get(p.topic)
            if known is not None and p.partition >= known:
                raise RuntimeError(f"{p.topic}[{p.partition}] assigned, but the topic had "
                                   f"{known} partitions at the last refresh")

    @contextmanager
    def _callback(self) -> Iterator[None]:
        self._in_callback = True
        try:
            yield
        finally:
            self._in_callback = False

    def poll(self, max_records: int, timeout_s: float) -> list[PartitionBatch]:
        if self._refresh_partition_counts() and self._subscription is not None:
            self._subscribe_now()  # the counts the broker did not give at subscribe()
        # without a subscription yet (the broker away since the start) this returns
        # nothing and serves the log lines
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        if self._pending_seeks:
            # a callback of this consume() reloaded partitions from their checkpoints: what
            # it returned for them is from the old position; seek now, outside the callback
            # (which also drops what was prefetched)
            seeks, self._pending_seeks = self._pending_seeks, {}
            messages = [m for m in messages if (m.topic(), m.partition()) not in seeks]
            for (topic, partition), offset in seeks.items():
                self.seek(topic, partition, offset)
        if not messages:
            return []
        if any(map(_error, messages)):
            good, failed = [], {}
            for msg in messages:
                error = msg.error()
                if error is None:
                    good.append(msg)
                elif error.code() == KafkaError._AUTO_OFFSET_RESET:
                    failed[(cast(str, msg.topic()), cast(int, msg.partition()))] = msg.offset()
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka consume error: %s", error)
            if failed:
                self._out_of_range(failed)
            messages = good
        n = len(messages)
        return group_by_partition(
            cast(list[str], list(map(_topic, messages))),  # never None when error() is
            np.fromiter(map(_partition, messages), dtype=np.int64, count=n),
            list(map(_value, messages)),
            np.fromiter(map(_second, map(_timestamp, messages)), dtype=np.int64, count=n),
            np.fromiter(map(_offset, messages), dtype=np.int64, count=n),
            messages, _key)

    def _out_of_range(self, failed: Mapping[TopicPartition, int | None]) -> None:
        """Fetches at these offsets were out of range (librdkafka stopped the partitions'
        fetches): move each where :class:`OffsetReset` says, from its log's bounds now, in
        one assignment. (One at a time, the assignment that moved the first put the
        second back at its failed offset, whose fetch failed again: a second report of
        one failure, which the worker then applied twice; session 48.)"""
        moves: dict[TopicPartition, int] = {}
        resets: list[OffsetReset] = []
        for (topic, partition), at in failed.items():
            if at is None or at < 0:  # (librdkafka gives the offset that failed)
                at = self._consumer.position([CkTopicPartition(topic, partition)])[0].offset
            try:
                low, high = self._consumer.get_watermark_offsets(
                    CkTopicPartition(topic, partition), timeout=5.0, cached=False)
            except KafkaException as exc:
                log.warning("%s[%d]: offset %d is out of range and the broker did not say "
                            "where the log is (%s): fetching it again", topic, partition,
                            at, exc)
                moves[(topic, partition)] = at
                continue
            reset = OffsetReset(topic, partition, at, low, high)
            moves[(topic, partition)] = reset.to
            resets.append(reset)
        if self._assign_at(moves):
            self._resets.extend(resets)

    def _assign_at(self, moves: Mapping[TopicPartition, int]) -> bool:
        """Fetch stopped partitions from these offsets. seek() is refused there (an
        erroneous state) and the eager protocol allows no incremental assign: the whole
        assignment is made again, these partitions at their offsets, the others where
        they are. False: that failed (the consumer is in a rebalance, which assigns the
        partitions again from their checkpoints, or closing)."""
        try:
            assigned = self._consumer.position(self._consumer.assignment())
            for tp in assigned:
                key = (tp.topic, tp.partition)
                if key in moves:
                    tp.offset = moves[key]
                elif tp.offset < 0:  # nothing consumed since it was assigned or sought
                    start = self._asked.get(key)
                    tp.offset = OFFSET_BEGINNING if start is None else start
            self._consumer.assign(assigned)
        except KafkaException as exc:
            log.warning("%s: fetching from offsets %s failed (%s); their next assignment "
                        "starts them again", ", ".join(f"{t}[{p}]" for t, p in moves),
                        ", ".join(map(str, moves.values())), exc)
            return False
        self._asked.update(moves)
        return True

    def take_resets(self) -> list[OffsetReset]:
        resets, self._resets = self._resets, []
        return resets

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Synchronous in the poll loop; asynchronous inside a rebalance callback (no
        blocking call there; the result, advisory anyway, is served by a later consume)."""
        if not offsets:
            return
        parts = [CkTopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if self._in_callback:
            self._consumer.commit(offsets=parts, asynchronous=True)
        else:
            self._consumer.commit(offsets=parts, asynchronous=False)

    def seek(self, topic: str, partition: int, offset: int | None) -> None:
        if self._in_callback:
            # a fenced checkpoint inside a callback: seek (a blocking call) after it
            self._pending_seeks[(topic, partition)] = offset
            return
        try:
            self._consumer.seek(CkTopicPartition(topic, partition,
                                                 OFFSET_BEGINNING if offset is None else offset))
            self._asked[(topic, partition)] = offset
        except Exception:  # noqa: BLE001 - not assigned any more: the new owner resumes
            log.info("seek %s[%s] skipped: partition no longer assigned", topic, partition)

    def end_offsets(self, partitions: Sequence[TopicPartition], *,
                    fresh: bool = True) -> dict[TopicPartition, int]:
        result: dict[TopicPartition, int] = {}
        if fresh and self._in_callback:
            return result  # no broker round trip in a callback: idle ticks wait
        if fresh and partitions:
            # One ListOffsets request for all of them (timestamp -1: the end offset). On the
            # broker it queues behind this consumer's long-poll fetch (fetch.wait.max.ms,
            # 500 ms), so one watermark query per partition cost 0.5 s each: 10 s per
            # checkpoint for 20 idle partitions, most of a worker's stop time.
            answered = self._consumer.offsets_for_times(
                [CkTopicPartition(topic, partition, -1) for topic, partition in partitions],
                timeout=5.0)
            for tp in answered:
                if tp.error is None and tp.offset >= 0:
                    result[(tp.topic, tp.partition)] = tp.offset
            return result
        for topic, partition in partitions:
            _low, high = self._consumer.get_watermark_offsets(
                CkTopicPartition(topic, partition), timeout=5.0, cached=True)
            if high >= 0:  # cached: negative (OFFSET_INVALID) until a fetch reported it
                result[(topic, partition)] = high
        return result

    def partition_count(self, topic: str) -> int:
        """From the broker, except inside a rebalance callback: then the cached count
        (refreshed every ``PARTITION_COUNT_REFRESH_S`` by ``poll``)."""
        if not self._in_callback:
            self._fetch_partition_counts([topic], timeout_s=10.0)
        if topic not in self._partition_counts:
            # in a callback: the topic appeared after the last refresh and librdkafka saw
            # it first; guessing could finalize windows before all partitions passed them
            raise RuntimeError(f"partition count of {topic!r} not known; the worker "
                               "stops rather than guess (its restart reads it)")
        return self._partition_counts[topic]

    def _refresh_partition_counts(self, *, force: bool = False) -> bool:
        """Refresh the cached partition counts of the subscribed topics when due (outside
        callbacks; one metadata request every ``PARTITION_COUNT_REFRESH_S``, or every
        ``UNKNOWN_COUNT_RETRY_S`` while a topic has none). Whether the topics may be
        subscribed to: not while one lacks its count because the broker did not answer
        (a topic that does not exist yet gets no assignment, so it holds nothing up)."""
        missing = any(topic not in self._partition_counts for topic in self._topics)
        every = UNKNOWN_COUNT_RETRY_S if missing else PARTITION_COUNT_REFRESH_S
        if self._topics and (force or time.monotonic() - self._counted_at >= every):
            self._fetch_partition_counts(self._topics, timeout_s=METADATA_TIMEOUT_S)
        return not (self._unreachable and
                    any(topic not in self._partition_counts for topic in self._topics))

    def _fetch_partition_counts(self, topics: Sequence[str], *, timeout_s: float) -> None:
        """One metadata request: for the topic, or for all topics when several."""
        assert not self._in_callback, "no blocking metadata request in a rebalance callback"
        self._counted_at = time.monotonic()
        try:
            metadata = self._consumer.list_topics(topics[0] if len(topics) == 1 else None,
                                                  timeout=timeout_s)
        except KafkaException as exc:
            self._unreachable = True
            log.warning("partition counts of %s: %s", ", ".join(topics), exc)
            return
        self._unreachable = False
        for topic in topics:
            described = metadata.topics.get(topic)
            if described is None or described.error is not None or not described.partitions:
                log.warning("partition count of %s: %s", topic,
                            described.error if described is not None else "no such topic")
                continue
            count = len(described.partitions)
            previous = self._partition_counts.get(topic)
            if previous is not None and previous != count:
                log.warning("topic %s has %d partitions (was %d)", topic, count, previous)
            self._partition_counts[topic] = count

    def close(self) -> None:
        self._consumer.close()


class ConfluentDeadLetterSink:
    """Sends bad messages, unchanged, to a dead-letter topic with the reason in headers."""

    def __init__(self, settings: Settings, topic: str) -> None:
        config = client_config(settings)
        config.update({"enable.idempotence": True, "linger.ms": 20,
                       "message.max.bytes": 16_777_216})
        self._producer = Producer(config)
        self._topic = topic

    def send(self, message: RawMessage, reason: str, detail: str) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            *dead_letter_headers(message, reason, detail)]
        self._producer.produce(self._topic, value=message.value, key=message.key,
                               headers=headers)
        self._producer.poll(0)

    def flush(self) -> None:
        remaining = self._producer.flush(30.0)
        if remaining:
            raise RuntimeError(f"{remaining} dead-letter messages were not delivered")
