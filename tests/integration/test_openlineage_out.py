"""OpenLineage out, on the real stack: Kafka -> ingest -> finalize -> the emission outbox ->
the openlineage-python HTTP transport -> a real loopback HTTP receiver. A receiver outage
loses no window's event; every event received is one the client's own model accepts."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from openlineage.client.event_v2 import InputDataset, Job, Run, RunEvent, RunState
from openlineage.client.generated.data_quality_assertions_dataset import (
    Assertion,
    DataQualityAssertionsDatasetFacet,
)
from openlineage.client.generated.data_quality_metrics_input_dataset import (
    ColumnMetrics,
    DataQualityMetricsInputDatasetFacet,
)
from openlineage.client.generated.tags_run import TagsRunFacet
from openlineage.client.serde import Serde

from dqpulse.config import Settings
from dqpulse.finalize import FinalizedWindow, finalize_ready
from dqpulse.finalize.openlineage import OpenLineageOutboxHook
from dqpulse.finalize.scoring import default_hooks
from dqpulse.ingest import IngestWorker
from dqpulse.rca.openlineage_out import run_id
from dqpulse.records import MetricPoint
from dqpulse.services.openlineage_emit import EmitOptions, emit_due, http_sender
from dqpulse.spec import parse_spec
from dqpulse.store import datasets as dataset_store
from dqpulse.store import metrics as metric_store
from dqpulse.store import openlineage as openlineage_store
from dqpulse.store.db import make_engine
from tests.integration.helpers import WorkerThread, json_bytes, produce, wait_until
from workers.ingest import make_source

pytestmark = pytest.mark.integration


class LineageReceiver:
    """A Marquez-like receiver: ``POST /api/v1/lineage`` answers 201 and keeps the body."""

    def __init__(self, port: int, *, reject: frozenset[str] = frozenset()) -> None:
        self.port = port
        self.reject = reject  # run ids answered 422, as a receiver rejecting their body
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.paths.append(self.path)
                event = json.loads(body)
                if event["run"]["runId"] in receiver.reject:
                    answer = b'{"errors": ["inputs[0].name: must not be blank"]}'
                    self.send_response(422)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                receiver.bodies.append(event)
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rebuilt(body: dict[str, Any]) -> RunEvent:
    """The received body as the client's own model (its validators run: run id, event time,
    producer, schema URLs); equal to the body when serialized again."""
    [dataset] = body["inputs"]
    facets = dataset["inputFacets"]
    metrics, assertions = facets["dataQualityMetrics"], facets["dataQualityAssertions"]
    metrics_facet = DataQualityMetricsInputDatasetFacet(
        columnMetrics={k: ColumnMetrics(**v) for k, v in metrics["columnMetrics"].items()},
        rowCount=metrics.get("rowCount"), bytes=metrics.get("bytes"))
    assertions_facet = DataQualityAssertionsDatasetFacet(
        assertions=[Assertion(**a) for a in assertions["assertions"]])
    for facet, sent in ((metrics_facet, metrics), (assertions_facet, assertions)):
        assert sent["_schemaURL"] == facet._schemaURL and sent["_producer"]
        facet._producer = sent["_producer"]
    event = RunEvent(
        eventType=RunState(body["eventType"]), eventTime=body["eventTime"],
        run=Run(runId=body["run"]["runId"]),
        job=Job(namespace=body["job"]["namespace"], name=body["job"]["name"]),
        producer=body["producer"],
        inputs=[InputDataset(namespace=dataset["namespace"], name=dataset["name"],
                             inputFacets={"dataQualityMetrics": metrics_facet,
                                          "dataQualityAssertions": assertions_facet})])
    assert body["schemaURL"] == event.schemaURL
    # the client adds its own run facet (its version, as a tag): the real client sent it
    run_facets = body["run"].pop("facets")
    assert run_facets["tags"]["_schemaURL"] == TagsRunFacet._get_schema()
    expected = Serde.to_dict(event)
    assert expected["run"].pop("facets") == {}
    assert expected == body
    return event


def _spec(topic: str, url: str) -> str:
    return f"""
datasets:
  - name: orders
    topic: {topic}
    event_time: ts
    window: 10s
    lateness: 0s
    fields:
      amount: {{type: number, min: 0}}
openlineage:
  emit:
    url: {url}
    job_namespace: dqpulse-test
    dataset_namespace: kafka://127.0.0.1:19092
