"""Daily partitions of ``metric_points`` on Postgres, and deletion by time everywhere.

Postgres: ``metric_points`` is partitioned by range of ``window_start``, one partition per
UTC day (``metric_points_pYYYYMMDD``) and a DEFAULT partition (``metric_points_default``)
that takes any window outside the created days, so a write never fails for a missing
partition. :func:`ensure_partitions` creates the days ahead and moves rows that landed in
the DEFAULT partition into a day of their own; :func:`drop_partitions_before` drops whole
expired days (a catalog change, not a scan). SQLite (the demo) has one plain table:
:func:`delete_points_before` deletes by time there, and in the DEFAULT partition.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, text

from dqpulse.store.tables import incidents, metric_points, metric_rollups

DAY = 86_400.0
PARENT = "metric_points"
DEFAULT_PARTITION = "metric_points_default"
_DAY_NAME = re.compile(r"^metric_points_p(\d{8})$")
# a partition that is being filled before it is attached
_STAGING = "metric_points_staging"


def is_partition_name(name: str) -> bool:
    """True for the tables that are partitions of ``metric_points`` (Alembic skips them:
    they are made by the migration and this module, not by the table metadata)."""
    return bool(_DAY_NAME.match(name)) or name in (DEFAULT_PARTITION, _STAGING)


def partition_name(day_start: float) -> str:
    return "metric_points_p" + datetime.fromtimestamp(day_start, UTC).strftime("%Y%m%d")


def day_floor(at: float) -> float:
    return float(int(at // DAY) * DAY)


@dataclass(frozen=True, slots=True)
class DroppedPartition:
    name: str
    day_start: float
    seconds: float


def is_partitioned(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    return bool(conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table t JOIN pg_class c "
        "ON c.oid = t.partrelid WHERE c.relname = :parent "
        "AND c.relnamespace = to_regnamespace(current_schema())::oid)"),
        {"parent": PARENT}).scalar())


def day_partitions(conn: Connection) -> dict[float, str]:
    """The day partitions of ``metric_points``: day start -> table name."""
    rows = conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :parent "
        "AND p.relnamespace = to_regnamespace(current_schema())::oid"), {"parent": PARENT})
    days: dict[float, str] = {}
    for (name,) in rows:
        match = _DAY_NAME.match(name)
        if match:
            day = datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC)
            days[day.timestamp()] = name
    return days


def create_day(conn: Connection, day_start: float) -> str:
    """Create the partition of the UTC day at ``day_start``; rows of that day found in the
    DEFAULT partition move into it (a new range may not overlap rows kept there)."""
    name = partition_name(day_start)
    lo, hi = repr(float(day_start)), repr(float(day_start + DAY))
    conn.exec_driver_sql(
        f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    conn.exec_driver_sql(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE window_start >= {lo} "
        f"AND window_start < {hi} RETURNING *) INSERT INTO {name} SELECT * FROM moved")
    conn.exec_driver_sql(
        f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})")
    return name


def ensure_partitions(conn: Connection, *, now: float, ahead_days: int, keep_from: float,
                      max_new: int = 64) -> list[str]:
    """Create the day partitions from yesterday to ``ahead_days`` after today, and one per
    day that has rows in the DEFAULT partition (not before ``keep_from``, the retention
    cutoff: those rows are deleted instead). At most ``max_new`` per call."""
    if not is_partitioned(conn):
        return []
    existing = day_partitions(conn)
    today = day_floor(now)
    wanted = {today + DAY * offset for offset in range(-1, ahead_days + 1)}
    wanted.update(float(row[0]) for row in conn.execute(text(
        f"SELECT DISTINCT floor(window_start / {DAY!r}) * {DAY!r} FROM {DEFAULT_PARTITION} "
        "WHERE window_start >= :keep"), {"keep": keep_from}))
    missing = sorted(day for day in wanted if day not in existing and day >= keep_from)
    # the newest first: the days that are written now matter most
    return [create_day(conn, day) for day in sorted(missing, reverse=True)[:max_new]]


def drop_partitions_before(conn: Connection, cutoff: float) -> list[DroppedPartition]:
    """Drop every day partition that ends at or before ``cutoff``, each timed."""
    if not is_partitioned(conn):
        return []
    dropped = []
    # wait at most 5 s for readers of the parent; the next pass retries
    conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
    for day, name in sorted(day_partitions(conn).items()):
        if day + DAY <= cutoff:
            began = time.perf_counter()
            conn.exec_driver_sql(f"DROP TABLE {name}")
            dropped.append(DroppedPartition(name, day, time.perf_counter() - began))
    return dropped


def delete_points_before(conn: Connection, cutoff: float) -> int:
    """Delete points of windows that start before ``cutoff``: the whole table on SQLite,
    only the DEFAULT partition on Postgres (the days are dropped whole)."""
    if is_partitioned(conn):
        result = conn.execute(text(
            f"DELETE FROM {DEFAULT_PARTITION} WHERE window_start < :cutoff"),
            {"cutoff": cutoff})
    else:
        result = conn.execute(delete(metric_points).where(
            metric_points.c.window_start < cutoff))
    return int(result.rowcount or 0)


def delete_rollups_before(conn: Connection, *, resolution: int, cutoff: float) -> int:
    result = conn.execute(delete(metric_rollups).where(
        metric_rollups.c.resolution == resolution, metric_rollups.c.bucket_start < cutoff))
    return int(result.rowcount or 0)


def delete_resolved_incidents_before(conn: Connection, cutoff: datetime) -> int:
    """Delete incidents resolved before ``cutoff`` (their alerts, events and notifications
    go with them: ON DELETE CASCADE). Open and acknowledged incidents are kept."""
    result = conn.execute(delete(incidents).where(
        incidents.c.status == "resolved", incidents.c.resolved_at < cutoff))
    return int(result.rowcount or 0)
