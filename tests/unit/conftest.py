"""SQLite at ``alembic upgrade head`` for the unit tests that need a database (no services):
migrated once per session, copied per test; bench scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

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


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (registered, so its dataclasses resolve)."""
    path = Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
