"""Kafka -> ingest worker -> Postgres -> REST API, on the real local stack."""

from __future__ import annotations

import math
import time

import pytest
from fastapi.testclient import TestClient

from dqpulse.config import Settings
from dqpulse.finalize import finalize_ready
from dqpulse.ingest import IngestWorker
from dqpulse.spec import parse_spec
from dqpulse.store import datasets as dataset_store
from dqpulse.store.db import make_engine
from service.app import create_app
from tests.integration.helpers import WorkerThread, json_bytes, produce, wait_until
from workers.ingest import make_source

pytestmark = pytest.mark.integration


def _spec(topic: str) -> str:
    return f"""
datasets:
  - name: orders
    topic: {topic}
    event_time: ts
    window: 10s
    lateness: 0s
    fields:
      amount: {{type: number, required: true}}
"""


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_records_produced_to_kafka_come_back_as_window_points_through_the_api(
        client, fresh_db, make_topic, kafka_bootstrap):
    topic = make_topic("orders", partitions=2)
    base = math.floor(time.time() / 10) * 10 - 100  # two whole windows in the past
    records = []
    for i in range(1000):
        window = 0 if i < 600 else 1
        amount = None if i % 10 == 0 else float(i)
        records.append((i % 2, json_bytes({"ts": base + window * 10 + (i % 10) * 0.5,
                                           "amount": amount, "country": "DE"})))
    produce(kafka_bootstrap, topic, records)

    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.5, worker_metrics_port=0, auth="open")
    spec = parse_spec(_spec(topic))
    engine = make_engine(fresh_db)
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=spec)
    source, _ = make_source(settings, client)
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source)
    app = create_app(settings, engine=engine)
    api = TestClient(app)

    def two_windows() -> bool:
        finalize_ready(engine, spec.datasets[0])
        body = api.get("/api/v1/datasets/orders/metrics/volume.records").json()
        return len([p for p in body.get("points", []) if p["value"]]) >= 2

    with WorkerThread(worker):
        wait_until(two_windows, 60, message="two finalized windows")

    points = api.get("/api/v1/datasets/orders/metrics/volume.records").json()["points"]
    by_window = {p["window_start"]: p["value"] for p in points}
    assert by_window[base] == 600
    assert by_window[base + 10] == 400
    nulls = api.get("/api/v1/datasets/orders/metrics/completeness.null_ratio",
                    params={"field": "amount"}).json()["points"]
    null_by_window = {p["window_start"]: p["value"] for p in nulls}
    assert null_by_window[base] == pytest.approx(60 / 600)
    assert null_by_window[base + 10] == pytest.approx(40 / 400)

    listed = api.get("/api/v1/datasets").json()
    assert [d["name"] for d in listed] == ["orders"]
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").status_code == 200
    assert "dqpulse_http_requests_total" in api.get("/metrics").text
    assert api.get("/api/v1/datasets/nope").status_code == 404
    bad = api.get("/api/v1/datasets/orders/metrics/volume.records", params={"start": "soon"})
    assert bad.status_code == 422 and "'start'" in bad.json()["detail"]
    engine.dispose()