"""


def test_windows_are_emitted_through_the_client_and_an_outage_loses_none(
        fresh_db, make_topic, kafka_bootstrap):
    topic = make_topic("ol-out", partitions=1)
    base = math.floor(time.time() / 10) * 10 - 60
    records = []
    for i in range(400):
        window = i // 100  # four windows of 100 records; every 20th amount is negative
        amount = -1.0 if i % 20 == 0 else (None if i % 10 == 5 else float(i))
        records.append((0, json_bytes({"ts": base + window * 10 + (i % 100) * 0.05,
                                       "amount": amount})))
    produce(kafka_bootstrap, topic, records)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.5, worker_metrics_port=0, auth="open")
    spec = parse_spec(_spec(topic, url))
    emit = spec.openlineage.emit
    assert emit is not None
    engine = make_engine(fresh_db)
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=spec)
    source, _ = make_source(settings)
    hooks = default_hooks(spec, settings)
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, hooks=hooks)

    def four_windows() -> bool:
        finalize_ready(engine, spec.datasets[0], hooks=hooks)
        with engine.begin() as conn:
            rows = openlineage_store.get_all(conn, dataset="orders")
        return len([r for r in rows if base <= r["window_start"] < base + 40]) >= 4

    with WorkerThread(worker):
        wait_until(four_windows, 90, message="four finalized windows")
    with engine.begin() as conn:
        queued = openlineage_store.get_all(conn, dataset="orders")
        points = metric_store.get_points(conn, dataset="orders", metric="volume.records")
    finalized = [p["window_start"] for p in points]
    assert sorted(r["window_start"] for r in queued) == sorted(finalized)

    # the receiver is down: every pass fails, nothing is lost, the rows wait with a backoff
    send, close = http_sender(emit)
    options = EmitOptions(base_backoff_s=0.1, max_backoff_s=0.2)
    later = datetime.now(UTC) + timedelta(hours=1)
    for attempt in range(3):
        report = emit_due(engine, send, options=options, now=later + timedelta(minutes=attempt))
        assert report.delivered == 0 and report.failed == len(queued)
    with engine.begin() as conn:
        waiting = openlineage_store.get_all(conn, dataset="orders")
    assert all(r["status"] == "pending" and r["attempts"] == 3 for r in waiting)
    assert all("ConnectionError" in (r["last_error"] or "") for r in waiting)

    receiver = LineageReceiver(port)
    receiver.up()
    try:
        report = emit_due(engine, send, options=options, now=later + timedelta(minutes=10))
        assert report.delivered == len(queued) and report.failed == 0
        assert emit_due(engine, send, options=options,
                        now=later + timedelta(minutes=20)).claimed == 0
    finally:
        close()
        receiver.down()
        engine.dispose()

    assert set(receiver.paths) == {"/api/v1/lineage"}
    assert len(receiver.bodies) == len(queued)
    events = {body["run"]["runId"]: rebuilt(body) for body in receiver.bodies}
    assert set(events) == {run_id("orders", start) for start in finalized}
    body = next(b for b in receiver.bodies
                if b["run"]["runId"] == run_id("orders", float(base)))
    assert body["eventType"] == "COMPLETE"
    assert (body["job"]["namespace"], body["job"]["name"]) == ("dqpulse-test", "dqpulse.orders")
    [dataset] = body["inputs"]
    assert (dataset["namespace"], dataset["name"]) == ("kafka://127.0.0.1:19092", topic)
    metrics = dataset["inputFacets"]["dataQualityMetrics"]
    assert metrics["rowCount"] == 100
    assert metrics["columnMetrics"]["amount"]["nullCount"] == 10
    assert metrics["columnMetrics"]["amount"]["min"] == -1.0
    checks = {a["name"]: a for a in dataset["inputFacets"]["dataQualityAssertions"]["assertions"]}
    assert checks["dqpulse.validity.amount:min"]["success"] is False
    assert checks["dqpulse.validity.amount:min"]["actual"] == "5"
    assert checks["dqpulse.validity.amount:type"]["success"] is True


def test_an_event_the_receiver_rejects_does_not_hold_the_others_back_and_ends_dead(fresh_db):
    """A receiver that answers 422 to one window's event (its body, not the receiver) used
    to hold every later window back for ever (each pass stopped at the first failure).
    Now the others are delivered in the same pass; the rejected one is tried alone with a
    backoff and, after ``max_rejections`` tries, is dead with the receiver's answer."""
    port = _free_port()
    spec = parse_spec(_spec("orders-topic", f"http://127.0.0.1:{port}"))
    emit = spec.openlineage.emit
    assert emit is not None
    engine = make_engine(fresh_db)
    starts = [1_780_000_000.0 + 10 * k for k in range(5)]
    with engine.begin() as conn:
        for start in starts:
            points = [MetricPoint("volume.records", 100.0)]
            metric_store.create_window(conn, dataset="orders", window_start=start,
                                       window_end=start + 10, points=points)
            OpenLineageOutboxHook()(conn, spec.datasets[0],
                                    FinalizedWindow("orders", start, start + 10, points))
    bad = run_id("orders", starts[1])
    receiver = LineageReceiver(port, reject=frozenset({bad}))
    receiver.up()
    send, close = http_sender(emit)
    options = EmitOptions(base_backoff_s=0.1, max_backoff_s=0.2, max_rejections=3)
    later = datetime.now(UTC) + timedelta(hours=1)
    try:
        first = emit_due(engine, send, options=options, now=later)
        assert (first.delivered, first.rejected, first.failed, first.dead) == (4, 1, 0, 0)
        for k in (1, 2):
            again = emit_due(engine, send, options=options, now=later + timedelta(minutes=k))
            assert (again.claimed, again.rejected, again.dead) == (1, 1, int(k == 2))
        assert emit_due(engine, send, options=options,
                        now=later + timedelta(minutes=5)).claimed == 0
    finally:
        close()
        receiver.down()
    with engine.begin() as conn:
        rows = {r["window_start"]: r for r in openlineage_store.get_all(conn, dataset="orders")}
        counts = openlineage_store.counts(conn)
    engine.dispose()
    assert counts == {"delivered": 4, "dead": 1}
    dead = rows[starts[1]]
    assert (dead["status"], dead["attempts"]) == ("dead", 3)
    assert dead["last_error"].startswith("the receiver rejected it: HTTP 422")
    assert "must not be blank" in dead["last_error"]
    assert {b["run"]["runId"] for b in receiver.bodies} == {
        run_id("orders", start) for start in starts if start != starts[1]}
