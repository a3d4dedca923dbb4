"""Move a partition's checkpoint past records its worker cannot get past:
``dqpulse partitions skip``.

A record that kills the ingest worker while it is read (a crash in native code: no Python
error, so the window-update net cannot set it aside and dead-letter it) is read again
after every restart, because the worker resumes from its checkpoint: a crash loop. The
crashing thread's Python stack is in the log (``Fatal Python error``, then the stack:
:func:`dqpulse.logs.configure_logging`), and the checkpoint's offset says where the
partition stands. Kafka's own offset tools do not move it: the position is the
checkpoint's ``next_offset`` in the database, not the consumer group's committed offset.

:func:`skip_records` sends each record from the checkpoint's offset through the given one
to the dead-letter topic, unchanged, with ``dqpulse.reason`` ``skipped`` (so none is lost
without a trace; ``drop`` skips that), then moves the checkpoint past them in one
compare-and-set of its version. A worker that owns the partition is fenced by that
version: its next checkpoint fails, it reloads the checkpoint and reads on after the
skipped records, as after any fencing; a worker that restarts reads on from there. The
records are counted by no window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine

from dqpulse.config import Settings
from dqpulse.errors import ConflictError, NotFoundError, ValidationError
from dqpulse.records import RawMessage
from dqpulse.spec import DatasetSpec
from dqpulse.store import checkpoints

#: the reason header of a skipped record on the dead-letter topic
SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Skipped:
    """What :func:`skip_records` did."""

    dataset: str
    partition: int
    #: the checkpoint's offset before, and the last offset skipped
    first: int
    last: int
    #: records sent to the dead-letter topic (offsets a compacted topic no longer holds
    #: are not there to send)
    dead_lettered: int
    #: the checkpoint's version after the move
    version: int


def skip_records(engine: Engine, settings: Settings, dataset: DatasetSpec, partition: int,
                 through: int, *, drop: bool = False, max_records: int = 1000,
                 read_timeout_s: float = 30.0) -> Skipped:
    """Dead-letter the records of ``dataset``'s ``partition`` from its checkpoint's offset
    through ``through``, then move the checkpoint past them (see the module's doc)."""
    with engine.connect() as conn:
        found = checkpoints.get(conn, dataset=dataset.name, partition=partition)
    if found is None:
        raise NotFoundError(f"{dataset.name}[{partition}] has no checkpoint: no worker has "
                            "read that partition yet, so there is nothing to skip")
    first = found.next_offset
    if through < first:
        raise ConflictError(f"{dataset.name}[{partition}]'s checkpoint is at offset {first}, "
                            f"past {through} already: nothing to skip")
    count = through - first + 1
    if count > max_records:
        raise ValidationError(f"skipping offsets {first}..{through} of {dataset.name}"
                              f"[{partition}] is {count:,} records, more than --max "
                              f"{max_records:,}: raise --max if that is what you mean")
    sent = 0
    if not drop:
        if not settings.dead_letter_topic:
            raise ValidationError("DQPULSE_DEAD_LETTER_TOPIC is not set: the skipped records "
                                  "would be lost without a trace; set it, or pass --drop")
        messages = _read(settings, dataset.topic, partition, first, through, read_timeout_s)
        sent = _dead_letter(settings, messages, f"skipped by an operator (dqpulse partitions "
                                                f"skip) from {dataset.name}'s checkpoint "
                                                f"version {found.version}")
    with engine.begin() as conn:
        version = checkpoints.move_offset(conn, dataset=dataset.name, partition=partition,
                                          loaded_version=found.version,
                                          next_offset=through + 1)
    if version is None:
        raise ConflictError(
            f"{dataset.name}[{partition}] was checkpointed while its records were read (its "
            "worker is running, so it is past them or reading them): nothing was moved; "
            + ("" if drop else f"the {sent} records already sent to the dead-letter topic "
               "will be there twice if you run it again; ") + "check the offset and retry")
    return Skipped(dataset.name, partition, first, through, sent, version)


def _read(settings: Settings, topic: str, partition: int, first: int, last: int,
          timeout_s: float) -> list[RawMessage]:
    """The records of ``topic``'s ``partition`` at offsets ``first``..``last`` (those the
    topic still holds), read without a consumer group's commit."""
    from confluent_kafka import OFFSET_END, Consumer, KafkaError, TopicPartition

    from dqpulse.sources.kafka_confluent import client_config

    config = client_config(settings)
    config.update({"group.id": f"dqpulse-skip-{topic}-{partition}",
                   "enable.auto.commit": False, "auto.offset.reset": "earliest",
                   "enable.partition.eof": True})
    consumer = Consumer(config)
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                   timeout=timeout_s)
        if high <= first or high == OFFSET_END:
            raise ConflictError(f"{topic}[{partition}] ends at offset {high}: no record at "
                                f"{first} to skip")
        consumer.assign([TopicPartition(topic, partition, max(first, low))])
        end = min(last, high - 1)
        out: list[RawMessage] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    break
                raise ConflictError(f"reading {topic}[{partition}]: {error.str()}")
            offset = message.offset()
            if offset is None:
                continue
            if offset > last:
                break
            _, timestamp = message.timestamp()
            out.append(RawMessage(topic, partition, offset, timestamp, message.value(),
                                  message.key()))
            if offset >= end:
                break
        else:
            raise ConflictError(f"reading {topic}[{partition}] {first}..{last} took more "
                                f"than {timeout_s:g}s: nothing was skipped")
        return out
    finally:
        consumer.close()


def _dead_letter(settings: Settings, messages: list[RawMessage], detail: str) -> int:
    from dqpulse.sources.kafka_confluent import ConfluentDeadLetterSink

    assert settings.dead_letter_topic is not None
    sink = ConfluentDeadLetterSink(settings, settings.dead_letter_topic)
    for message in messages:
        sink.send(message, SKIPPED, detail)
    sink.flush()  # raises when any is not delivered: then nothing is moved
    return len(messages)
