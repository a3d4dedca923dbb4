"""Migration 0004: tokens made before roles keep working, scoped as closely as they can be."""

from __future__ import annotations

import json

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from dqpulse.services import tokens as token_service
from dqpulse.store.db import MIGRATIONS_DIR, make_engine

pytestmark = pytest.mark.integration


def _json(value: object) -> object:
    """A JSON column read with raw SQL: parsed by psycopg, a string from SQLite."""
    return json.loads(value) if isinstance(value, str) else value


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_old_tokens_become_team_editors_or_admins_and_downgrade_works(dialect, fresh_db,
                                                                        tmp_path):
    url = fresh_db if dialect == "postgresql" else f"sqlite:///{tmp_path / 'm.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    if dialect == "postgresql":  # fresh_db is at head already: go back to before roles
        command.downgrade(config, "0003")
    else:
        command.upgrade(config, "0003")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO api_tokens (name, token_hash, owner) VALUES "
                          "('team', :a, 'payments'), ('global', :b, NULL)"),
                     {"a": "a" * 64, "b": "b" * 64})
    command.upgrade(config, "0004")
    with engine.connect() as conn:
        rows = {row.name: row for row in conn.execute(text(
            "SELECT name, role, teams FROM api_tokens"))}
    assert (rows["team"].role, rows["global"].role) == ("editor", "admin")
    assert [_json(rows["team"].teams), _json(rows["global"].teams)] == [["payments"], []]
    token, row = token_service.create_token(engine, name="new", role="viewer",
                                            teams=["growth"])
    assert row["teams"] == ["growth"] and token.startswith("dqp_")
    command.downgrade(config, "0003")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM api_tokens")).scalar() == 3
    engine.dispose()
