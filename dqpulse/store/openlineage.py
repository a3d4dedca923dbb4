"""Repository of OpenLineage runs received (``openlineage_runs``) and of the outbox of
finalized windows to emit (``openlineage_outbox``).

The outbox works like the notification outbox (``store/outbox.py``): a row is written in
the window's finalize transaction and stays ``pending`` until the receiver took it; a
claim pushes ``next_attempt_at`` forward by a lease instead of changing the status, so a
sender that dies mid-send leaves the row to be sent again. There is no dead state: an
event is retried until delivered, so no window's event is lost to an outage.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from dqpulse.records import MetricPoint
from dqpulse.store.incidents import aware
from dqpulse.store.tables import metric_points
from dqpulse.store.tables import openlineage_outbox as outbox
from dqpulse.store.tables import openlineage_runs as runs

PENDING, DELIVERED = "pending", "delivered"
#: a row whose event could not be built, or that the receiver rejected, on every try
DEAD = "dead"


def create_run(conn: Connection, *, job: str, run_id: str, event_type: str,
               event_time: float, inputs: Sequence[str], outputs: Sequence[str]) -> bool:
    """Record one run event; False when that (job, run, event type) was already there."""
    found = conn.execute(select(runs.c.id).where(
        runs.c.job == job, runs.c.run_id == run_id, runs.c.event_type == event_type)).first()
    if found is not None:
        return False
    try:
        with conn.begin_nested():
            conn.execute(insert(runs).values(job=job, run_id=run_id, event_type=event_type,
                                             event_time=event_time, inputs=list(inputs),
                                             outputs=list(outputs)))
    except IntegrityError:  # a concurrent request recorded the same event
        return False
    return True


def get_runs(conn: Connection, *, jobs: Sequence[str] | None = None, start: float | None = None,
             end: float | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
    query = select(runs.c.job, runs.c.run_id, runs.c.event_type, runs.c.event_time,
                   runs.c.inputs, runs.c.outputs)
    if jobs is not None:
        query = query.where(runs.c.job.in_(list(jobs)))
    if start is not None:
        query = query.where(runs.c.event_time >= start)
    if end is not None:
        query = query.where(runs.c.event_time <= end)
    rows = conn.execute(query.order_by(runs.c.event_time.desc(), runs.c.id.desc()).limit(limit))
    return [dict(r) for r in rows.mappings()]


def get_failed_jobs(conn: Connection, *, start: float, end: float,
                    types: Sequence[str]) -> list[str]:
    """Jobs with an event of one of ``types`` between ``start`` and ``end``."""
    rows = conn.execute(select(runs.c.job).where(
        runs.c.event_type.in_(list(types)), runs.c.event_time >= start,
        runs.c.event_time <= end).distinct())
    return sorted(r.job for r in rows)


def get_jobs(conn: Connection, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Each job's newest event, with the nodes of all its events."""
    newest: dict[str, dict[str, Any]] = {}
    for row in get_runs(conn, limit=limit * 20):
        job = newest.setdefault(row["job"], {
            "job": row["job"], "last_event_type": row["event_type"],
            "last_event_time": row["event_time"], "inputs": [], "outputs": []})
        for key in ("inputs", "outputs"):
            job[key] += [n for n in row[key] or [] if n not in job[key]]
    return sorted(newest.values(), key=lambda j: j["job"])[:limit]


# ---- the emission outbox ----------------------------------------------------------------

def enqueue(conn: Connection, *, dataset: str, window_start: float, event: dict[str, Any],
            now: datetime) -> None:
    """One row per finalized window (a window finalized again replaces nothing): one
    ``INSERT .. ON CONFLICT DO NOTHING``, in the finalize transaction."""
    insert_fn = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(insert_fn(outbox).values(
        dataset=dataset, window_start=window_start, event=event, status=PENDING, attempts=0,
        next_attempt_at=now, created_at=now,
    ).on_conflict_do_nothing(index_elements=["dataset", "window_start"]))


def claim_due(conn: Connection, *, now: datetime, lease_s: float,
              limit: int) -> list[dict[str, Any]]:
    """Pending rows due at ``now``, oldest first, leased to the caller."""
    query = (select(outbox.c.id, outbox.c.dataset, outbox.c.window_start, outbox.c.event,
                    outbox.c.attempts)
             .where(outbox.c.status == PENDING, outbox.c.next_attempt_at <= now)
             .order_by(outbox.c.id).limit(limit))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    if rows:
        conn.execute(update(outbox).where(outbox.c.id.in_([r["id"] for r in rows]))
                     .values(next_attempt_at=now + timedelta(seconds=lease_s)))
    return rows


def mark_delivered(conn: Connection, *, row_id: int, now: datetime) -> None:
    conn.execute(update(outbox).where(outbox.c.id == row_id).values(
        status=DELIVERED, delivered_at=now, attempts=outbox.c.attempts + 1, last_error=None))


def mark_failed(conn: Connection, *, row_ids: Sequence[int], retry_at: datetime,
                error: str) -> None:
    """One failed pass: these rows wait until ``retry_at`` (one statement for all)."""
    if row_ids:
        conn.execute(update(outbox).where(outbox.c.id.in_(list(row_ids))).values(
            attempts=outbox.c.attempts + 1, next_attempt_at=retry_at, last_error=error[:500]))


def mark_dead(conn: Connection, *, row_id: int, error: str) -> None:
    """A row given up (kept for inspection; never claimed again)."""
    conn.execute(update(outbox).where(outbox.c.id == row_id).values(
        status=DEAD, attempts=outbox.c.attempts + 1, last_error=error[:500]))


def counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status))
    return {str(status): int(count) for status, count in rows}


def get_all(conn: Connection, *, dataset: str | None = None) -> list[dict[str, Any]]:
    query = select(outbox).order_by(outbox.c.id)
    if dataset is not None:
        query = query.where(outbox.c.dataset == dataset)
    out = []
    for row in conn.execute(query).mappings():
        item = dict(row)
        for key in ("next_attempt_at", "created_at", "delivered_at"):
            item[key] = aware(item[key])
        out.append(item)
    return out


def get_anomalous(conn: Connection, *, dataset: str,
                  window_start: float) -> list[tuple[str, str, float | None]]:
    """(metric, field, score) of the window's points the detectors flagged."""
    c = metric_points.c
    rows = conn.execute(select(c.metric, c.field, c.score).where(
        c.dataset == dataset, c.window_start == window_start, c.anomalous.is_(True))
        .order_by(c.metric, c.field))
    return [(r.metric, r.field, r.score) for r in rows]


def window_points(conn: Connection, *, dataset: str, window_start: float) -> list[MetricPoint]:
    """The stored points of one window (value and details), for its OpenLineage event."""
    c = metric_points.c
    rows = conn.execute(select(c.metric, c.field, c.value, c.explanation).where(
        c.dataset == dataset, c.window_start == window_start).order_by(c.metric, c.field))
    return [MetricPoint(r.metric, r.value, r.field or "", dict(r.explanation or {}))
            for r in rows]
