"""ConfluentSource makes no blocking consumer call inside a rebalance callback.

confluent-kafka aborts the process (``CallState_get: Assertion 'cs != NULL'``) when a
blocking call made inside a callback (``list_topics``) is followed by another callback of
the same ``consume()``: tests/chaos found it on broker bounces. A fake consumer runs the
callbacks from ``consume()`` and records any blocking call made while one runs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from dqpulse.config import Settings
from dqpulse.sources import kafka_confluent
from dqpulse.sources.kafka_confluent import ConfluentSource

BLOCKING = {"list_topics", "offsets_for_times", "commit_sync", "seek"}


def message(topic: str, partition: int, offset: int) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, value=b"{}",
                   timestamp=(1, 1_000))


class FakeConsumer:
    partitions = {"t": 4}  # topic -> partition count the "broker" answers
    away = False  # the broker does not answer metadata requests

    def __init__(self, config: dict[str, Any]) -> None:
        self.calls: list[tuple[str, bool]] = []  # (what, inside a callback)
        self.in_callback = False
        self.events: list[tuple[str, list[Any]]] = []  # callbacks the next consume() runs
        self.messages: list[Message] = []
        self.callbacks: dict[str, Any] = {}

    def _call(self, what: str) -> None:
        self.calls.append((what, self.in_callback))

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self._call("subscribe")
        self.subscribed = list(topics)
        self.callbacks = callbacks

    def list_topics(self, topic: str | None, timeout: float) -> Any:
        self._call("list_topics")
        if self.away:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        topics = {name: SimpleNamespace(error=None, partitions=dict.fromkeys(range(n)))
                  for name, n in self.partitions.items()}
        if topic is None:
            return SimpleNamespace(topics=topics)
        return SimpleNamespace(topics={topic: topics.get(topic, SimpleNamespace(
            error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), partitions={}))})

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        self._call("consume")
        for name, partitions in self.events:
            self.in_callback = True
            try:
                self.callbacks[name](self, partitions)
            finally:
                self.in_callback = False
        self.events = []
        messages, self.messages = self.messages, []
        return messages

    def assign(self, partitions: list[Any]) -> None:
        self._call("assign")

    def unassign(self) -> None:
        self._call("unassign")

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self._call("commit_async" if asynchronous else "commit_sync")

    def seek(self, tp: Any) -> None:
        self._call("seek")
        self.sought = (tp.topic, tp.partition, tp.offset)

    def offsets_for_times(self, partitions: list[Any], timeout: float) -> list[Any]:
        self._call("offsets_for_times")
        return []

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        self._call("watermarks_cached" if cached else "watermarks")
        return (0, 10)

    def close(self) -> None:
        pass


def blocking_in_callbacks(consumer: FakeConsumer) -> list[str]:
    return [what for what, inside in consumer.calls if inside and what in BLOCKING]


@pytest.fixture
def source(monkeypatch: pytest.MonkeyPatch) -> ConfluentSource:
    monkeypatch.setattr(kafka_confluent, "Consumer", FakeConsumer)
    monkeypatch.setattr(FakeConsumer, "partitions", {"t": 4})
    monkeypatch.setattr(FakeConsumer, "away", False)
    return ConfluentSource(Settings())


def _tp(topic: str, partition: int) -> Any:
    return kafka_confluent.CkTopicPartition(topic, partition)


def _worker_like(source: ConfluentSource, counts: dict[str, int]) -> dict[str, Any]:
    """Callbacks doing what the ingest worker does in them: partition counts on assign;
    the revoke checkpoint's end offsets, offset commit and, when fenced, a seek back."""
    def on_assign(partitions: Any) -> dict[Any, int | None]:
        counts.update({t: source.partition_count(t) for t, _ in partitions})
        return {tp: 7 for tp in partitions}

    def on_revoke(partitions: Any) -> None:
        source.end_offsets(list(partitions), fresh=True)
        source.end_offsets(list(partitions), fresh=False)
        source.commit(dict.fromkeys(partitions, 9))
        source.seek("t", 1, 5)

    return {"on_assign": on_assign, "on_revoke": on_revoke}


