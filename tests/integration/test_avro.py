"""Avro through the real Kafka: plain Avro with a declared schema, and the Confluent wire
format with schemas from a registry over HTTP (a loopback server speaking the registry's
`GET /schemas/ids/{id}`)."""

from __future__ import annotations

import io
import json
import math
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastavro import parse_schema, schemaless_writer
from prometheus_client import CollectorRegistry

from dqpulse.config import Settings
from dqpulse.finalize import finalize_ready
from dqpulse.ingest import IngestWorker
from dqpulse.spec import parse_spec
from dqpulse.store import metrics as metric_store
from dqpulse.store.db import make_engine
from dqpulse.telemetry import Telemetry
from tests.integration.helpers import WorkerThread, produce, wait_until
from workers.ingest import make_source

pytestmark = pytest.mark.integration

SCHEMA = {"type": "record", "name": "Order", "fields": [
    {"name": "ts", "type": "double"},
    {"name": "amount", "type": ["null", "double"], "default": None},
    {"name": "country", "type": "string"},
]}


def _avro(record: dict, framed_id: int | None = None) -> bytes:
    out = io.BytesIO()
    if framed_id is not None:
        out.write(struct.pack(">bI", 0, framed_id))
    schemaless_writer(out, parse_schema(SCHEMA), record)
    return out.getvalue()


class _Registry:
    def __init__(self) -> None:
        self.hits = 0
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                registry.hits += 1
                if self.path == "/schemas/ids/7":
                    body = json.dumps({"schema": json.dumps(SCHEMA)}).encode()
                    self.send_response(200)
                else:
                    body = b'{"error_code": 40403, "message": "Schema not found"}'
                    self.send_response(404)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


@pytest.mark.parametrize("framing", ["plain", "wire"])
def test_avro_records_are_counted_and_bad_ones_dead_lettered_by_reason(
        framing, fresh_db, make_topic, kafka_bootstrap):
    topic = make_topic("avro", partitions=1)
    base = math.floor(time.time() / 10) * 10 - 100
    framed_id = 7 if framing == "wire" else None
    records = [(0, _avro({"ts": base + i * 0.01, "amount": None if i % 4 == 0 else float(i),
                          "country": "DE"}, framed_id)) for i in range(400)]
    bad = [(0, b"\x00\x00\x00\x00\x63garbage")] * 3  # schema id 99 / not Avro
    produce(kafka_bootstrap, topic, records + bad)
    registry = _Registry() if framing == "wire" else None
    schema_line = "" if registry else f"    avro_schema: {json.dumps(SCHEMA)}\n"
    spec = parse_spec(f"""
datasets:
  - name: orders
    topic: {topic}
    format: avro
{schema_line}    event_time: ts
    window: 10s
    lateness: 0s
""")
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.3,
                        schema_registry_url=registry.url if registry else None)
    engine = make_engine(fresh_db)
    source, _ = make_source(settings)
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, telemetry=Telemetry(CollectorRegistry()))

    def counted() -> float:
        finalize_ready(engine, spec.datasets[0])
        with engine.connect() as conn:
            points = metric_store.get_points(conn, dataset="orders", metric="volume.records")
        return sum(p["value"] or 0 for p in points)

    with WorkerThread(worker):
        wait_until(lambda: counted() == 400 and worker.stats.bad == 3, 60,
                   message="400 records counted and 3 bad ones")
    with engine.connect() as conn:
        nulls = metric_store.get_points(conn, dataset="orders",
                                        metric="completeness.null_ratio", field="amount")
    assert sum(p["value"] for p in nulls) / len(nulls) == pytest.approx(0.25, abs=0.02)
    expected = {"unknown_schema": 3} if registry else {"avro_decode": 3}
    assert dict(worker.stats.by_reason) == expected
    if registry:
        assert 1 <= registry.hits <= 10  # schemas are cached per id
        registry.server.shutdown()
    engine.dispose()
