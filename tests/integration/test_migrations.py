"""Migrations are the only way the schema is made: head must equal the table metadata."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config

from dqpulse.store.db import MIGRATIONS_DIR, upgrade_to_head

pytestmark = pytest.mark.integration


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    return config


def test_postgres_schema_at_head_matches_the_table_metadata(pg_url):
    command.check(_config(pg_url))  # raises when autogenerate would find a difference


def test_sqlite_demo_schema_at_head_matches_the_table_metadata(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade_to_head(url)
    upgrade_to_head(url)  # idempotent
    command.check(_config(url))


def test_incident_impacts_are_filled_from_the_incidents_details(tmp_path):
    """The incidents an upgrade finds keep what they impact (one incident per break)."""
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'i.db'}"
    config = _config(url)
    command.upgrade(config, "0007")
    engine = create_engine(url)
    with engine.begin() as conn:
        for incident_id, details in ((1, '{"impacts": [{"dataset": "orders"}, '
                                         '{"dataset": "report"}]}'), (2, '{"kinds": []}'),
                                     (3, None)):
            conn.execute(text(
                "INSERT INTO incidents (id, dataset, kind, severity, status, dedup_key, "
                "opened_at, last_alert_at, summary, details) VALUES (:id, 'src', 'volume', "
                "'critical', 'open', 'k', '2026-01-01', '2026-01-01', 's', :details)"),
                {"id": incident_id, "details": details})
    command.upgrade(config, "head")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT incident_id, dataset FROM incident_impacts "
                                 "ORDER BY 1, 2")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(1, "orders"), (1, "report")]
