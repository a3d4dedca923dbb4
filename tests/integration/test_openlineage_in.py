"""OpenLineage in: run events of every type from the real openlineage-python client, over
HTTP to the real API (uvicorn on loopback) and a real Postgres; a FAILed upstream job is a
root-cause suspect of the downstream incident."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.transport.http import HttpConfig, HttpTransport
from sqlalchemy import create_engine

from dqpulse.alerts import incidents as inc
from dqpulse.alerts.anomalies import Anomaly
from dqpulse.config import Settings
from dqpulse.spec import DatasetSpec, LineageSpec, Spec
from dqpulse.store import datasets as dataset_store
from tests.integration.helpers import wait_until

pytestmark = pytest.mark.integration

PRODUCER = "https://example.test/etl"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def spec() -> Spec:
    return Spec(datasets=[DatasetSpec(name="orders_raw", topic="orders-raw", owner="payments"),
                          DatasetSpec(name="orders", topic="orders", owner="payments")],
                lineage=[LineageSpec(**{"from": "orders_raw", "to": "orders"})])


@pytest.fixture
def api(fresh_db: str, spec: Spec) -> Iterator[tuple[str, object]]:
    from service.app import create_app

    engine = create_engine(fresh_db)
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=spec)
    app = create_app(Settings(database_url=fresh_db, auth="open"), engine=engine)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: server.started, 20, message="uvicorn")
    try:
        yield url, engine
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


def _client(url: str) -> OpenLineageClient:
    return OpenLineageClient(transport=HttpTransport(HttpConfig(
        url=url, endpoint="api/v1/lineage/openlineage", timeout=5.0)))


def _event(state: RunState, run_id: str, at: datetime, *, with_datasets: bool) -> RunEvent:
    inputs = [InputDataset(namespace="postgres://erp:5432", name="sales.public.orders")]
    outputs = [OutputDataset(namespace="kafka://127.0.0.1:19092", name="orders-raw")]
    return RunEvent(eventType=state, eventTime=at.isoformat(), run=Run(runId=run_id),
                    job=Job(namespace="airflow", name="load_orders_raw"), producer=PRODUCER,
                    inputs=inputs if with_datasets else [],
                    outputs=outputs if with_datasets else [])


def _open_incident(engine: object, spec: Spec, window_start: float) -> int:
    anomaly = Anomaly(dataset="orders", kind="volume", metric="volume.records", field="",
                      window_start=window_start, window_end=window_start + 60, score=0.99,
                      explanation={"observed": 3.0, "expected_low": 900.0,
                                   "expected_high": 1100.0, "direction": "down"})
    with engine.begin() as conn:  # type: ignore[attr-defined]
        outcome = inc.process_window(conn, dataset=spec.dataset("orders"),
                                     window_start=window_start, window_end=window_start + 60,
                                     anomalies=[anomaly], notifications=[], public_url="",
                                     now=T0 + timedelta(minutes=10))
    return outcome.opened[0]


def test_failed_upstream_job_reported_by_the_openlineage_client_is_a_suspect(api, spec):
    url, engine = api
    client = _client(url)
    run_id = str(uuid.uuid4())
    client.emit(_event(RunState.START, run_id, T0, with_datasets=True))
    client.emit(_event(RunState.RUNNING, run_id, T0 + timedelta(minutes=1), with_datasets=False))
    client.emit(_event(RunState.FAIL, run_id, T0 + timedelta(minutes=2), with_datasets=False))
    # a job that failed long before does not count; one that completed is no suspect
    other = str(uuid.uuid4())
    old = RunEvent(eventType=RunState.FAIL, eventTime=(T0 - timedelta(days=1)).isoformat(),
                   run=Run(runId=other), job=Job(namespace="airflow", name="old_job"),
                   producer=PRODUCER,
                   outputs=[OutputDataset(namespace="kafka://127.0.0.1:19092", name="orders")])
    client.emit(old)

    incident_id = _open_incident(engine, spec, (T0 + timedelta(minutes=4)).timestamp())
    body = httpx.get(f"{url}/api/v1/incidents/{incident_id}/root-cause").json()
    first = body["suspects"][0]
    assert first["kind"] == "job_failure", body["suspects"]
    assert first["job"] == "airflow/load_orders_raw"
    assert first["event_type"] == "FAIL" and first["run_id"] == run_id
    assert first["dataset"] == "orders_raw" and first["depth"] == 2
    assert first["path"] == ["job:airflow/load_orders_raw", "orders_raw", "orders"]
    assert first["lead_seconds"] == pytest.approx(120.0)
    assert not any(s.get("job") == "airflow/old_job" for s in body["suspects"])

    lineage = httpx.get(f"{url}/api/v1/lineage").json()
    assert "postgres://erp:5432/sales.public.orders" in lineage["nodes"]
    assert {"source": "postgres://erp:5432/sales.public.orders", "target": "orders_raw",
            "job": "airflow/load_orders_raw", "origin": "openlineage"} in lineage["edges"]
    job = next(j for j in lineage["jobs"] if j["job"] == "airflow/load_orders_raw")
    assert job["last_event_type"] == "FAIL"
    assert job["outputs"] == ["orders_raw"]


def test_every_event_type_is_recorded_once_and_a_bad_one_is_named(api):
    url, _ = api
    run_id = str(uuid.uuid4())
    for state in ("START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"):
        answer = httpx.post(f"{url}/api/v1/lineage/openlineage", json={
            "eventType": state, "eventTime": "2026-03-01T12:00:00Z",
            "run": {"runId": run_id}, "job": {"namespace": "n", "name": "j"}})
        assert answer.status_code == 202, answer.text
        assert answer.json()["event_type"] == state and answer.json()["run_recorded"] is True
    again = httpx.post(f"{url}/api/v1/lineage/openlineage", json={
        "eventType": "FAIL", "eventTime": "2026-03-01T12:00:00Z", "run": {"runId": run_id},
        "job": {"namespace": "n", "name": "j"}})
    assert again.json()["run_recorded"] is False  # a retried delivery is not a second failure
    bad = httpx.post(f"{url}/api/v1/lineage/openlineage", json={
        "eventType": "COMPLETE", "eventTime": "yesterday", "job": {"name": "j"}})
    assert bad.status_code == 422 and "eventTime" in bad.text
    unknown = httpx.post(f"{url}/api/v1/lineage/openlineage", json={
        "eventType": "EXPLODED", "job": {"name": "j"}})
    assert unknown.status_code == 422 and "eventType" in unknown.text
