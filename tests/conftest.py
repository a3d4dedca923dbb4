"""Shared fixtures: the real local stack (deploy/local), a throwaway database, fresh topics."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "deploy" / "local" / "stack"

# Worker processes and in-process workers serve no probes unless a test asks for a port:
# the default (9108 and up) would collide between tests run side by side (pytest-xdist).
os.environ.setdefault("DQPULSE_WORKER_METRICS_PORT", "0")


def _stack_env() -> dict[str, str]:
    """Start (idempotently) the local stack and return the DQPULSE_* settings it prints."""
    result = subprocess.run([str(STACK), "up"], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"deploy/local/stack up failed:\n{result.stdout}\n{result.stderr}")
    env: dict[str, str] = {}
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip().strip("'\"")
    return env


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    if os.environ.get("DQPULSE_SKIP_STACK_UP") == "1":
        return {k: v for k, v in os.environ.items() if k.startswith("DQPULSE_")}
    return _stack_env()


@pytest.fixture(scope="session")
def pg_admin_url(stack_env: dict[str, str]) -> str:
    return stack_env.get("DQPULSE_DATABASE_URL",
                         "postgresql+psycopg://dqpulse@127.0.0.1:55432/dqpulse")


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A throwaway database at ``alembic upgrade head`` for this test session."""
    from tests.integration.helpers import throwaway_database

    with throwaway_database(pg_admin_url, "dqpulse_test") as url:
        yield url


@pytest.fixture
def fresh_db(pg_admin_url: str) -> Iterator[str]:
    """A database of its own for a test that runs several processes (no shared SAVEPOINT)."""
    from tests.integration.helpers import throwaway_database

    with throwaway_database(pg_admin_url, "dqpulse_t") as url:
        yield url


@pytest.fixture(params=["postgres", "sqlite"])
def store_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """The store on both databases it supports: Postgres (``db_engine``) and SQLite (a
    file at Alembic head), for repository code with a path per dialect."""
    if request.param == "postgres":
        yield request.getfixturevalue("db_engine")
        return
    from dqpulse.store.db import make_engine, upgrade_to_head

    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_to_head(url)
    sqlite = make_engine(url)
    yield sqlite
    sqlite.dispose()


@pytest.fixture
def db_engine(pg_url: str) -> Iterator[object]:
    """An engine whose every connection runs inside one outer transaction rolled back after
    the test (SAVEPOINT per test, as in Netflix/dispatch)."""
    from sqlalchemy import create_engine

    engine = create_engine(pg_url)
    connection = engine.connect()
    outer = connection.begin()
    yield _SavepointEngine(connection)
    outer.rollback()
    connection.close()
    engine.dispose()


class _SavepointEngine:
    """Minimal Engine stand-in: ``begin()``/``connect()`` yield SAVEPOINTs on one connection."""

    def __init__(self, connection: object) -> None:
        self._connection = connection
        self.dialect = connection.dialect  # type: ignore[attr-defined]

    def begin(self):  # type: ignore[no-untyped-def]
        from contextlib import contextmanager

        @contextmanager
        def scope():  # type: ignore[no-untyped-def]
            savepoint = self._connection.begin_nested()  # type: ignore[attr-defined]
            try:
                yield self._connection
            except BaseException:
                savepoint.rollback()
                raise
            else:
                savepoint.commit()

        return scope()

    connect = begin

    def dispose(self) -> None:
        pass


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_env: dict[str, str]) -> str:
    return stack_env.get("DQPULSE_KAFKA_BOOTSTRAP", "127.0.0.1:19092")


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """Create a fresh topic (unique name) with ``partitions`` partitions."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})

    def create(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                                replication_factor=1)])
        futures[name].result(timeout=30)
        return name

    return create


# ---- why a rerun test failed the first time ---------------------------------------------
# scripts/test retries a failed test once (--reruns 1) and the summary names each rerun,
# but not why its first attempt failed; the reasons are kept here and printed at the end,
# so a CI log says what went wrong even when the retry passed.
_RERUN_REASONS: list[tuple[str, str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.outcome == "rerun":
        _RERUN_REASONS.append((report.nodeid, report.when or "", report.longreprtext))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RERUN_REASONS:
        return
    terminalreporter.section("why the rerun tests failed the first time")
    for nodeid, when, text in _RERUN_REASONS:
        terminalreporter.write_line(f"{nodeid} ({when}):")
        # the end of the traceback holds the assertion or error; a whole one can be long
        terminalreporter.write_line(text[-3000:])
