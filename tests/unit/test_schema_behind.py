"""A database this version cannot use (never migrated, or migrations missing) is named
as such, with what to do, by the CLI, the ingest worker, the API's requests and /readyz,
instead of a traceback, a bare exception name or "try again" (SQLite files through the
real migrations)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from dqpulse.config import Settings
from dqpulse.store.db import make_engine, schema_behind, upgrade_to_head
from service.app import create_app
from workers.ingest import _first_model

MIGRATE = "run `dqpulse migrate`"


def _at(tmp_path: Path, revision: str | None) -> str:
    """A SQLite file at ``revision`` (None: empty), as a URL."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    if revision is None:
        make_engine(url).dispose()
        return url
    from alembic import command
    from alembic.config import Config

    from dqpulse.store.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, revision)
    return url


@pytest.mark.parametrize(("revision", "said"), [
    (None, "no dqpulse schema yet (no migration applied)"),
    ("0012", "at revision 0012 and this version of dqpulse needs 0013"),
    ("head", None),
])
def test_a_schema_is_behind_when_it_lacks_this_versions_migrations(tmp_path, revision, said):
    engine = make_engine(_at(tmp_path, revision))
    behind = schema_behind(engine)
    if said is None:
        assert behind is None
    else:
        assert behind is not None and said in behind and behind.endswith(MIGRATE)
    engine.dispose()


def test_a_schema_a_newer_version_migrated_is_not_behind(tmp_path):
    """A rolling upgrade: the database is at a revision this version does not know."""
    url = _at(tmp_path, "head")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    assert schema_behind(engine) is None
    engine.dispose()


def test_the_cli_says_to_migrate_instead_of_a_traceback(tmp_path):
    env = dict(os.environ, DQPULSE_DATABASE_URL=_at(tmp_path, None), DQPULSE_LOG_FORMAT="text")
    spec = tmp_path / "dqpulse.yaml"
    spec.write_text("datasets:\n  - {name: orders, topic: orders, window: 1m}\n")
    for command in (["apply", "-f", str(spec)], ["token", "list"]):
        done = subprocess.run([sys.executable, "-m", "workers.cli", *command], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr == ("error: the database has no dqpulse schema yet (no migration "
                               f"applied): {MIGRATE}\n")


def test_a_worker_waiting_for_its_model_says_why_it_cannot_read_it(tmp_path, caplog):
    engine = make_engine(_at(tmp_path, None))
    stop = threading.Event()
    settings = Settings(database_url="sqlite://", model_poll_interval_s=0.01)
    threading.Timer(0.5, stop.set).start()
    with caplog.at_level(logging.WARNING, logger="workers.ingest"):
        assert _first_model(engine, settings, stop) is None
    said = [r.getMessage() for r in caplog.records if r.name == "workers.ingest"]
    # the first try, then once per 30 (not one line per try)
    assert 1 <= len(said) <= 3, said
    assert said[0] == ("cannot read the model (the database has no dqpulse schema yet (no "
                       f"migration applied): {MIGRATE}); retrying every 0.01s")
    engine.dispose()


def test_the_api_answers_503_saying_to_migrate_and_is_not_ready(tmp_path):
    url = _at(tmp_path, None)
    client = TestClient(create_app(Settings(database_url=url, auth="open")))
    answer = client.get("/api/v1/datasets")
    assert answer.status_code == 503
    assert answer.json()["detail"].endswith(MIGRATE)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["detail"].endswith(MIGRATE)
    upgrade_to_head(url)
    assert client.get("/api/v1/datasets").json() == []
    assert client.get("/readyz").status_code == 200
