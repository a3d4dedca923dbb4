"""Every /api/v1 endpoint x {no token, bad token, viewer, editor, admin} x {own team, other
team}: the exact status of each, and no token ever reads or changes another team's object.

The endpoint list comes from the app's own OpenAPI document: an endpoint without an entry
in ``MATRIX`` fails the test, so a new route cannot be left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from dqpulse.config import Settings
from dqpulse.services import tokens as token_service
from dqpulse.spec import parse_spec
from dqpulse.store import datasets as dataset_store
from dqpulse.store import incidents as incident_store
from dqpulse.store import models as model_store
from dqpulse.store import silences as silence_store
from service.app import create_app

pytestmark = pytest.mark.integration

SPEC = """
datasets:
  - {name: ledger, topic: ledger-topic, owner: payments}
  - {name: ledger_raw, topic: ledger-raw-topic, owner: payments}
  - {name: clickstream, topic: clicks-topic, owner: growth}
  - {name: clickstream_raw, topic: clicks-raw-topic, owner: growth}
lineage:
  - {from: ledger_raw, to: ledger}
  - {from: clickstream_raw, to: clickstream}
"""
OWN, OTHER = "payments", "growth"
TEAM_DATASET = {OWN: "ledger", OTHER: "clickstream"}
TEAM_TOPICS = {OWN: ("ledger-raw-topic", "ledger-topic"),
               OTHER: ("clicks-raw-topic", "clicks-topic")}
# words that only the other team's objects carry: never in a payments token's 2xx response
OTHER_MARKERS = ("clickstream", "growth", "clicks-")
PRINCIPALS = ("none", "bad", "viewer", "editor", "admin")


@dataclass(frozen=True)
class Entry:
    """One endpoint: what a request of a team looks like, which role it needs, its success
    status. ``scoped``: the endpoint acts on one team's object (other team: 404)."""

    body: Callable[[str], Any] | None
    role: str
    ok: int
    scoped: bool


def _silence_body(team: str) -> dict[str, Any]:
    return {"dataset": TEAM_DATASET[team], "duration": "1h", "comment": "matrix"}


def _lineage_body(team: str) -> dict[str, Any]:
    source, target = TEAM_TOPICS[team]
    return {"job": {"name": "matrix"}, "inputs": [{"name": source}],
            "outputs": [{"name": target}]}


MATRIX: dict[tuple[str, str], Entry] = {
    ("get", "/api/v1/datasets"): Entry(None, "viewer", 200, False),
    ("get", "/api/v1/datasets/{name}"): Entry(None, "viewer", 200, True),
    ("get", "/api/v1/datasets/{name}/metrics"): Entry(None, "viewer", 200, True),
    ("get", "/api/v1/datasets/{name}/metrics/{metric}"): Entry(None, "viewer", 200, True),
    ("get", "/api/v1/datasets/{name}/schema"): Entry(None, "viewer", 200, True),
    ("get", "/api/v1/incidents"): Entry(None, "viewer", 200, False),
    ("get", "/api/v1/incidents/{incident_id}"): Entry(None, "viewer", 200, True),
    ("post", "/api/v1/incidents/{incident_id}/acknowledge"):
        Entry(lambda team: {"comment": "mine", "actor": "someone-else"}, "editor", 200, True),
    ("post", "/api/v1/incidents/{incident_id}/resolve"):
        Entry(lambda team: {"comment": "done"}, "editor", 200, True),
    ("post", "/api/v1/incidents/{incident_id}/feedback"):
        Entry(lambda team: {"verdict": "confirmed"}, "editor", 200, True),
    ("get", "/api/v1/incidents/{incident_id}/root-cause"): Entry(None, "viewer", 200, True),
    ("get", "/api/v1/silences"): Entry(None, "viewer", 200, False),
    ("post", "/api/v1/silences"): Entry(_silence_body, "editor", 201, True),
    ("get", "/api/v1/silences/{silence_id}"): Entry(None, "viewer", 200, True),
    ("delete", "/api/v1/silences/{silence_id}"): Entry(None, "editor", 204, True),
    ("get", "/api/v1/lineage"): Entry(None, "viewer", 200, False),
    ("post", "/api/v1/lineage/openlineage"): Entry(_lineage_body, "editor", 202, True),
    ("get", "/api/v1/tokens"): Entry(None, "admin", 200, False),
    ("post", "/api/v1/tokens"):
        Entry(lambda team: {"name": f"new-{team}", "role": "viewer", "teams": [team]},
              "admin", 201, False),
    ("get", "/api/v1/tokens/{token_id}"): Entry(None, "admin", 200, False),
    ("patch", "/api/v1/tokens/{token_id}"):
        Entry(lambda team: {"expires_at": "2999-01-01T00:00:00Z"}, "admin", 200, False),
    ("post", "/api/v1/tokens/{token_id}/revoke"): Entry(None, "admin", 200, False),
    ("get", "/api/v1/audit"): Entry(None, "viewer", 200, False),
    ("get", "/api/v1/model"): Entry(None, "admin", 200, False),
    ("get", "/api/v1/model/versions"): Entry(None, "admin", 200, False),
    ("get", "/api/v1/model/versions/{version}"): Entry(None, "admin", 200, False),
}
# lineage with a start dataset is scoped too: checked as an extra row of the matrix
LINEAGE_OF = ("get", "/api/v1/lineage?dataset={name}")


