"""Silent topics and bad input on the real local Kafka and Postgres."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from dqpulse.config import Settings
from dqpulse.ingest import IngestWorker
from dqpulse.spec import parse_spec
from dqpulse.store import metrics as metric_store
from dqpulse.store.db import make_engine
from dqpulse.store.tables import metric_points
from dqpulse.telemetry import Telemetry
from tests.integration.helpers import WorkerThread, json_bytes, produce, wait_until
from workers.ingest import make_source

pytestmark = pytest.mark.integration


CLIENTS = ["confluent", "kafka-python"]


def _worker(settings, spec_text, telemetry=None):
    spec = parse_spec(spec_text)
    engine = make_engine(settings.database_url)
    source, dead_letter = make_source(settings)
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, dead_letter=dead_letter,
                          telemetry=telemetry or Telemetry(CollectorRegistry()))
    return worker, engine, spec


@pytest.mark.parametrize("client", CLIENTS)
def test_silent_topic_yields_zero_volume_windows_and_growing_staleness(
        client, fresh_db, make_topic, kafka_bootstrap):
    topic = make_topic("silent", partitions=2)
    window = 3.0
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.25, poll_timeout_s=0.1, kafka_client=client)
    worker, engine, _spec = _worker(settings, f"""
datasets:
  - {{name: pulse, topic: {topic}, event_time: ts, window: 3s, lateness: 0s}}
""")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    with WorkerThread(worker):
        end = time.time() + 4.0
        i = 0
        while time.time() < end:
            producer.produce(topic, json_bytes({"ts": time.time(), "i": i}), partition=i % 2)
            producer.poll(0)
            i += 1
            time.sleep(0.01)
        assert producer.flush(10) == 0
        stopped_at = time.time()

        def zero_windows(n: int):
            with engine.connect() as conn:
                points = metric_store.get_points(conn, dataset="pulse", metric="volume.records")
            return [p for p in points if p["value"] == 0 and p["window_start"] >= stopped_at - 0.01]

        wait_until(lambda: len(zero_windows(1)) >= 1, 2 * window + 2.0,
                   message="a zero-volume window within two window lengths of the silence")
        first_zero_after = time.time() - stopped_at
        wait_until(lambda: len(zero_windows(3)) >= 3, 6 * window, message="three zero windows")
    assert first_zero_after <= 2 * window + 2.0
    with engine.connect() as conn:
        staleness = metric_store.get_points(conn, dataset="pulse",
                                            metric="freshness.seconds_since_last_record")
        volume = metric_store.get_points(conn, dataset="pulse", metric="volume.records")
    assert sum(p["value"] for p in volume) == i  # every record produced before the silence
    silent = [p["value"] for p in staleness if p["window_start"] >= stopped_at - 0.01]
    assert len(silent) >= 3
    assert all(b > a for a, b in zip(silent, silent[1:], strict=False)), silent
    assert silent[-1] >= 2 * window
    engine.dispose()


@pytest.mark.parametrize("client", CLIENTS)
def test_bad_messages_are_counted_by_reason_dead_lettered_and_valid_ones_all_count(
        client, fresh_db, make_topic, kafka_bootstrap):
    topic = make_topic("mixed", partitions=3)
    dlq = make_topic("mixed-dlq", partitions=1)
    base = time.time() - 600
    valid, bad = [], []
    expected_reasons: Counter[str] = Counter()
    for i in range(30_000):
        valid.append(json_bytes({"ts": base + i * 0.01, "amount": float(i), "id": i}))
    for i in range(10_000):
        kind = i % 5
        if kind == 0:
            bad.append(b"{not json at all")
            expected_reasons["invalid_json"] += 1
        elif kind == 1:
            full = json_bytes({"ts": base + 1, "amount": 1.0, "id": -i})
            bad.append(full[: len(full) // 2])
            expected_reasons["truncated"] += 1
        elif kind == 2:
            bad.append(b"[1, 2, 3]")
            expected_reasons["not_an_object"] += 1
        elif kind == 3:
            bad.append(json_bytes({"ts": base + 2, "pad": "x" * 20_000}))
            expected_reasons["oversized"] += 1
        else:
            bad.append(b"\"just a string\"")
            expected_reasons["not_an_object"] += 1
    messages, vi, bi = [], 0, 0  # interleave: every 4th message is bad
    for i in range(40_000):
        if i % 4 == 3 and bi < len(bad):
            messages.append(bad[bi])
            bi += 1
        else:
            messages.append(valid[vi])
            vi += 1
    assert vi == 30_000 and bi == 10_000
    produce(kafka_bootstrap, topic, [(i % 3, m) for i, m in enumerate(messages)])

    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.5, dead_letter_topic=dlq,
                        max_message_bytes=10_000, kafka_client=client)
    telemetry = Telemetry(CollectorRegistry())
    worker, engine, _spec = _worker(settings, f"""
