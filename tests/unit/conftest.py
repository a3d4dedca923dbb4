"""SQLite at ``alembic upgrade head`` for the unit tests that need a database (no services):
migrated once per session, copied per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from dqpulse.store.db import make_engine, upgrade_to_head


@pytest.fixture(scope="session")
def _migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("unit-db") / "template.db"
    upgrade_to_head(f"sqlite:///{path}")
    return path


@pytest.fixture
def engine(_migrated_template: Path, tmp_path: Path) -> Iterator[Engine]:
    target = tmp_path / "unit.db"
    target.write_bytes(_migrated_template.read_bytes())
    eng = make_engine(f"sqlite:///{target}")
    yield eng
    eng.dispose()