@pytest.fixture
def world(db_engine: Any, pg_url: str) -> Iterator[dict[str, Any]]:
    now = datetime.now(UTC)
    ids: dict[str, dict[str, int]] = {}
    with db_engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=parse_spec(SPEC))
        for team, dataset in TEAM_DATASET.items():
            incident = incident_store.create(
                conn, dataset=dataset, kind="volume", metric="volume.records", field="",
                severity="critical", status="open", dedup_key=f"{dataset}:volume",
                opened_at=now, last_alert_at=now, summary=f"{dataset}: volume dropped",
                score=1.0, owner=team)
            silence = silence_store.create(
                conn, dataset=dataset, owner=None, kind=None, starts_at=now,
                ends_at=now.replace(year=now.year + 1), comment=None, created_by="setup")
            ids[team] = {"incident_id": incident, "silence_id": int(silence["id"])}
        tokens = {role: token_service.create(conn, token_service.CLI, name=f"t-{role}",
                                             role=role, teams=[OWN] if role != "admin" else [])
                  for role in ("viewer", "editor", "admin")}
        spare = token_service.create(conn, token_service.CLI, name="spare", role="viewer",
                                     teams=[OTHER])[1]
        version = model_store.create(conn, digest="matrix", spec=parse_spec(SPEC).model_dump(
            mode="json", by_alias=True), changes={}, applied_by="matrix", source="matrix")
    app = create_app(Settings(database_url=pg_url), engine=db_engine)
    headers = {"none": {}, "bad": {"Authorization": "Bearer dqp_not-a-token"}}
    headers.update({role: {"Authorization": f"Bearer {token}"}
                    for role, (token, _) in tokens.items()})
    with TestClient(app) as client:
        yield {"client": client, "ids": ids, "headers": headers, "engine": db_engine,
               "token_id": int(spare["id"]), "version": version}


def _url(path: str, team: str, world: dict[str, Any]) -> str:
    values = {"name": TEAM_DATASET[team], "metric": "volume.records",
              "token_id": world["token_id"], "version": world["version"],
              **world["ids"][team]}
    return path.format(**values)


def _expected(entry: Entry, principal: str, team: str) -> int:
    if principal in ("none", "bad"):
        return 401
    rank = ("viewer", "editor", "admin")
    if rank.index(principal) < rank.index(entry.role):
        return 403
    if entry.scoped and principal != "admin" and team == OTHER:
        return 404
    return entry.ok


def _other_team_state(engine: Any) -> tuple[Any, ...]:
    """Everything of the other team a write could change."""
    with engine.connect() as conn:
        return tuple(tuple(conn.execute(text(query)).all()) for query in (
            "SELECT id, status, feedback, acknowledged_at FROM incidents "
            "WHERE dataset = 'clickstream' ORDER BY id",
            "SELECT id, dataset, owner FROM silences WHERE dataset = 'clickstream' "
            "OR owner = 'growth' ORDER BY id",
            "SELECT source, target, job FROM lineage_edges WHERE source LIKE 'clickstream%' "
            "OR target LIKE 'clickstream%' ORDER BY source, target",
            "SELECT name, expires_at, revoked_at FROM api_tokens WHERE name = 'spare'"))


