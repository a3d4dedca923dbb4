"""KafkaPythonSource survives a broker that is away when it subscribes (a worker started,
or its model reloaded, while the broker restarts): it consumes nothing and tries again
from poll(). tests/chaos found the worker ending with an uncaught KafkaConnectionError
there. A fake consumer stands in for the broker's answers (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaConnectionError

from dqpulse.config import Settings
from dqpulse.sources import kafka_python
from dqpulse.sources.kafka_python import KafkaPythonSource


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