def test_no_blocking_consumer_call_inside_rebalance_callbacks(source: ConfluentSource) -> None:
    counts: dict[str, int] = {}
    source.subscribe(["t"], **_worker_like(source, counts))
    consumer = source._consumer
    consumer.events = [("on_revoke", [_tp("t", 0), _tp("t", 1)]),
                       ("on_assign", [_tp("t", 0), _tp("t", 2)])]
    source.poll(100, 0.1)
    assert counts == {"t": 4}  # from the cache filled at subscribe
    assert blocking_in_callbacks(consumer) == []
    inside = [what for what, inside in consumer.calls if inside]
    assert "commit_async" in inside and "watermarks_cached" in inside
    # outside the callbacks, the usual calls block as before
    source.commit({("t", 0): 3})
    assert consumer.calls[-1] == ("commit_sync", False)
    assert source.partition_count("t") == 4 and consumer.calls[-1] == ("list_topics", False)


def test_seek_asked_in_a_callback_is_made_after_consume_and_drops_stale_messages(
        source: ConfluentSource) -> None:
    source.subscribe(["t"], **_worker_like(source, {}))
    consumer = source._consumer
    consumer.events = [("on_revoke", [_tp("t", 1)])]
    consumer.messages = [message("t", 1, 20), message("t", 3, 4)]
    batches = source.poll(100, 0.1)
    assert [(b.partition, len(b)) for b in batches] == [(3, 1)]  # t[1]'s are from before
    assert ("seek", False) in consumer.calls and consumer.sought == ("t", 1, 5)
    assert blocking_in_callbacks(consumer) == []


def test_assignment_after_the_seek_request_wins(source: ConfluentSource) -> None:
    source.subscribe(["t"], **_worker_like(source, {}))
    consumer = source._consumer
    consumer.events = [("on_revoke", [_tp("t", 1)]), ("on_assign", [_tp("t", 1)])]
    consumer.messages = [message("t", 1, 7)]
    assert [len(b) for b in source.poll(100, 0.1)] == [1]
    assert "seek" not in [what for what, _ in consumer.calls]


def test_broker_away_at_start_subscribes_once_counts_are_known_serving_logs_meanwhile(
        source: ConfluentSource, monkeypatch: pytest.MonkeyPatch) -> None:
    """No assignment can come before the counts (no subscription yet), and consume() is
    called all along: it serves librdkafka's log lines, which otherwise pile up in memory
    for as long as the broker is away (measured ~15 KB/s before)."""
    monkeypatch.setattr(FakeConsumer, "away", True)
    monkeypatch.setattr(kafka_confluent, "UNKNOWN_COUNT_RETRY_S", 0.0)
    source.subscribe(["t"], **_worker_like(source, {}))
    consumer = source._consumer
    assert source.poll(100, 0.1) == [] and source.poll(100, 0.1) == []
    calls = [what for what, _ in consumer.calls]
    assert "subscribe" not in calls and calls.count("consume") == 2
    monkeypatch.setattr(FakeConsumer, "away", False)
    source.poll(100, 0.1)
    assert [what for what, _ in consumer.calls][-3:] == ["list_topics", "subscribe", "consume"]
    assert consumer.subscribed == ["t"]


