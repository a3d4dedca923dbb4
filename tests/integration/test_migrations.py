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