datasets:
  - {{name: mixed, topic: {topic}, event_time: ts, window: 1m, lateness: 0s}}
""", telemetry)
    with WorkerThread(worker):
        wait_until(lambda: worker.stats.polled >= 40_000, 90, message="all messages polled")
        wait_until(lambda: worker.finalize_ready() >= 0 and _volume(engine) == 30_000, 60,
                   message="all valid records counted")
    assert dict(worker.stats.by_reason) == dict(expected_reasons)
    assert worker.stats.bad == 10_000
    counted = {
        s.labels["reason"]: s.value
        for metric in telemetry.registry.collect() if metric.name == "dqpulse_decode_errors"
        for s in metric.samples if s.name.endswith("_total")}
    assert counted == {k: float(v) for k, v in expected_reasons.items()}

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"check-{dlq}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([dlq])
    dead: Counter[str] = Counter()
    deadline = time.time() + 60
    while sum(dead.values()) < 10_000 and time.time() < deadline:
        for msg in consumer.consume(1000, 1.0):
            if msg.error() is None:
                dead[dict(msg.headers())["dqpulse.reason"].decode()] += 1
    consumer.close()
    assert dead == expected_reasons
    engine.dispose()


def test_nul_characters_overflowing_numbers_and_absurd_event_times_finalize_every_window(
        fresh_db, make_topic, kafka_bootstrap):
    """Each of these once stopped a data set for good, its windows retried for ever: a
    NUL in a key (PostgreSQL text cannot hold it), a number whose square overflows (its
    window's partials could not be merged) and an event time of -1e300 (a window of the
    year -3e283). Now every record counts and every window is written."""
    topic = make_topic("odd", partitions=2)
    base = time.time() - 600
    messages = []
    for i in range(2_000):
        record = {"ts": base + i * 0.1, "amount": float(i)}
        if i % 100 == 7:
            messages.append(json_bytes(record)[:-1] + b', "a\\u0000b": "x\\u0000y"}')
            continue
        if i % 100 == 17:
            record["amount"] = 1e160
        if i % 100 == 27:
            record["ts"] = -1e300
        messages.append(json_bytes(record))
    produce(kafka_bootstrap, topic, [(i % 2, m) for i, m in enumerate(messages)])
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.5)
    worker, engine, _spec = _worker(settings, f"""
datasets:
  - {{name: odd, topic: {topic}, event_time: ts, window: 1m, lateness: 0s}}
""")
    with WorkerThread(worker):
        wait_until(lambda: worker.stats.polled >= 2_000, 90, message="all messages polled")
        wait_until(lambda: worker.finalize_ready() >= 0 and _volume(engine, "odd") == 2_000,
                   60, message="every record counted in a written window")
    assert worker.stats.bad == 0
    with engine.connect() as conn:
        fields = set(conn.execute(select(metric_points.c.field).where(
            metric_points.c.dataset == "odd").distinct()).scalars())
        starts = {p["window_start"] for p in metric_store.get_points(
            conn, dataset="odd", metric="volume.records", limit=10_000)}
    assert "a\ufffdb" in fields
    assert min(starts) >= base - 120  # the -1e300 event times counted at their Kafka time
    engine.dispose()


def _volume(engine, dataset: str = "mixed") -> int:
    with engine.connect() as conn:
        points = metric_store.get_points(conn, dataset=dataset, metric="volume.records")
    return int(sum(p["value"] or 0 for p in points))