def test_a_new_topic_uncounted_waits_while_the_counted_ones_go_on(
        source: ConfluentSource, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model reload adds a topic while the broker is away: the consumer keeps its
    subscription to the topics counted before (consuming them) until the new one's count
    is known, then subscribes to both."""
    monkeypatch.setattr(kafka_confluent, "UNKNOWN_COUNT_RETRY_S", 0.0)
    source.subscribe(["t"], **_worker_like(source, {}))
    consumer = source._consumer
    monkeypatch.setattr(FakeConsumer, "away", True)
    monkeypatch.setattr(FakeConsumer, "partitions", {"t": 4, "u": 2})
    source.subscribe(["t", "u"], **_worker_like(source, {}))
    consumer.messages = [message("t", 0, 1)]
    assert source.poll(100, 0.1)  # t's records
    assert consumer.subscribed == ["t"]
    monkeypatch.setattr(FakeConsumer, "away", False)
    source.poll(100, 0.1)
    assert consumer.subscribed == ["t", "u"]


def test_a_topic_that_does_not_exist_does_not_hold_the_others_up(
        source: ConfluentSource) -> None:
    source.subscribe(["t", "later"], **_worker_like(source, {}))
    source.poll(100, 0.1)
    assert "consume" in [what for what, _ in source._consumer.calls]


def test_a_partition_beyond_the_cached_count_stops_rather_than_guesses(
        source: ConfluentSource) -> None:
    source.subscribe(["t"], **_worker_like(source, {}))
    source._consumer.events = [("on_assign", [_tp("t", 5)])]
    with pytest.raises(RuntimeError, match="had 4 partitions"):
        source.poll(100, 0.1)


def test_both_clients_back_off_from_an_absent_broker_at_most_the_setting(monkeypatch):
    """kafka-python's own default is 30 s between reconnects: a bounced broker stalled its
    workers that long (tests/chaos). Both clients get ``kafka_reconnect_backoff_max_ms``."""
    seen: dict[str, Any] = {}

    class Capture(FakeConsumer):
        def __init__(self, config: dict[str, Any]) -> None:
            seen.update(config)
            super().__init__(config)

    monkeypatch.setattr(kafka_confluent, "Consumer", Capture)
    ConfluentSource(Settings(kafka_reconnect_backoff_max_ms=2_500))
    assert seen["reconnect.backoff.max.ms"] == 2_500
    assert Settings().kafka_reconnect_backoff_max_ms == 5_000

    from dqpulse.sources import kafka_python

    monkeypatch.setattr(kafka_python, "KafkaConsumer", lambda **config: seen.update(config))
    kafka_python.KafkaPythonSource(Settings(kafka_reconnect_backoff_max_ms=2_500))
    assert seen["reconnect_backoff_max_ms"] == 2_500


def test_partitions_out_of_range_in_one_batch_are_moved_in_one_assignment(
        source: ConfluentSource) -> None:
    """Two partitions of a topic moved to a shorter log fail in one consume(). Moved one
    at a time, the assignment that moved partition 1 put partition 0 back at its failed
    offset (its position), whose fetch failed again: librdkafka reported offset 95 out of
    range twice for it, and the worker applied the second after counting records of the
    new log, counting them twice (tests/integration/test_topic_change.py, session 48)."""
    consumer = source._consumer
    assigned: list[list[tuple[str, int, int]]] = []

    def failed(partition: int, offset: int) -> Message:
        return Message(topic="t", partition=partition, offset=offset,
                       error=KafkaError(KafkaError._AUTO_OFFSET_RESET))

    consumer.messages = [failed(1, 95), failed(0, 95)]
    consumer.assignment = lambda: [_tp("t", 0), _tp("t", 1), _tp("t", 2)]
    consumer.position = lambda tps: [kafka_confluent.CkTopicPartition(
        tp.topic, tp.partition, {0: 95, 1: 95, 2: 40}[tp.partition]) for tp in tps]
    consumer.assign = lambda tps: assigned.append(
        sorted((tp.topic, tp.partition, tp.offset) for tp in tps))
    source.subscribe(["t"], on_assign=lambda parts: {}, on_revoke=lambda parts: None)
    assert source.poll(100, 0.01) == []
    # one assignment: both failed partitions at their log's start (0-9), the third where
    # it was
    assert assigned == [[("t", 0, 0), ("t", 1, 0), ("t", 2, 40)]]
    resets = source.take_resets()
    assert sorted((r.partition, r.at, r.reason, r.to) for r in resets) == [
        (0, 95, "log_shorter", 0), (1, 95, "log_shorter", 0)]
