"""The database goes away mid-stream: the worker keeps running and loses nothing."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from dqpulse.config import Settings
from dqpulse.finalize import finalize_ready
from dqpulse.ingest import IngestWorker
from dqpulse.spec import parse_spec
from dqpulse.store import metrics as metric_store
from dqpulse.store.db import make_engine
from dqpulse.telemetry import Telemetry
from tests.integration.helpers import (
    WorkerThread,
    json_bytes,
    produce,
    set_connections,
    wait_until,
)
from workers.ingest import make_source

pytestmark = pytest.mark.integration


def _outage_worker(url: str, kafka_bootstrap: str, topic: str, name: str
                   ) -> tuple[IngestWorker, object, Telemetry, object]:
    """A worker on ``topic`` with short idle/checkpoint intervals: (worker, engine,
    telemetry, dataset spec)."""
    settings = Settings(database_url=url, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.3)
    spec = parse_spec(f"""
datasets:
  - {{name: {name}, topic: {topic}, event_time: ts, window: 10s, lateness: 5s}}
""")
    engine = make_engine(url)
    source, _ = make_source(settings)
    telemetry = Telemetry(CollectorRegistry())
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, telemetry=telemetry)
    return worker, engine, telemetry, spec.datasets[0]


def test_worker_survives_a_database_outage_without_losing_records(
        fresh_db, pg_admin_url, make_topic, kafka_bootstrap):
    topic = make_topic("outage", partitions=2)
    database = fresh_db.rsplit("/", 1)[1]


    def live(count: int):
        # event time = produce time: records are never late, however long the outage lasts
        # and however far idle partitions have advanced their watermark meanwhile
        return ((i % 2, json_bytes({"ts": time.time(), "i": i})) for i in range(count))

    produce(kafka_bootstrap, topic, live(20_000))
    worker, engine, telemetry, dataset = _outage_worker(fresh_db, kafka_bootstrap, topic,
                                                        "outage")

    def total() -> int:
        with engine.connect() as conn:
            points = metric_store.get_points(conn, dataset="outage", metric="volume.records")
        return int(sum(p["value"] or 0 for p in points))

    with WorkerThread(worker) as running:
        wait_until(lambda: worker.stats.checkpoints >= 2, 30, message="first checkpoints")
        set_connections(pg_admin_url, database, allowed=False)
        try:
            time.sleep(2.0)  # longer than the idle timeout: idle ticks run during the outage
            producer = threading.Thread(target=produce,
                                        args=(kafka_bootstrap, topic, live(20_000)))
            producer.start()
            producer.join(60)
            wait_until(lambda: telemetry.checkpoint_failures._value.get() >= 1, 30,
                       message="a failed checkpoint")
            time.sleep(3)
            assert running.thread.is_alive()
        finally:
            set_connections(pg_admin_url, database, allowed=True)
        counted: list[int] = []

        def all_counted() -> bool:
            finalize_ready(engine, dataset)
            counted.append(total())
            return counted[-1] == 40_000

        try:
            wait_until(all_counted, 150, interval_s=0.5, message="every record counted")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last totals {counted[-3:]}, {worker.stats}") from None
    assert total() == 40_000
    assert worker.stats.late == 0
    engine.dispose()


def test_partition_assignment_waits_out_a_short_database_outage(
        fresh_db, pg_admin_url, make_topic, kafka_bootstrap):
    topic = make_topic("outage_assign", partitions=2)
    database = fresh_db.rsplit("/", 1)[1]
    produce(kafka_bootstrap, topic,
            ((i % 2, json_bytes({"ts": time.time(), "i": i})) for i in range(5_000)))
    worker, engine, _, _ = _outage_worker(fresh_db, kafka_bootstrap, topic, "outage_assign")
    set_connections(pg_admin_url, database, allowed=False)
    try:
        with WorkerThread(worker) as running:
            time.sleep(4.0)  # the assignment arrives and its restore fails meanwhile
            assert running.thread.is_alive()
            assert worker.stats.polled == 0  # nothing consumed before the restore
            set_connections(pg_admin_url, database, allowed=True)
            wait_until(lambda: worker.stats.accepted == 5_000 and worker.stats.checkpoints > 0,
                       60, message="every record consumed once the database is back")
            assert running.thread.is_alive()
    finally:
        set_connections(pg_admin_url, database, allowed=True)
    assert worker.stats.accepted == 5_000
    engine.dispose()
