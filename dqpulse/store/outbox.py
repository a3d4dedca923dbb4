"""Repository of the transactional notification outbox (``notification_outbox``).

Rows are written in the same transaction as the incident change they announce; the
dispatcher claims due rows, delivers them and records the outcome. A row is ``pending``
until it is ``delivered`` or, after the retry budget, ``dead``. A claim does not change
the status: it pushes ``next_attempt_at`` forward by a lease, so a notifier that dies
mid-send leaves the row to be retried once the lease runs out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, func, insert, select, update
from sqlalchemy.orm import aliased

from dqpulse.store.incidents import ACTIVE_STATUSES, aware
from dqpulse.store.tables import incidents
from dqpulse.store.tables import notification_outbox as outbox

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"


def create(conn: Connection, *, incident_id: int, channel: str, event: str,
           idempotency_key: str, payload: dict[str, Any], now: datetime) -> int:
    result = conn.execute(insert(outbox).values(
        incident_id=incident_id, channel=channel, event=event,
        idempotency_key=idempotency_key, payload=payload, status=PENDING, attempts=0,
        next_attempt_at=now, created_at=now,
    ).returning(outbox.c.id))
    return int(result.scalar_one())


def notified_channels(conn: Connection, *, incident_id: int) -> set[str]:
    """Channels that have at least one outbox row for the incident (told about it)."""
    rows = conn.execute(select(outbox.c.channel).where(outbox.c.incident_id == incident_id)
                        .distinct())
    return {r.channel for r in rows}


def _row(mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for key in ("next_attempt_at", "created_at", "delivered_at"):
        if key in row:
            row[key] = aware(row[key])
    return row


def get_all(conn: Connection, *, incident_id: int) -> list[dict[str, Any]]:
    query = select(outbox).where(outbox.c.incident_id == incident_id).order_by(outbox.c.id)
    return [_row(r) for r in conn.execute(query).mappings()]


def get_by_key(conn: Connection, *, idempotency_key: str) -> dict[str, Any] | None:
    found = conn.execute(select(outbox).where(outbox.c.idempotency_key == idempotency_key)
                         ).mappings().first()
    return None if found is None else _row(found)


def count_by_status(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status))
    return {status: int(n) for status, n in rows}


def select_due(conn: Connection, *, now: datetime, channels: Sequence[str],
               limit: int) -> list[dict[str, Any]]:
    """Due pending rows of ``channels``, oldest first, locked (``FOR UPDATE SKIP LOCKED``).

    A row whose (incident, channel) chain has an earlier pending row that is not due yet
    (backing off or leased by another notifier) is left out: delivery runs in order.
    SQLite ignores the row lock; there a single process writes at a time anyway.
    """
    if not channels:
        return []
    earlier = aliased(outbox)
    blocked = exists().where(and_(
        earlier.c.incident_id == outbox.c.incident_id,
        earlier.c.channel == outbox.c.channel,
        earlier.c.id < outbox.c.id,
        earlier.c.status == PENDING,
        earlier.c.next_attempt_at > now,
    ))
    query = (select(outbox)
             .where(outbox.c.status == PENDING, outbox.c.next_attempt_at <= now,
                    outbox.c.channel.in_(list(channels)), ~blocked)
             .order_by(outbox.c.id).limit(limit)
             .with_for_update(skip_locked=True, of=outbox))
    return [_row(r) for r in conn.execute(query).mappings()]


def pending_chains(conn: Connection, *,
                   incident_ids: Iterable[int]) -> dict[tuple[int, str], list[int]]:
    """Ids of every pending row of the incidents, per (incident, channel), in order."""
    ids = sorted(set(incident_ids))
    chains: dict[tuple[int, str], list[int]] = {}
    if not ids:
        return chains
    rows = conn.execute(select(outbox.c.id, outbox.c.incident_id, outbox.c.channel)
                        .where(outbox.c.status == PENDING, outbox.c.incident_id.in_(ids))
                        .order_by(outbox.c.id))
    for r in rows:
        chains.setdefault((int(r.incident_id), r.channel), []).append(int(r.id))
    return chains


def lease(conn: Connection, *, ids: Sequence[int], until: datetime) -> None:
    if ids:
        conn.execute(update(outbox).where(outbox.c.id.in_(list(ids)))
                     .values(next_attempt_at=until))


def mark_delivered(conn: Connection, *, outbox_id: int, attempts: int, at: datetime) -> None:
    conn.execute(update(outbox).where(outbox.c.id == outbox_id, outbox.c.status == PENDING)
                 .values(status=DELIVERED, attempts=attempts, delivered_at=at,
                         next_attempt_at=at, last_error=None))


def mark_retry(conn: Connection, *, outbox_id: int, attempts: int, next_attempt_at: datetime,
               error: str) -> None:
    conn.execute(update(outbox).where(outbox.c.id == outbox_id, outbox.c.status == PENDING)
                 .values(attempts=attempts, next_attempt_at=next_attempt_at,
                         last_error=error[:2000]))


def mark_dead(conn: Connection, *, outbox_id: int, attempts: int, at: datetime,
              error: str) -> None:
    conn.execute(update(outbox).where(outbox.c.id == outbox_id, outbox.c.status == PENDING)
                 .values(status=DEAD, attempts=attempts, next_attempt_at=at,
                         last_error=error[:2000]))


def latest_delivered_for_active(conn: Connection, *,
                                channels: Sequence[str]) -> list[dict[str, Any]]:
    """The newest delivered row per (active incident, channel) among ``channels``."""
    if not channels:
        return []
    newest = (select(func.max(outbox.c.id).label("id"))
              .select_from(outbox.join(incidents, incidents.c.id == outbox.c.incident_id))
              .where(outbox.c.status == DELIVERED, outbox.c.channel.in_(list(channels)),
                     incidents.c.status.in_(ACTIVE_STATUSES))
              .group_by(outbox.c.incident_id, outbox.c.channel)).subquery()
    query = (select(outbox).where(outbox.c.id.in_(select(newest.c.id)),
                                  outbox.c.event != "resolved")
             .order_by(outbox.c.id))
    return [_row(r) for r in conn.execute(query).mappings()]
