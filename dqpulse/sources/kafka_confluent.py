"""Kafka source on confluent-kafka (librdkafka): the default, measured faster."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any, cast

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer
from confluent_kafka import TopicPartition as CkTopicPartition

from dqpulse.config import Settings
from dqpulse.records import PartitionBatch, RawMessage, group_by_partition
from dqpulse.sources.base import AssignCallback, RevokeCallback, TopicPartition
from dqpulse.sources.kafka_common import LIBRDKAFKA_NAMES, connection_config, dead_letter_headers

log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("dqpulse.sources.librdkafka")

# Unbound methods of the C message type: ``map`` over them builds each column without a
# Python-level call per message.
_value, _topic, _partition = Message.value, Message.topic, Message.partition
_offset, _timestamp, _error, _key = Message.offset, Message.timestamp, Message.error, Message.key
_second = itemgetter(1)


def client_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings shared by consumer and producer, SASL/SSL passed through;
    librdkafka's own log lines go through Python logging (a JSON log stays JSON)."""
    config = connection_config(settings, LIBRDKAFKA_NAMES)
    config["logger"] = _librdkafka_log
    return config


class ConfluentSource:
    def __init__(self, settings: Settings, *, group_id: str | None = None,
                 client_id: str = "dqpulse-ingest") -> None:
        config = client_config(settings)
        config.update({
            "group.id": group_id or settings.kafka_group,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "heartbeat.interval.ms": 1_000,
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

    def subscribe(self, topics: Sequence[str], *, on_assign: AssignCallback,
                  on_revoke: RevokeCallback) -> None:
        self._on_assign, self._on_revoke = on_assign, on_revoke

        def assign(consumer: Consumer, partitions: list[CkTopicPartition]) -> None:
            assert self._on_assign is not None
            starts = self._on_assign([(p.topic, p.partition) for p in partitions])
            for p in partitions:
                start = starts.get((p.topic, p.partition))
                p.offset = OFFSET_BEGINNING if start is None else start
            consumer.assign(partitions)

        def revoke(consumer: Consumer, partitions: list[CkTopicPartition]) -> None:
            assert self._on_revoke is not None
            self._on_revoke([(p.topic, p.partition) for p in partitions])
            consumer.unassign()

        def lost(consumer: Consumer, partitions: list[CkTopicPartition]) -> None:
            # Lost (not revoked): another member may own them already; the checkpoint's
            # compare-and-set fences any write we would still make, so we only drop state.
            assert self._on_revoke is not None
            self._on_revoke([(p.topic, p.partition) for p in partitions])
            consumer.unassign()

        self._consumer.subscribe(list(topics), on_assign=assign, on_revoke=revoke,
                                 on_lost=lost)

    def poll(self, max_records: int, timeout_s: float) -> list[PartitionBatch]:
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        if not messages:
            return []
        if any(map(_error, messages)):
            good = []
            for msg in messages:
                error = msg.error()
                if error is None:
                    good.append(msg)
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka consume error: %s", error)
            messages = good
        n = len(messages)
        return group_by_partition(
            cast(list[str], list(map(_topic, messages))),  # never None when error() is
            np.fromiter(map(_partition, messages), dtype=np.int64, count=n),
            list(map(_value, messages)),
            np.fromiter(map(_second, map(_timestamp, messages)), dtype=np.int64, count=n),
            np.fromiter(map(_offset, messages), dtype=np.int64, count=n),
            messages, _key)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if offsets:
            self._consumer.commit(offsets=[CkTopicPartition(t, p, o)
                                           for (t, p), o in offsets.items()],
                                  asynchronous=False)

    def seek(self, topic: str, partition: int, offset: int | None) -> None:
        try:
            self._consumer.seek(CkTopicPartition(topic, partition,
                                                 OFFSET_BEGINNING if offset is None else offset))
        except Exception:  # noqa: BLE001 - not assigned any more: the new owner resumes
            log.info("seek %s[%s] skipped: partition no longer assigned", topic, partition)

    def end_offsets(self, partitions: Sequence[TopicPartition], *,
                    fresh: bool = True) -> dict[TopicPartition, int]:
        result: dict[TopicPartition, int] = {}
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
        metadata = self._consumer.list_topics(topic, timeout=10.0)
        return len(metadata.topics[topic].partitions)

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
