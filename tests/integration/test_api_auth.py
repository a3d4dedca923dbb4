"""Bearer tokens: open until a token exists, then required on /api/v1 (probes stay open)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dqpulse.config import Settings
from dqpulse.store import tokens
from dqpulse.store.db import make_engine
from service.app import create_app

pytestmark = pytest.mark.integration


def test_api_requires_a_valid_token_once_one_exists(fresh_db):
    engine = make_engine(fresh_db)
    client = TestClient(create_app(Settings(database_url=fresh_db), engine=engine))
    assert client.get("/api/v1/datasets").status_code == 200  # open: no token yet
    with engine.begin() as conn:
        token = tokens.create(conn, name="ci", owner="payments")
    client = TestClient(create_app(Settings(database_url=fresh_db), engine=engine))
    denied = client.get("/api/v1/datasets")
    assert denied.status_code == 401
    assert "Bearer" in denied.json()["detail"]
    assert client.get("/api/v1/datasets",
                      headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/v1/datasets",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    with engine.begin() as conn:
        with pytest.raises(Exception, match="already exists"):
            tokens.create(conn, name="ci")
    engine.dispose()


def test_static_tokens_from_settings(fresh_db):
    settings = Settings(database_url=fresh_db, api_tokens="s3cret-one,s3cret-two")
    client = TestClient(create_app(settings))
    assert client.get("/api/v1/datasets").status_code == 401
    assert client.get("/api/v1/datasets",
                      headers={"Authorization": "Bearer s3cret-two"}).status_code == 200
