"""Repository of the audit log (``audit_log``): every write through the API, with who did it."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from dqpulse.store.tables import audit_log
from dqpulse.utc import as_utc


def create(conn: Connection, *, actor: str, token_id: int | None, role: str, action: str,
           target: str, team: str | None, detail: dict[str, Any] | None = None) -> int:
    result = conn.execute(insert(audit_log).values(
        actor=actor, token_id=token_id, role=role, action=action, target=target[:300],
        team=team, detail=detail).returning(audit_log.c.id))
    return int(result.scalar_one())


def get_page(conn: Connection, *, teams: Collection[str] | None, before_id: int | None,
             limit: int, action: str | None = None) -> list[dict[str, Any]]:
    """Entries newest first; ``teams`` keeps those of these teams (None: every entry)."""
    query = select(audit_log)
    if teams is not None:
        query = query.where(audit_log.c.team.in_(sorted(teams)))
    if before_id is not None:
        query = query.where(audit_log.c.id < before_id)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    rows = conn.execute(query.order_by(audit_log.c.id.desc()).limit(limit)).mappings()
    return [{**r, "at": as_utc(r["at"])} for r in rows]


def delete_before(conn: Connection, *, cutoff: datetime) -> int:
    """Delete the entries written before ``cutoff`` (retention); returns how many."""
    result = conn.execute(delete(audit_log).where(audit_log.c.at < cutoff))
    return int(result.rowcount or 0)
