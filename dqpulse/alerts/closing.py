"""Closing an incident: resolve it and tell the channels that heard of it (the automatic
resolution in :mod:`dqpulse.alerts.incidents` and the API's actions share it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dqpulse.alerts import outbox
from dqpulse.spec import NotificationSpec
from dqpulse.store import incidents as incident_store
from dqpulse.store import outbox as outbox_store


def channels_told(conn: Connection, row: Mapping[str, Any],
                  notifications: Sequence[NotificationSpec]) -> list[str]:
    """Configured channels that already have a notification about the incident."""
    told = outbox_store.notified_channels(conn, incident_id=int(row["id"]))
    return [n.name for n in notifications if n.name in told]


def close(conn: Connection, row: Mapping[str, Any], *, actor: str, comment: str | None,
          notifications: Sequence[NotificationSpec], public_url: str, now: datetime,
          window_end: float | None = None) -> int:
    """Resolve the incident ``row`` (any status) and tell the channels that heard of it;
    returns the notifications queued. ``window_end`` is the event time it resolved at (the
    healthy window that resolved it); the reopen grace is counted from there."""
    incident_id = int(row["id"])
    values: dict[str, Any] = {"status": "resolved", "resolved_at": now, "flapping": False}
    if window_end is not None:
        values["details"] = {**(row.get("details") or {}), "resolved_window_end": window_end}
    incident_store.update(conn, incident_id=incident_id, **values)
    incident_store.create_event(conn, incident_id=incident_id, action="resolved", actor=actor,
                                comment=comment, at=now)
    fresh = incident_store.get_or_raise(conn, incident_id=incident_id)
    return outbox.enqueue(conn, incident=fresh, event="resolved",
                          channels=channels_told(conn, fresh, notifications),
                          public_url=public_url, now=now, actor=actor, comment=comment)
