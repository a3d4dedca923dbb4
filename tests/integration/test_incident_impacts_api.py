"""A downstream dataset sees the upstream break that hits it (issue 14): its
``open_incidents`` count it, ``GET /incidents?dataset=`` lists it with role ``impact``, a
team token reads it (not acts on it). Real Postgres (SAVEPOINT per test), through the
app. About 2 s.

``src`` (team-src) -> ``orders`` (payments) -> ``report`` (finance); ``other`` (growth)
is unrelated.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dqpulse.alerts import incidents as inc
from dqpulse.alerts.anomalies import Anomaly
from dqpulse.alerts.impacts import Related
from dqpulse.config import Settings
from dqpulse.services import tokens as token_service
from dqpulse.spec import parse_spec
from dqpulse.store import datasets as dataset_store
from service.app import create_app

pytestmark = pytest.mark.integration

SPEC = """
datasets:
  - {name: src, topic: src-topic, owner: team-src}
  - {name: orders, topic: orders-topic, owner: payments}
  - {name: report, topic: report-topic, owner: finance}
  - {name: other, topic: other-topic, owner: growth}
lineage:
  - {from: src, to: orders}
  - {from: orders, to: report}
"""
OWNERS = {"src": "team-src", "orders": "payments", "report": "finance", "other": "growth"}
RELATED = {"src": Related(downstream={"orders": 1, "report": 2}, owners=OWNERS),
           "orders": Related(upstream={"src": 1}, downstream={"report": 1}, owners=OWNERS),
           "report": Related(upstream={"orders": 1, "src": 2}, owners=OWNERS),
           "other": Related(owners=OWNERS)}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _alert(engine: Any, name: str, index: int = 0) -> inc.WindowOutcome:
    start = T0.timestamp() + 60 * index
    anomaly = Anomaly(dataset=name, kind="completeness", metric="completeness.null_ratio",
                      field="customer.segment", window_start=start, window_end=start + 60,
                      score=0.99, severity=None,
                      explanation={"observed": 0.4, "expected_low": 0.0,
                                   "expected_high": 0.01, "direction": "up",
                                   "samples": [{"partition": 0, "offset": index,
                                                "record": {"id": name}}]})
    with engine.begin() as conn:
        return inc.process_window(
            conn, dataset=parse_spec(SPEC).dataset(name), window_start=start,
            window_end=start + 60, anomalies=[anomaly], notifications=[],
            public_url="http://dq.test", now=T0 + timedelta(minutes=index + 1),
            related=RELATED[name])


@pytest.fixture
def world(db_engine: Any, pg_url: str) -> Iterator[dict[str, Any]]:
    with db_engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=parse_spec(SPEC))
        tokens = {team: token_service.create(conn, token_service.CLI, name=f"t-{team}",
                                             role="editor", teams=[team])[0]
                  for team in ("payments", "growth")}
    root_id = _alert(db_engine, "src").opened[0]
    assert _alert(db_engine, "orders").impacts == [root_id]
    assert _alert(db_engine, "report").impacts == [root_id]
    own_id = _alert(db_engine, "other").opened[0]
    app = create_app(Settings(database_url=pg_url), engine=db_engine)
    with TestClient(app) as client:
        yield {"client": client, "root": root_id, "own": own_id,
               "admin": {"Authorization": f"Bearer {_admin(db_engine)}"},
               **{team: {"Authorization": f"Bearer {token}"}
                  for team, token in tokens.items()}}


def _admin(engine: Any) -> str:
    with engine.begin() as conn:
        return str(token_service.create(conn, token_service.CLI, name="t-admin",
                                        role="admin", teams=[])[0])


def test_an_impacted_dataset_counts_and_lists_the_upstream_incident(world):
    client, admin = world["client"], world["admin"]
    datasets = {d["name"]: d for d in client.get("/api/v1/datasets", headers=admin).json()}
    assert {name: (d["open_incidents"], d["open_impacts"]) for name, d in datasets.items()} == {
        "src": (1, 0), "orders": (1, 1), "report": (1, 1), "other": (1, 0)}
    assert client.get("/api/v1/datasets/orders", headers=admin).json()["open_impacts"] == 1
    [item] = client.get("/api/v1/incidents", params={"dataset": "orders"},
                        headers=admin).json()["items"]
    assert (item["id"], item["dataset"], item["role"]) == (world["root"], "src", "impact")
    assert item["impacted"] == ["orders", "report"]
    [own] = client.get("/api/v1/incidents", params={"dataset": "src"},
                       headers=admin).json()["items"]
    assert (own["id"], own["role"]) == (world["root"], "root")
    # the shape before issue 14's gap: only the dataset's own incidents
    assert client.get("/api/v1/incidents", params={"dataset": "orders", "impacts": "false"},
                      headers=admin).json()["items"] == []
    everything = client.get("/api/v1/incidents", headers=admin).json()["items"]
    assert [(i["dataset"], i["role"]) for i in everything] == [("other", "root"),
                                                               ("src", "root")]


def test_a_resolved_upstream_incident_no_longer_counts_but_stays_listed(world, db_engine):
    client, admin = world["client"], world["admin"]
    assert client.post(f"/api/v1/incidents/{world['root']}/resolve", json={},
                       headers=admin).status_code == 200
    orders = client.get("/api/v1/datasets/orders", headers=admin).json()
    assert (orders["open_incidents"], orders["open_impacts"]) == (0, 0)
    listed = client.get("/api/v1/incidents", params={"dataset": "orders",
                                                     "status": "resolved"},
                        headers=admin).json()["items"]
    assert [(i["id"], i["role"]) for i in listed] == [(world["root"], "impact")]


def test_an_impacted_team_reads_the_upstream_incident_but_cannot_act_on_it(world):
    client, payments, growth = world["client"], world["payments"], world["growth"]
    items = client.get("/api/v1/incidents", headers=payments).json()["items"]
    assert [(i["id"], i["role"], i["impacted"]) for i in items] == [
        (world["root"], "impact", ["orders"])]  # finance's report is not payments' to see
    detail = client.get(f"/api/v1/incidents/{world['root']}", headers=payments)
    assert detail.status_code == 200
    body = detail.json()
    assert body["role"] == "root" and body["impacted"] == ["orders"]
    assert sorted(a["id"] > 0 and a["kind"] for a in body["alerts"]) == ["completeness"] * 2
    assert [s["records"][0]["record"] for s in body["samples"]] == [{"id": "orders"}]
    assert client.get(f"/api/v1/incidents/{world['root']}/root-cause",
                      headers=payments).status_code == 200
    assert client.post(f"/api/v1/incidents/{world['root']}/acknowledge", json={},
                       headers=payments).status_code == 404
    # an unrelated team sees neither the break nor the count
    assert client.get(f"/api/v1/incidents/{world['root']}", headers=growth).status_code == 404
    assert [i["id"] for i in client.get("/api/v1/incidents", headers=growth).json()[
        "items"]] == [world["own"]]
