"""Repository of silences and maintenance windows (``silences``).

A silence matches by dataset, owner and kind; a column left empty matches everything, so
a silence with only a dataset is a maintenance window for that dataset. While a silence
is active (``starts_at <= now < ends_at``) alerts are still recorded and incidents still
change, but no notification is queued.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, insert, or_, select
from sqlalchemy import delete as sa_delete

from dqpulse.errors import NotFoundError
from dqpulse.store.incidents import aware
from dqpulse.store.tables import silences


def _row(mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for key in ("starts_at", "ends_at", "created_at"):
        row[key] = aware(row[key])
    return row


def create(conn: Connection, *, dataset: str | None, owner: str | None, kind: str | None,
           starts_at: datetime, ends_at: datetime, comment: str | None,
           created_by: str) -> dict[str, Any]:
    result = conn.execute(insert(silences).values(
        dataset=dataset, owner=owner, kind=kind, starts_at=starts_at, ends_at=ends_at,
        comment=comment, created_by=created_by,
    ).returning(silences.c.id))
    return get_or_raise(conn, silence_id=int(result.scalar_one()))


def get(conn: Connection, *, silence_id: int) -> dict[str, Any] | None:
    found = conn.execute(select(silences).where(silences.c.id == silence_id)).mappings().first()
    return None if found is None else _row(found)


def get_or_raise(conn: Connection, *, silence_id: int) -> dict[str, Any]:
    found = get(conn, silence_id=silence_id)
    if found is None:
        raise NotFoundError(f"silence {silence_id} does not exist")
    return found


def get_all(conn: Connection, *, active_at: datetime | None = None,
            include_expired: bool = True, now: datetime | None = None) -> list[dict[str, Any]]:
    """Silences newest first; ``active_at`` keeps those active then, ``include_expired=False``
    drops those that ended before ``now``."""
    query = select(silences)
    if active_at is not None:
        query = query.where(silences.c.starts_at <= active_at, silences.c.ends_at > active_at)
    if not include_expired and now is not None:
        query = query.where(silences.c.ends_at > now)
    return [_row(r) for r in conn.execute(query.order_by(silences.c.id.desc())).mappings()]


def get_active_for(conn: Connection, *, dataset: str, owner: str | None,
                   at: datetime) -> list[dict[str, Any]]:
    """Silences active at ``at`` whose dataset and owner match (kind is checked by caller)."""
    owner_match: ColumnElement[bool] = silences.c.owner.is_(None)
    if owner is not None:
        owner_match = or_(owner_match, silences.c.owner == owner)
    query = select(silences).where(
        silences.c.starts_at <= at, silences.c.ends_at > at,
        or_(silences.c.dataset.is_(None), silences.c.dataset == dataset),
        owner_match,
    ).order_by(silences.c.id)
    return [_row(r) for r in conn.execute(query).mappings()]


def delete(conn: Connection, *, silence_id: int) -> None:
    result = conn.execute(sa_delete(silences).where(silences.c.id == silence_id))
    if result.rowcount == 0:
        raise NotFoundError(f"silence {silence_id} does not exist")
