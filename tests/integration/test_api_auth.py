"""Bearer tokens: required by default, open only when asked; roles, expiry, revocation;
created, listed, expired and revoked by the CLI and the API; stored hashed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from dqpulse.config import Settings
from dqpulse.services import tokens as token_service
from dqpulse.store.db import make_engine
from service.app import create_app

pytestmark = pytest.mark.integration


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_api_requires_a_token_by_default_even_before_any_exists(fresh_db):
    engine = make_engine(fresh_db)
    client = TestClient(create_app(Settings(database_url=fresh_db), engine=engine))
    denied = client.get("/api/v1/datasets")
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"] == "Bearer"
    assert denied.json() == {"error": "AuthError",
                             "detail": "missing 'Authorization: Bearer <token>' header"}
    assert client.get("/api/v1/datasets", headers=_bearer("nope")).status_code == 401
    assert client.get("/api/v1/datasets", headers={"Authorization": "Basic eDp5"}
                      ).status_code == 401
    for probe in ("/healthz", "/readyz", "/metrics", "/docs", "/ui/"):
        assert client.get(probe).status_code == 200, probe
    token, _ = token_service.create_token(engine, name="ci", role="viewer", teams=["payments"])
    assert client.get("/api/v1/datasets", headers=_bearer(token)).status_code == 200
    with pytest.raises(Exception, match="already exists"):
        token_service.create_token(engine, name="ci")
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT token_hash FROM api_tokens")).scalars().all()
    assert token not in str(stored) and len(stored[0]) == 64  # a SHA-256 hex digest only
    engine.dispose()


def test_open_mode_needs_no_token_and_acts_as_anonymous_admin(fresh_db):
    client = TestClient(create_app(Settings(database_url=fresh_db, auth="open")))
    assert client.get("/api/v1/datasets").status_code == 200
    created = client.post("/api/v1/silences", json={"owner": "payments", "duration": "1h",
                                                    "created_by": "bob"})
    assert created.status_code == 201 and created.json()["created_by"] == "anonymous"
    assert client.get("/api/v1/audit").json()["items"][0]["actor"] == "anonymous"
    # the served document says what open mode does: no security requirement, no 401
    schema = client.get("/openapi.json").json()
    operations = [op for ops in schema["paths"].values() for op in ops.values()]
    assert not any("security" in op or "401" in op["responses"] for op in operations)
    assert "securitySchemes" not in schema["components"]


def test_bodies_over_the_limit_get_a_counted_413_and_405_names_every_method(fresh_db):
    settings = Settings(database_url=fresh_db, auth="open", api_max_body_bytes=2048)
    client = TestClient(create_app(settings))
    too_big = client.post("/api/v1/lineage/openlineage", content=b"{" + b" " * 4096 + b"}",
                          headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
    assert too_big.json() == {"error": "PayloadTooLargeError",
                              "detail": "request body over 2048 bytes"}
    chunked = client.post("/api/v1/silences", content=iter([b" " * 1500, b" " * 1500]),
                          headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413  # no Content-Length: counted as it streams
    registry = client.app.state.telemetry.registry
    assert registry.get_sample_value("dqpulse_http_requests_total", {
        "method": "POST", "route": "unmatched", "status": "413"}) == 2
    put = client.put("/api/v1/silences")
    assert put.status_code == 405 and put.headers["allow"] == "GET, POST"
    assert put.json()["error"] == "MethodNotAllowedError"


def test_static_tokens_from_settings_are_admins(fresh_db):
    settings = Settings(database_url=fresh_db, api_tokens="s3cret-one,s3cret-two")
    client = TestClient(create_app(settings))
    assert client.get("/api/v1/datasets").status_code == 401
    assert client.get("/api/v1/tokens", headers=_bearer("s3cret-two")).status_code == 200


def test_tokens_through_the_api_roles_expiry_and_revocation(fresh_db):
    engine = make_engine(fresh_db)
    admin, _ = token_service.create_token(engine, name="root", role="admin")
    client = TestClient(create_app(Settings(database_url=fresh_db), engine=engine))
    created = client.post("/api/v1/tokens", headers=_bearer(admin),
                          json={"name": "grafana", "role": "editor", "teams": ["payments"],
                                "expires_in_days": 30})
    assert created.status_code == 201
    body = created.json()
    secret, token_id = body["token"], body["id"]
    assert body["role"] == "editor" and body["teams"] == ["payments"] and body["active"]
    assert body["created_by"] == "root" and body["expires_at"] is not None
    listed = client.get("/api/v1/tokens", headers=_bearer(admin))
    assert [t["name"] for t in listed.json()] == ["root", "grafana"]
    assert secret not in listed.text and "token_hash" not in listed.text
    # a non-admin may not manage tokens: 403, whatever it asks
    assert client.get("/api/v1/tokens", headers=_bearer(secret)).status_code == 403
    assert client.post(f"/api/v1/tokens/{token_id}/revoke",
                       headers=_bearer(secret)).status_code == 403
    assert client.post("/api/v1/tokens", headers=_bearer(admin),
                       json={"name": "grafana"}).status_code == 409
    # expire now -> 401 naming the reason; clear the expiry -> works again
    expired = client.patch(f"/api/v1/tokens/{token_id}", headers=_bearer(admin),
                           json={"expires_at": "2000-01-01T00:00:00Z"})
    assert expired.status_code == 200 and expired.json()["active"] is False
    denied = client.get("/api/v1/datasets", headers=_bearer(secret))
    assert denied.status_code == 401 and "expired" in denied.json()["detail"]
    client.patch(f"/api/v1/tokens/{token_id}", headers=_bearer(admin), json={"expires_at": None})
    assert client.get("/api/v1/datasets", headers=_bearer(secret)).status_code == 200
    revoked = client.post(f"/api/v1/tokens/{token_id}/revoke", headers=_bearer(admin))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    denied = client.get("/api/v1/datasets", headers=_bearer(secret))
    assert denied.status_code == 401 and "revoked" in denied.json()["detail"]
    assert [t["name"] for t in client.get("/api/v1/tokens", headers=_bearer(admin)).json()] \
        == ["root"]
    actions = [(e["actor"], e["action"]) for e in
               client.get("/api/v1/audit", headers=_bearer(admin)).json()["items"]]
    assert actions == [("root", "token.revoke"), ("root", "token.expire"),
                       ("root", "token.expire"), ("root", "token.create"),
                       ("cli", "token.create")]
    engine.dispose()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", "token", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_tokens_through_the_cli_create_list_expire_revoke(fresh_db):
    env = {**os.environ, "DQPULSE_DATABASE_URL": fresh_db}
    created = _cli(env, "create", "--name", "etl", "--role", "editor", "--team", "payments",
                   "--team", "growth", "--expires-in", "90d")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("dqp_") and "role=editor" in created.stderr
    client = TestClient(create_app(Settings(database_url=fresh_db)))
    assert client.get("/api/v1/datasets", headers=_bearer(secret)).status_code == 200
    listed = _cli(env, "list").stdout
    assert "etl\trole=editor\tteams=growth,payments\texpires=" in listed
    assert secret not in listed
    assert "already exists" in _cli(env, "create", "--name", "etl").stderr
    assert _cli(env, "expire", "etl").returncode == 0
    assert client.get("/api/v1/datasets", headers=_bearer(secret)).status_code == 401
    assert _cli(env, "expire", "etl", "--in", "1h").returncode == 0
    assert client.get("/api/v1/datasets", headers=_bearer(secret)).status_code == 200
    revoked = _cli(env, "revoke", "etl")
    assert revoked.returncode == 0 and revoked.stdout.rstrip().endswith("revoked")
    assert client.get("/api/v1/datasets", headers=_bearer(secret)).status_code == 401
    missing = _cli(env, "revoke", "nobody")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
