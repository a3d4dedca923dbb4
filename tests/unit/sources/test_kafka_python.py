"""KafkaPythonSource survives a broker that is away when it subscribes (a worker started,
or its model reloaded, while the broker restarts): it consumes nothing and tries again
from poll(). tests/chaos found the worker ending with an uncaught KafkaConnectionError
there. A fake consumer stands in for the broker's answers (pure logic)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from dqpulse.config import Settings
from dqpulse.sources import kafka_python
from dqpulse.sources.base import SourceStopped
from dqpulse.sources.kafka_python import KafkaPythonDeadLetterSink, KafkaPythonSource


class FakeConsumer:
    away = True

    def __init__(self, **config: Any) -> None:
        self.subscribed: list[str] | None = None
        self.polls = 0

    def partitions_for_topic(self, topic: str) -> set[int]:
        if FakeConsumer.away:
            raise KafkaConnectionError("111 ECONNREFUSED")
        return {0, 1, 2}

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.subscribed = topics

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        self.polls += 1
        return {}


def test_a_broker_away_at_subscribe_is_retried_from_poll(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(kafka_python, "KafkaConsumer", FakeConsumer)
    monkeypatch.setattr(FakeConsumer, "away", True)
    monkeypatch.setattr(KafkaPythonSource, "SUBSCRIBE_RETRY_S", 0.0)
    source = KafkaPythonSource(Settings())
    consumer = source._consumer
    source.subscribe(["orders"], on_assign=lambda parts: {}, on_revoke=lambda parts: None)
    assert consumer.subscribed is None  # no crash, and no subscription without the counts
    assert source.poll(100, 0.01) == [] and consumer.polls == 0  # consumes nothing
    FakeConsumer.away = False
    assert source.poll(100, 0.01) == []
    assert consumer.subscribed == ["orders"] and consumer.polls == 1
    assert source.partition_count("orders") == 3


# ---- no broker at all when the worker starts --------------------------------------------
# kafka-python's constructors contact a broker (to learn its API versions) and raise
# KafkaTimeoutError when none answers; a worker started before its broker used to exit
# there. Port 1 on loopback refuses every connection: a broker that is down.

def _io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kafka-io")]


def test_without_a_stop_event_the_first_failure_is_raised(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(kafka_python, "ONE_TRY_TIMEOUT_MS", 200)
    before = len(_io_threads())
    with pytest.raises(KafkaTimeoutError):
        KafkaPythonSource(Settings(kafka_bootstrap="127.0.0.1:1"))
    assert len(_io_threads()) == before  # the failed try's network thread was closed


def test_a_worker_waits_for_its_broker_until_stopped(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture):
    monkeypatch.setattr(kafka_python, "BOOTSTRAP_TIMEOUT_MS", 200)
    monkeypatch.setattr(kafka_python, "BOOTSTRAP_RETRY_S", 0.05)
    before = len(_io_threads())
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="dqpulse.sources.kafka_python"), \
            pytest.raises(SourceStopped, match="127.0.0.1:1"):
        KafkaPythonDeadLetterSink(Settings(kafka_bootstrap="127.0.0.1:1"), "dlq", stop=stop)
    assert time.monotonic() - started >= 1.4  # it kept trying until told to stop
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("dqpulse")]
    assert warnings and "no broker of 127.0.0.1:1 answered the dead-letter producer" \
        in warnings[0], warnings
    assert len(warnings) < 5  # the first try is logged, then every 10th
    assert len(_io_threads()) == before


def test_a_broker_that_answers_on_a_later_try_is_used(monkeypatch: pytest.MonkeyPatch):
    tries: list[dict[str, Any]] = []

    class LateConsumer(FakeConsumer):
        def __init__(self, **config: Any) -> None:
            tries.append(config)
            if len(tries) < 3:
                config["kafka_client"](bootstrap_servers=["127.0.0.1:1"])  # a real client
                raise KafkaTimeoutError("Unable to bootstrap")
            super().__init__(**config)

    monkeypatch.setattr(kafka_python, "KafkaConsumer", LateConsumer)
    monkeypatch.setattr(kafka_python, "BOOTSTRAP_RETRY_S", 0.0)
    before = len(_io_threads())
    source = KafkaPythonSource(Settings(kafka_group="g"), stop=threading.Event())
    assert isinstance(source._consumer, LateConsumer) and len(tries) == 3
    assert all(t["group_id"] == "g" and t["bootstrap_timeout_ms"] == 10_000 for t in tries)
    assert len(_io_threads()) == before  # the two failed tries' clients were closed


def test_a_partition_without_a_position_is_read_from_its_start(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture):
    """auto_offset_reset="none": a partition kafka-python holds no position for (the
    listener seeks every assigned one, so a defensive path) raises from poll(); the source
    seeks it to its log's start and the worker skips what its checkpoint counted."""
    from kafka import TopicPartition as KpTopicPartition
    from kafka.errors import NoOffsetForPartitionError

    sought: list[Any] = []

    class NoPosition(FakeConsumer):
        def poll(self, timeout_ms: int, max_records: int) -> dict:
            self.polls += 1
            if self.polls == 1:
                raise NoOffsetForPartitionError({KpTopicPartition("orders", 2)})
            return {}

        def seek_to_beginning(self, *parts: Any) -> None:
            sought.extend(parts)

    monkeypatch.setattr(kafka_python, "KafkaConsumer", NoPosition)
    monkeypatch.setattr(FakeConsumer, "away", False)
    source = KafkaPythonSource(Settings())
    source.subscribe(["orders"], on_assign=lambda parts: {}, on_revoke=lambda parts: None)
    with caplog.at_level(logging.WARNING, logger="dqpulse.sources.kafka_python"):
        assert source.poll(100, 0.01) == []
    assert sought == [KpTopicPartition("orders", 2)]
    assert any("have no position" in r.getMessage() for r in caplog.records)
    assert source.poll(100, 0.01) == [] and source._consumer.polls == 2  # reads on
    assert source.take_resets() == []  # not a reset: nothing was counted or lost


