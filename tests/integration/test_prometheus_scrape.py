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
            records = _query(prometheus,
                             f'dqpulse_ingest_records_total{{dataset="{dataset}"}}')
            api = _query(prometheus, 'up{job="dqpulse-api"} == 1')
            return bool(records) and float(records[0]["value"][1]) == 500 and bool(api)

        wait_until(scraped, 40, interval_s=1.0, message="Prometheus to scrape both processes")
        requests = _query(prometheus, 'dqpulse_http_requests_total{route="/api/v1/datasets"}')
        assert requests and float(requests[0]["value"][1]) >= 1
    finally:
        stop_processes(processes)