def _cases() -> Iterator[tuple[str, str, Entry, str, str]]:
    for (method, path), entry in MATRIX.items():
        for principal in PRINCIPALS:
            for team in (OWN, OTHER):
                yield method, path, entry, principal, team
    for principal in PRINCIPALS:
        for team in (OWN, OTHER):
            yield "get", LINEAGE_OF[1], Entry(None, "viewer", 200, True), principal, team


def test_every_api_route_has_a_matrix_entry():
    schema = create_app(Settings(database_url="sqlite://")).openapi()
    served = {(method, path) for path, operations in schema["paths"].items()
              if path.startswith("/api/v1") for method in operations}
    assert served - set(MATRIX) == set(), "add these endpoints to MATRIX"
    assert set(MATRIX) - served == set(), "MATRIX names endpoints the app does not serve"
    # outside /api/v1 only the probes, open by design (they hold no data)
    assert {path for path in schema["paths"] if not path.startswith("/api/v1")} \
        == {"/healthz", "/readyz"}


def test_access_matrix_every_status_exact_and_no_cross_team_read_or_write(world):
    client, engine = world["client"], world["engine"]
    wrong: list[str] = []
    cases = 0
    for method, path, entry, principal, team in _cases():
        url = _url(path, team, world)
        body = entry.body(team) if entry.body else None
        savepoint = engine._connection.begin_nested()  # each case starts from the same data
        try:
            before = _other_team_state(engine)
            response = client.request(method.upper(), url, headers=world["headers"][principal],
                                      json=body)
            cases += 1
            expected = _expected(entry, principal, team)
            where = f"{principal:6} {team:8} {method.upper()} {url}"
            if response.status_code != expected:
                wrong.append(f"{where}: {response.status_code} != {expected} {response.text[:200]}")
            if response.status_code >= 400:
                problem = response.json()
                if set(problem) - {"error", "detail", "errors"} or "detail" not in problem:
                    wrong.append(f"{where}: not a problem body: {problem}")
            if principal in ("viewer", "editor"):
                if response.is_success and any(m in response.text for m in OTHER_MARKERS):
                    wrong.append(f"{where}: leaks another team's object: {response.text[:300]}")
                if _other_team_state(engine) != before:
                    wrong.append(f"{where}: changed another team's object")
        finally:
            savepoint.rollback()
    assert cases == (len(MATRIX) + 1) * len(PRINCIPALS) * 2
    assert wrong == []


def test_writes_are_audited_with_the_token_identity_not_the_body_actor(world):
    client, headers = world["client"], world["headers"]
    incident_id = world["ids"][OWN]["incident_id"]
    response = client.post(f"/api/v1/incidents/{incident_id}/acknowledge",
                           headers=headers["editor"], json={"actor": "mallory", "comment": "x"})
    assert response.status_code == 200
    assert response.json()["events"][-1]["actor"] == "t-editor"
    entries = client.get("/api/v1/audit", headers=headers["viewer"]).json()["items"]
    assert [(e["actor"], e["action"], e["target"], e["team"]) for e in entries] == [
        ("t-editor", "incident.acknowledge", f"incident:{incident_id}", OWN)]
    assert entries[0]["detail"]["claimed_actor"] == "mallory"
    other = world["ids"][OTHER]["incident_id"]
    assert client.post(f"/api/v1/incidents/{other}/resolve",
                       headers=headers["admin"]).status_code == 200
    # the admin sees both teams' entries and the token administration; a viewer only its own
    admin_view = client.get("/api/v1/audit", headers=headers["admin"]).json()["items"]
    assert {e["team"] for e in admin_view} == {OWN, OTHER, None}
    viewer_view = client.get("/api/v1/audit", headers=headers["viewer"]).json()["items"]
    assert {e["team"] for e in viewer_view} == {OWN}
    page = client.get("/api/v1/audit", headers=headers["admin"], params={"limit": 1}).json()
    rest = client.get("/api/v1/audit", headers=headers["admin"],
                      params={"cursor": page["next_cursor"]}).json()["items"]
    assert [e["id"] for e in page["items"] + rest] == [e["id"] for e in admin_view]
