"""The API while its database refuses connections (a restart, a failover): every request
answers a 503 problem with Retry-After that names no host, and the API
answers again as soon as the database is back (real Postgres, its database alone)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dqpulse.config import Settings
from dqpulse.store.db import make_engine
from service.app import create_app
from tests.integration.helpers import create_database, drop_database, set_connections

pytestmark = pytest.mark.integration


def test_the_api_answers_503_while_its_database_is_down_and_recovers(fresh_db, pg_admin_url):
    database = fresh_db.rsplit("/", 1)[1]
    engine = make_engine(fresh_db)
    client = TestClient(create_app(Settings(database_url=fresh_db, auth="open"), engine=engine))
    assert client.get("/api/v1/datasets").json() == []
    set_connections(pg_admin_url, database, allowed=False)
    try:
        for method, path, body in (("GET", "/api/v1/datasets", None),
                                   ("GET", "/api/v1/incidents", None),
                                   ("POST", "/api/v1/incidents/1/acknowledge", {})):
            answer = client.request(method, path, json=body)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.headers["Retry-After"] == "2"
            problem = answer.json()
            assert problem["error"] == "DatabaseUnavailable"
            assert "try again" in problem["detail"] and "127.0.0.1" not in problem["detail"]
    finally:
        set_connections(pg_admin_url, database, allowed=True)
    assert client.get("/api/v1/datasets").json() == []
    assert client.post("/api/v1/incidents/1/acknowledge", json={}).status_code == 404
    engine.dispose()


def test_the_api_on_a_postgres_database_never_migrated_says_to_migrate(pg_admin_url):
    """Postgres names a missing table differently (42P01, a ProgrammingError) from SQLite
    (tests/unit/test_schema_behind.py): the same 503 and readiness say what to do."""
    url = create_database(pg_admin_url, "dqpulse_t_empty", migrate=False)
    engine = make_engine(url)
    try:
        client = TestClient(create_app(Settings(database_url=url, auth="open"), engine=engine))
        for path in ("/api/v1/datasets", "/api/v1/incidents", "/readyz"):
            answer = client.get(path)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["detail"] == ("the database has no dqpulse schema yet (no "
                                               "migration applied): run `dqpulse migrate`")
    finally:
        engine.dispose()
        drop_database(pg_admin_url, url)
