"""A real Prometheus (deploy/local) scrapes a real API and ingest worker process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import pytest

from tests.integration.helpers import json_bytes, produce, stop_processes, wait_until

pytestmark = pytest.mark.integration

API_PORT, WORKER_PORT = 8000, 9108  # the targets in deploy/prometheus/prometheus.yml


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _query(prometheus: str, expr: str) -> list[dict]:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
    return body["data"]["result"]


def test_prometheus_scrapes_api_and_worker_metrics(stack_env, fresh_db, make_topic,
                                                    kafka_bootstrap, tmp_path):
    if not (_port_free(API_PORT) and _port_free(WORKER_PORT)):
        pytest.skip("ports 8000/9108 are taken by another process")
    prometheus = stack_env.get("DQPULSE_PROMETHEUS_URL", "http://127.0.0.1:19090")
    topic = make_topic("scrape", partitions=1)
    dataset = f"scrape_{topic.split('-')[-1]}"
    config = tmp_path / "dqpulse.yaml"
    config.write_text(f"datasets:\n  - {{name: {dataset}, topic: {topic}, window: 5s}}\n")
    env = dict(os.environ, DQPULSE_DATABASE_URL=fresh_db, DQPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
               DQPULSE_KAFKA_GROUP=f"g-{topic}",
               DQPULSE_WORKER_METRICS_PORT=str(WORKER_PORT), DQPULSE_API_PORT=str(API_PORT),
               DQPULSE_LOG_LEVEL="WARNING")
    produce(kafka_bootstrap, topic, [(0, json_bytes({"i": i})) for i in range(500)])
    subprocess.run([sys.executable, "-m", "workers.cli", "apply", "-f", str(config)],
                   env=env, check=True, capture_output=True, timeout=120)
    processes = [
        subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "ingest"], env=env),
        subprocess.Popen([sys.executable, "-m", "workers.cli", "api"], env=env),
    ]
    try:
        wait_until(lambda: not _port_free(API_PORT) and not _port_free(WORKER_PORT), 30,
                   message="api and worker listening")
        httpx.get(f"http://127.0.0.1:{API_PORT}/api/v1/datasets", timeout=5)

        def scraped() -> bool:
            # the API's request counter is asked for too: a scrape of the API that came
            # before the request above would satisfy `up` without it (a race under load)
            records = _query(prometheus,
                             f'dqpulse_ingest_records_total{{dataset="{dataset}"}}')
            requests = _query(prometheus,
                              'dqpulse_http_requests_total{route="/api/v1/datasets"}')
            return (bool(records) and float(records[0]["value"][1]) == 500
                    and bool(requests) and float(requests[0]["value"][1]) >= 1)

        wait_until(scraped, 40, interval_s=1.0, message="Prometheus to scrape both processes")
        assert _query(prometheus, 'up{job="dqpulse-api"} == 1')
    finally:
        stop_processes(processes)


# advisory locks held by other sessions of this test's database only (the server is shared)
_OUR_ADVISORY_LOCKS = """
    SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid()
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def test_one_replica_exports_the_dataset_series_and_another_takes_over(fresh_db):
    """Two API replicas on one database: only the holder of the exporter lock exports;
    when its database session ends, the other exports at its next scrape."""
    from prometheus_client import CollectorRegistry
    from sqlalchemy import text

    from dqpulse.services.exposition import DatasetMetricsCollector
    from dqpulse.services.model import apply_model
    from dqpulse.spec import parse_spec
    from dqpulse.store.db import make_engine

    engines = [make_engine(fresh_db), make_engine(fresh_db)]
    apply_model(engines[0], parse_spec("datasets:\n  - {name: orders, topic: orders}\n"),
                applied_by="test")
    collectors = [DatasetMetricsCollector(engine) for engine in engines]
    registries = [CollectorRegistry(), CollectorRegistry()]
    for registry, collector in zip(registries, collectors, strict=True):
        registry.register(collector)

    def exported() -> list[tuple[float | None, float | None]]:
        """One scrape of each replica, in turn: (leader, the dataset's info series)."""
        out = []
        for registry in registries:
            samples = {s.name: s.value for family in registry.collect() for s in family.samples
                       if s.name == "dqpulse_exporter_leader"
                       or s.labels.get("dataset") == "orders" and s.name.endswith("_info")}
            out.append((samples.get("dqpulse_exporter_leader"),
                        samples.get("dqpulse_dataset_info")))
        return out

    try:
        assert exported() == [(1, 1), (0, None)]
        assert exported() == [(1, 1), (0, None)]  # the lock stays where it is
        with engines[1].begin() as conn:  # the first replica's database session ends
            conn.execute(text(_OUR_ADVISORY_LOCKS.replace(
                "SELECT 1", "SELECT pg_terminate_backend(pid)")))

        def session_gone() -> bool:
            with engines[1].begin() as conn:
                return not conn.execute(text(_OUR_ADVISORY_LOCKS)).first()

        wait_until(session_gone, 10, message="the terminated session to end")
        assert exported() == [(0, None), (1, 1)]  # the next scrape of each
        assert exported() == [(0, None), (1, 1)]
    finally:
        for collector, engine in zip(collectors, engines, strict=True):
            collector.close()
            engine.dispose()
