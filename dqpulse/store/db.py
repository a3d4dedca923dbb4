"""Engine creation and transaction helpers (Postgres in production, SQLite for the demo)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``url``; SQLite gets WAL and foreign keys so the demo behaves like Postgres."""
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if memory else None,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One database transaction: committed on success, rolled back on any error."""
    with engine.begin() as conn:
        yield conn


def is_transient(exc: BaseException) -> bool:
    """Whether a failure may pass by itself, so that trying again as it is makes sense:
    the database went away or restarted, a deadlock or serialization failure, a statement
    timeout, a locked SQLite file, no connection free in the pool. Anything else (a value a
    column cannot hold, a constraint, a bug) fails the same way on every try.

    >>> from sqlalchemy.exc import DataError
    >>> is_transient(OperationalError("SELECT 1", {}, Exception("server closed")))
    True
    >>> is_transient(DataError("INSERT", {}, Exception("invalid byte sequence")))
    False
    >>> is_transient(TypeError("unsupported operand"))
    False
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError, PoolTimeout))


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def advisory_lock(conn: Connection, key: str) -> bool:
    """Take a transaction-scoped advisory lock on ``key`` (Postgres); True if taken.

    Serializes scoring of one dataset across workers; SQLite (single process) always
    returns True.
    """
    if not is_postgres(conn):
        return True
    return bool(
        conn.execute(text("SELECT pg_try_advisory_xact_lock(hashtext(:k))"), {"k": key}).scalar()
    )


def finalize_lock(dataset: str) -> str:
    """The advisory-lock key a finalize pass of ``dataset`` holds while it reads, scores
    and writes back the dataset's detector states and incidents; a human verdict that
    teaches those detectors takes it too (:func:`wait_advisory_lock`)."""
    return f"dqpulse:finalize:{dataset}"


def wait_advisory_lock(conn: Connection, key: str, timeout_s: float,
                       poll_s: float = 0.05) -> bool:
    """:func:`advisory_lock` on ``key``, tried until it is taken or ``timeout_s`` has
    passed (False then). Polled rather than waited on in the server, so that running out
    of time leaves the caller's transaction usable."""
    deadline = time.monotonic() + timeout_s
    while not advisory_lock(conn, key):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def session_advisory_lock(conn: Connection, key: str) -> bool:
    """Take a session-scoped advisory lock on ``key`` (Postgres), held across the
    session's transactions (a rollback keeps it) until :func:`release_session_lock`; True
    if taken. It excludes :func:`advisory_lock` on the same key in other sessions. SQLite
    (single process) always returns True."""
    if not is_postgres(conn):
        return True
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"),
                             {"k": key}).scalar())


def release_session_lock(conn: Connection, key: str) -> None:
    """Release :func:`session_advisory_lock` (outside any transaction of the caller's).
    When that fails (the connection broke), the connection is invalidated instead: its
    session ends, which releases the lock, and no pooled connection keeps it."""
    if not is_postgres(conn):
        return
    try:
        if conn.in_transaction():
            conn.rollback()
        with conn.begin():
            conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key})
    except Exception:  # noqa: BLE001 - the session ends instead, which releases it
        conn.invalidate()


def relaxed_commit(conn: Connection) -> None:
    """Let this transaction's commit return before its WAL reaches the disk (Postgres:
    ``synchronous_commit`` off for it alone): visible to every session at once and lost
    only if Postgres itself crashes within a fraction of a second; SQLite: nothing."""
    if is_postgres(conn):
        conn.execute(text("SET LOCAL synchronous_commit TO OFF"))


def upgrade_to_head(url: str) -> None:
    """Run the Alembic migrations up to head on ``url``."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


def schema_behind(engine: Engine) -> str | None:
    """Why this database cannot serve this version of dqpulse: no schema yet, or one
    missing migrations this version has (``dqpulse migrate`` fixes both); None when it is
    at this version's head, or at a revision this version does not know (a newer
    dqpulse migrated it: a rolling upgrade, not a fault here). Raises what the database
    raises when it cannot be asked."""
    quiet = logging.getLogger("alembic")  # its INFO lines say nothing to a user here
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        from alembic.runtime.migration import MigrationContext

        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
        script = _migration_scripts()
    finally:
        quiet.setLevel(level)
    heads = set(script.get_heads())
    if current == heads:
        return None
    if not current:
        return ("the database has no dqpulse schema yet (no migration applied): "
                "run `dqpulse migrate`")
    known = {revision.revision for revision in script.walk_revisions()}
    if not current <= known:
        return None
    return (f"the database schema is at revision {', '.join(sorted(current))} and this "
            f"version of dqpulse needs {', '.join(sorted(heads))}: run `dqpulse migrate`")


def schema_behind_if_known(engine: Engine) -> str | None:
    """:func:`schema_behind`, or None when the database cannot even be asked (its
    callers report that failure on their own)."""
    try:
        return schema_behind(engine)
    except SQLAlchemyError:
        return None


@functools.cache
def _migration_scripts() -> ScriptDirectory:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config)
