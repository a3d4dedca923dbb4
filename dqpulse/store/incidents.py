"""Repository of incidents, their alerts and their audit trail (``incident_events``).

Keyword-only functions over an open ``Connection``; the caller owns the transaction, so an
incident change, its alerts, its audit row and its notification rows commit together.
Times are timezone-aware UTC ``datetime`` objects on the way in and out (SQLite hands back
naive values, which :func:`aware` reads as UTC).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, insert, or_, select, text
from sqlalchemy import update as sa_update

from dqpulse.errors import NotFoundError
from dqpulse.store.db import is_postgres
from dqpulse.store.tables import alerts, incident_events, incident_impacts, incidents
from dqpulse.utc import as_utc

ACTIVE_STATUSES = ("open", "acknowledged")
# pg_advisory_xact_lock(namespace, key): the namespace keeps these apart from other locks
_BREAK_LOCK_NAMESPACE = 0x64715F14  # "dq_" 14


def lock_datasets(conn: Connection, *, names: Iterable[str]) -> int:
    """Take the transaction-scoped lock of each dataset in ``names`` (Postgres; SQLite's
    single writer serializes anyway), waiting for it; returns the locks taken.

    Always in ascending key order, so two transactions that lock overlapping sets never
    wait on each other crosswise. Two names with one key share a lock (harmless)."""
    if not is_postgres(conn):
        return 0
    keys = sorted({zlib.crc32(name.encode()) - 2**31 for name in names})
    for key in keys:
        conn.execute(text("SELECT pg_advisory_xact_lock(CAST(:namespace AS integer), "
                          "CAST(:key AS integer))"),
                     {"namespace": _BREAK_LOCK_NAMESPACE, "key": key})
    return len(keys)


def aware(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime (SQLite returns naive UTC values)."""
    return None if value is None else as_utc(value)


