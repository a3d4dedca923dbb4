"""The audit log: every write, with the identity of the token that made it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from dqpulse.access import Principal
from dqpulse.store import audit as audit_store


def record(conn: Connection, principal: Principal, *, action: str, target: str,
           team: str | None, detail: dict[str, Any] | None = None) -> None:
    """One audit entry, in the caller's transaction (it commits or rolls back with the write)."""
    audit_store.create(conn, actor=principal.name, token_id=principal.token_id,
                       role=principal.role, action=action, target=target, team=team,
                       detail={k: v for k, v in (detail or {}).items() if v is not None} or None)


def get_page(conn: Connection, principal: Principal, *, before_id: int | None, limit: int,
             action: str | None = None) -> list[dict[str, Any]]:
    """Entries newest first: an admin reads all, others the entries of their teams."""
    return audit_store.get_page(conn, teams=None if principal.is_admin else principal.teams,
                                before_id=before_id, limit=limit, action=action)