def test_a_log_that_diverges_from_what_was_read_is_read_again_from_its_start(monkeypatch):
    """kafka-python 3 validates positions against the leader's epochs (KIP-320) and
    raises LogTruncationError from poll() when the log diverges from the records read (a
    recreated topic; an unclean election). Uncaught, it ended the worker (session 49, a
    recreated topic under load). The source reads the partition again from its log's
    start and reports it as replaced, so the worker counts the new log from there."""
    from kafka import TopicPartition as KpTopicPartition
    from kafka.errors import LogTruncationError
    from kafka.structs import OffsetAndMetadata

    sought: list[Any] = []
    orders0, orders1 = KpTopicPartition("orders", 0), KpTopicPartition("orders", 1)

    class Diverged(FakeConsumer):
        def poll(self, timeout_ms: int, max_records: int) -> dict:
            self.polls += 1
            if self.polls == 1:
                raise LogTruncationError({orders0: OffsetAndMetadata(0, "", 0),
                                          orders1: None})
            return {}

        def beginning_offsets(self, parts: list[Any]) -> dict:
            return dict.fromkeys(parts, 0)

        def end_offsets(self, parts: list[Any]) -> dict:
            return dict.fromkeys(parts, 150)

        def seek(self, tp: Any, offset: int) -> None:
            sought.append((tp, offset))

    monkeypatch.setattr(kafka_python, "KafkaConsumer", Diverged)
    monkeypatch.setattr(FakeConsumer, "away", False)
    source = KafkaPythonSource(Settings())
    source.subscribe(["orders"], on_assign=lambda parts: {}, on_revoke=lambda parts: None)
    assert source.poll(100, 0.01) == []
    assert sought == [(orders0, 0), (orders1, 0)]
    resets = source.take_resets()
    assert [(r.topic, r.partition, r.reason, r.to) for r in resets] == [
        ("orders", 0, "replaced", 0), ("orders", 1, "replaced", 0)]
    assert source.poll(100, 0.01) == [] and source.take_resets() == []  # reads on