def _row(mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for key in ("opened_at", "acknowledged_at", "resolved_at", "last_alert_at"):
        if key in row:
            row[key] = aware(row[key])
    return row


def get(conn: Connection, *, incident_id: int, for_update: bool = False) -> dict[str, Any] | None:
    query = select(incidents).where(incidents.c.id == incident_id)
    if for_update:
        query = query.with_for_update()
    found = conn.execute(query).mappings().first()
    return None if found is None else _row(found)


def get_or_raise(conn: Connection, *, incident_id: int,
                 for_update: bool = False) -> dict[str, Any]:
    found = get(conn, incident_id=incident_id, for_update=for_update)
    if found is None:
        raise NotFoundError(f"incident {incident_id} does not exist")
    return found


def get_all_active(conn: Connection, *, dataset: str,
                   for_update: bool = True) -> list[dict[str, Any]]:
    query = (select(incidents)
             .where(incidents.c.dataset == dataset, incidents.c.status.in_(ACTIVE_STATUSES))
             .order_by(incidents.c.id))
    if for_update:
        query = query.with_for_update()
    return [_row(r) for r in conn.execute(query).mappings()]


def get_last_resolved(conn: Connection, *, dataset: str,
                      dedup_key: str) -> dict[str, Any] | None:
    """The newest resolved incident with ``dedup_key`` (the caller decides, in event time,
    whether it is recent enough to reopen)."""
    query = (select(incidents)
             .where(incidents.c.dataset == dataset, incidents.c.dedup_key == dedup_key,
                    incidents.c.status == "resolved")
             .order_by(incidents.c.id.desc()).limit(1).with_for_update())
    found = conn.execute(query).mappings().first()
    return None if found is None else _row(found)


def count_active(conn: Connection, *, dataset: str) -> int:
    """Active incidents of ``dataset`` itself (not those it is an impact of)."""
    return int(conn.execute(
        select(func.count()).select_from(incidents)
        .where(incidents.c.dataset == dataset, incidents.c.status.in_(ACTIVE_STATUSES))
    ).scalar_one())


def count_active_impacts(conn: Connection, *, dataset: str) -> int:
    """Active incidents of other datasets (upstream roots) that ``dataset`` is an impact of."""
    return int(conn.execute(
        select(func.count()).select_from(incidents)
        .where(incidents.c.id.in_(_impacting([dataset])), incidents.c.dataset != dataset,
               incidents.c.status.in_(ACTIVE_STATUSES))
    ).scalar_one())


def _impacting(datasets: Collection[str]) -> Any:
    """Ids of the incidents that impact any of ``datasets`` (a subquery)."""
    return (select(incident_impacts.c.incident_id)
            .where(incident_impacts.c.dataset.in_(sorted(datasets))))


def _of(datasets: Collection[str], with_impacts: bool) -> ColumnElement[bool]:
    own = incidents.c.dataset.in_(sorted(datasets))
    return or_(own, incidents.c.id.in_(_impacting(datasets))) if with_impacts else own


def create_impact(conn: Connection, *, incident_id: int, dataset: str) -> None:
    """Record that incident ``incident_id`` impacts ``dataset`` (once; the caller holds
    the incident's row lock)."""
    known = conn.execute(select(incident_impacts.c.dataset).where(
        incident_impacts.c.incident_id == incident_id,
        incident_impacts.c.dataset == dataset)).first()
    if known is None:
        conn.execute(insert(incident_impacts).values(incident_id=incident_id, dataset=dataset))


def get_impacted(conn: Connection, *, incident_id: int) -> list[str]:
    """The datasets incident ``incident_id`` impacts, by name."""
    return get_impacted_all(conn, incident_ids=[incident_id]).get(incident_id, [])


def get_impacted_all(conn: Connection, *, incident_ids: Collection[int]) -> dict[int, list[str]]:
    """The datasets each of ``incident_ids`` impacts, by name (those without: absent)."""
    if not incident_ids:
        return {}
    out: dict[int, list[str]] = {}
    for incident_id, name in conn.execute(
            select(incident_impacts.c.incident_id, incident_impacts.c.dataset)
            .where(incident_impacts.c.incident_id.in_(sorted(incident_ids)))
            .order_by(incident_impacts.c.incident_id, incident_impacts.c.dataset)):
        out.setdefault(int(incident_id), []).append(str(name))
    return out


def get_page(conn: Connection, *, dataset: str | None = None, statuses: Sequence[str] = (),
             kind: str | None = None, since: datetime | None = None,
             before_id: int | None = None, limit: int = 50,
             datasets: Collection[str] | None = None,
             with_impacts: bool = False) -> list[dict[str, Any]]:
    """Incidents newest first (``id`` descending), starting below ``before_id``;
    ``datasets`` keeps those of these datasets (a caller's teams). ``with_impacts``: also
    the incidents that impact ``dataset`` (and ``datasets``), upstream roots of a break."""
    query = select(incidents)
    if datasets is not None:
        query = query.where(_of(datasets, with_impacts))
    if dataset is not None:
        query = query.where(_of([dataset], with_impacts))
    if statuses:
        query = query.where(incidents.c.status.in_(list(statuses)))
    if kind is not None:
        query = query.where(incidents.c.kind == kind)
    if since is not None:
        query = query.where(incidents.c.opened_at >= since)
    if before_id is not None:
        query = query.where(incidents.c.id < before_id)
    query = query.order_by(incidents.c.id.desc()).limit(limit)
    return [_row(r) for r in conn.execute(query).mappings()]


def create(conn: Connection, **values: Any) -> int:
    result = conn.execute(insert(incidents).values(**values).returning(incidents.c.id))
    return int(result.scalar_one())


def update(conn: Connection, *, incident_id: int, **values: Any) -> None:
    conn.execute(sa_update(incidents).where(incidents.c.id == incident_id).values(**values))


def next_event_seq(conn: Connection, *, incident_id: int) -> int:
    """Advance and return the incident's notification sequence (row is locked by caller)."""
    current = conn.execute(select(incidents.c.event_seq)
                           .where(incidents.c.id == incident_id)).scalar_one()
    seq = int(current) + 1
    conn.execute(sa_update(incidents).where(incidents.c.id == incident_id).values(event_seq=seq))
    return seq


def create_alerts(conn: Connection, *, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(alerts), rows)


def get_alerts(conn: Connection, *, incident_id: int, limit: int = 500) -> list[dict[str, Any]]:
    query = (select(alerts).where(alerts.c.incident_id == incident_id)
             .order_by(alerts.c.window_start, alerts.c.id).limit(limit))
    out = []
    for r in conn.execute(query).mappings():
        row = dict(r)
        row["created_at"] = aware(row["created_at"])
        out.append(row)
    return out


def create_event(conn: Connection, *, incident_id: int, action: str, actor: str,
                 comment: str | None = None, at: datetime | None = None) -> None:
    values: dict[str, Any] = {"incident_id": incident_id, "action": action, "actor": actor,
                              "comment": comment}
    if at is not None:
        values["at"] = at
    conn.execute(insert(incident_events).values(**values))


def get_events(conn: Connection, *, incident_id: int) -> list[dict[str, Any]]:
    query = (select(incident_events).where(incident_events.c.incident_id == incident_id)
             .order_by(incident_events.c.id))
    out = []
    for r in conn.execute(query).mappings():
        row = dict(r)
        row["at"] = aware(row["at"])
        out.append(row)
    return out
