"""Incidents and silences API over a real Postgres (SAVEPOINT per test), through httpx."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from dqpulse.alerts import incidents as inc
from dqpulse.alerts.anomalies import Anomaly, kind_of_metric
from dqpulse.config import Settings
from dqpulse.services import incidents as incident_service
from dqpulse.spec import DatasetSpec, NotificationSpec, Spec

pytestmark = pytest.mark.integration

PUBLIC = "http://dq.test"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def spec() -> Spec:
    return Spec(
        datasets=[DatasetSpec(name="orders", topic="orders", owner="payments"),
                  DatasetSpec(name="users", topic="users", owner="growth")],
        notifications=[NotificationSpec(name="hook", type="webhook",
                                        url="http://127.0.0.1:9/hooks/T0K3N",
                                        secret="S3CR3T")],
    )


@pytest.fixture
def client(db_engine, pg_url, spec):
    from service.app import create_app

    app = create_app(Settings(database_url=pg_url, public_url=PUBLIC, auth="open"),
                     engine=db_engine, spec=spec)
    with TestClient(app) as test_client:
        yield test_client


def open_incident(db_engine, spec: Spec, dataset: str, metric: str, index: int,
                  score: float = 0.95) -> int:
    ds = spec.dataset(dataset)
    start = T0.timestamp() + 60 * index
    anomaly = Anomaly(dataset=dataset, kind=kind_of_metric(metric), metric=metric,
                          field="", window_start=start, window_end=start + 60, score=score,
                          severity=None, explanation={"observed": 1.0, "expected_low": 5.0,
                                                      "expected_high": 9.0,
                                                      "direction": "down"})
    with db_engine.begin() as conn:
        outcome = inc.process_window(conn, dataset=ds, window_start=start,
                                     window_end=start + 60, anomalies=[anomaly],
                                     notifications=list(spec.notifications), public_url=PUBLIC,
                                     now=T0 + timedelta(minutes=index + 1),
                                     options=inc.IncidentOptions(auto_resolve_windows=100))
    return outcome.opened[0] if outcome.opened else outcome.updated[0]


def test_list_filters_and_cursor_pagination(client, db_engine, spec):
    kinds = ["volume.records", "completeness.null_ratio", "schema.new_fields",
             "uniqueness.duplicate_ratio", "distribution.psi"]
    ids = [open_incident(db_engine, spec, "orders", m, i) for i, m in enumerate(kinds)]
    ids.append(open_incident(db_engine, spec, "users", "volume.records", 9))
    response = client.get("/api/v1/incidents", params={"limit": 2})
    assert response.status_code == 200
    body = response.json()
    assert [i["id"] for i in body["items"]] == sorted(ids, reverse=True)[:2]
    assert set(body["items"][0]) == {"id", "dataset", "kind", "metric", "field", "severity",
                                     "status", "opened_at", "resolved_at", "summary", "score",
                                     "since", "role", "impacted"}
    # since: first alerted window (the console); role, impacted: one incident per break
    seen = [i["id"] for i in body["items"]]
    while body["next_cursor"]:
        body = client.get("/api/v1/incidents",
                          params={"limit": 2, "cursor": body["next_cursor"]}).json()
        seen += [i["id"] for i in body["items"]]
    assert seen == sorted(ids, reverse=True)
    only = client.get("/api/v1/incidents", params={"dataset": "users"}).json()["items"]
    assert [i["dataset"] for i in only] == ["users"]
    vol = client.get("/api/v1/incidents", params={"kind": "volume"}).json()["items"]
    assert {i["kind"] for i in vol} == {"volume"} and len(vol) == 2
    since = (T0 + timedelta(minutes=5)).isoformat()
    recent = client.get("/api/v1/incidents", params={"since": since}).json()["items"]
    assert [i["id"] for i in recent] == [ids[-1], ids[-2]]
    client.post(f"/api/v1/incidents/{ids[0]}/resolve")
    resolved = client.get("/api/v1/incidents", params={"status": "resolved"}).json()["items"]
    assert [i["id"] for i in resolved] == [ids[0]]
    both = client.get("/api/v1/incidents", params={"status": "open,resolved"}).json()["items"]
    assert len(both) == len(ids)


@pytest.mark.parametrize(("params", "message"), [
    ({"status": "closed"}, "query parameter 'status': String should match pattern"),
    ({"kind": "latency"}, "query parameter 'kind': String should match pattern"),
    ({"since": "yesterday"}, "query parameter 'since': Input should be a valid number"),
    ({"cursor": "garbage!"}, "query parameter 'cursor': String should match pattern"),
])
def test_list_rejects_bad_parameters_with_precise_422(client, params, message):
    response = client.get("/api/v1/incidents", params=params)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_list_rejects_out_of_range_limit(client):
    response = client.get("/api/v1/incidents", params={"limit": 0})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "limit"]
    assert response.json()["error"] == "ValidationError"


def test_detail_has_alerts_audit_trail_and_deliveries_without_secrets(client, db_engine, spec):
    incident_id = open_incident(db_engine, spec, "orders", "volume.records", 0, score=0.99)
    response = client.get(f"/api/v1/incidents/{incident_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["severity"] == "critical" and body["owner"] == "payments"
    assert body["expected_low"] == 5.0 and body["observed"] == 1.0
    assert body["since"] == T0.timestamp()
    assert [a["metric"] for a in body["alerts"]] == ["volume.records"]
    assert [(e["action"], e["actor"]) for e in body["events"]] == [("opened", "dqpulse")]
    [delivery] = body["deliveries"]
    assert delivery["channel"] == "hook" and delivery["status"] == "pending"
    assert delivery["idempotency_key"] == f"{incident_id}:opened:1:hook"
    assert "T0K3N" not in response.text and "S3CR3T" not in response.text
    assert client.get("/api/v1/incidents/999999").status_code == 404


def test_acknowledge_resolve_lifecycle_and_conflicts(client, db_engine, spec):
    incident_id = open_incident(db_engine, spec, "orders", "volume.records", 0)
    response = client.post(f"/api/v1/incidents/{incident_id}/acknowledge",
                           json={"actor": "alice", "comment": "looking"})
    assert response.status_code == 200 and response.json()["status"] == "acknowledged"
    again = client.post(f"/api/v1/incidents/{incident_id}/acknowledge")
    assert again.status_code == 409 and "only an open incident" in again.json()["detail"]
    response = client.post(f"/api/v1/incidents/{incident_id}/resolve")  # no body at all
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "resolved" and body["resolved_at"] is not None
    assert [(e["action"], e["actor"]) for e in body["events"]] == [
        ("opened", "dqpulse"), ("acknowledged", "alice"), ("resolved", "anonymous")]
    assert [d["event"] for d in body["deliveries"]] == ["opened", "acknowledged", "resolved"]
    assert client.post(f"/api/v1/incidents/{incident_id}/resolve").status_code == 409
    registry = client.app.state.telemetry.registry  # exported from the database at scrape
    assert not [s for family in registry.collect() for s in family.samples
                if s.name == "dqpulse_incidents_open" and s.labels["dataset"] == "orders"]
    assert client.post("/api/v1/incidents/424242/acknowledge").status_code == 404


def test_feedback_false_positive_resolves_and_reaches_the_detectors(client, db_engine, spec,
                                                                     monkeypatch):
    calls = []
    monkeypatch.setattr(incident_service, "teach_detectors",
                        lambda conn, target: calls.append(target) or incident_service.Taught(
                            series=1, adoptions_undone=(("completeness.null_ratio", "x"),)))
    incident_id = open_incident(db_engine, spec, "orders", "completeness.null_ratio", 0)
    response = client.post(f"/api/v1/incidents/{incident_id}/feedback",
                           json={"verdict": "false_positive", "comment": "backfill"})
    assert response.status_code == 200
    body = response.json()
    assert body["verdict"] == "false_positive" and body["incident"]["status"] == "resolved"
    assert body["incident"]["feedback"] == "false_positive"
    assert body["window_starts"] == [T0.timestamp()]
    assert calls and calls[0].metric == "completeness.null_ratio"
    assert body["series_taught"] == 1  # what the detectors said, passed on as it is
    assert body["adoptions_undone"] == [{"metric": "completeness.null_ratio", "field": "x"}]
    bad = client.post(f"/api/v1/incidents/{incident_id}/feedback", json={"verdict": "meh"})
    assert bad.status_code == 422 and "body field 'verdict'" in bad.json()["detail"]


def test_silences_crud_and_validation(client):
    now = datetime.now(UTC)
    response = client.post("/api/v1/silences", json={
        "dataset": "orders", "kind": "volume", "duration": "2h", "comment": "backfill",
        "created_by": "ops"})
    assert response.status_code == 201
    silence = response.json()
    assert silence["active"] is True and silence["dataset"] == "orders"
    later = client.post("/api/v1/silences", json={
        "owner": "payments", "starts_at": (now + timedelta(days=1)).isoformat(),
        "ends_at": (now + timedelta(days=1, hours=4)).isoformat()}).json()
    assert later["active"] is False
    listed = client.get("/api/v1/silences").json()
    assert [s["id"] for s in listed] == [later["id"], silence["id"]]
    assert client.get(f"/api/v1/silences/{silence['id']}").json()["comment"] == "backfill"
    assert client.delete(f"/api/v1/silences/{silence['id']}").status_code == 204
    assert client.delete(f"/api/v1/silences/{silence['id']}").status_code == 404
    assert client.get(f"/api/v1/silences/{silence['id']}").status_code == 404
    for body, message in [
        ({"kind": "latency", "duration": "1h"}, "body field 'kind'"),
        ({"dataset": "orders"}, "body field 'ends_at': Field required"),
        ({"duration": "forever"}, "body field 'duration'"),
        ({"ends_at": (now - timedelta(hours=1)).isoformat()}, "must be after starts_at"),
        ({"ends_at": "2030-01-01T00:00:00"}, "Input should have timezone info"),
    ]:
        response = client.post("/api/v1/silences", json=body)
        assert response.status_code == 422, body
        assert message in response.json()["detail"]


def test_silence_created_through_the_api_suppresses_notifications(client, db_engine, spec):
    client.post("/api/v1/silences", json={"dataset": "orders", "duration": "1h"})
    ds = spec.dataset("orders")
    start = datetime.now(UTC).timestamp()
    anomaly = Anomaly("orders", "volume", "volume.records", "", start, start + 60, 0.99)
    with db_engine.begin() as conn:
        outcome = inc.process_window(conn, dataset=ds, window_start=start,
                                     window_end=start + 60, anomalies=[anomaly],
                                     notifications=list(spec.notifications),
                                     public_url=PUBLIC)
    assert outcome.opened and outcome.notifications == 0 and outcome.suppressed == 1
    detail = client.get(f"/api/v1/incidents/{outcome.opened[0]}").json()
    assert detail["deliveries"] == [] and detail["events"][-1]["action"] == "silenced"


def test_api_without_an_applied_model_has_no_channels(client, db_engine, spec):
    from dqpulse.services.model import ModelCache

    incident_id = open_incident(db_engine, spec, "orders", "volume.records", 0)
    client.app.state.model = ModelCache(db_engine)  # the database's model: none applied
    response = client.post(f"/api/v1/incidents/{incident_id}/acknowledge")
    assert response.status_code == 200
    assert [d["event"] for d in response.json()["deliveries"]] == ["opened"]
