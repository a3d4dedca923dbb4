"""What people do to incidents (the API's actions): acknowledge, resolve, give a verdict.

Each runs in the caller's transaction, writes an audit row and queues the notifications
for the channels already told about the incident, like the automatic transitions in
:mod:`dqpulse.alerts.incidents`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dqpulse.alerts import outbox
from dqpulse.alerts.closing import channels_told, close
from dqpulse.errors import ConflictError, ValidationError
from dqpulse.spec import NotificationSpec
from dqpulse.store import incidents as incident_store
from dqpulse.utc import as_utc_or_now

VERDICTS = ("false_positive", "confirmed")


@dataclass(frozen=True)
class FeedbackTarget:
    """What a verdict is about, for the detectors: the series and windows of the alerts."""

    incident_id: int
    dataset: str
    metric: str | None
    field: str | None
    verdict: str
    window_starts: list[float]
    alerts: list[tuple[str, str, float]]


def acknowledge(conn: Connection, *, incident_id: int, actor: str, comment: str | None = None,
                notifications: Sequence[NotificationSpec] = (), public_url: str = "",
                now: datetime | None = None) -> dict[str, Any]:
    """Move an open incident to acknowledged; 409 (ConflictError) from any other status."""
    now = as_utc_or_now(now)
    row = incident_store.get_or_raise(conn, incident_id=incident_id, for_update=True)
    if row["status"] != "open":
        raise ConflictError(f"incident {incident_id} is {row['status']}; only an open "
                            "incident can be acknowledged")
    incident_store.update(conn, incident_id=incident_id, status="acknowledged",
                                 acknowledged_at=now)
    incident_store.create_event(conn, incident_id=incident_id, action="acknowledged",
                                actor=actor, comment=comment, at=now)
    fresh = incident_store.get_or_raise(conn, incident_id=incident_id)
    outbox.enqueue(conn, incident=fresh, event="acknowledged",
                   channels=channels_told(conn, fresh, notifications), public_url=public_url,
                   now=now, actor=actor, comment=comment)
    return incident_store.get_or_raise(conn, incident_id=incident_id)


def resolve(conn: Connection, *, incident_id: int, actor: str, comment: str | None = None,
            notifications: Sequence[NotificationSpec] = (), public_url: str = "",
            now: datetime | None = None) -> dict[str, Any]:
    """Resolve an open or acknowledged incident; 409 (ConflictError) if already resolved."""
    now = as_utc_or_now(now)
    row = incident_store.get_or_raise(conn, incident_id=incident_id, for_update=True)
    if row["status"] == "resolved":
        raise ConflictError(f"incident {incident_id} is already resolved")
    close(conn, row, actor=actor, comment=comment, notifications=notifications,
             public_url=public_url, now=now)
    return incident_store.get_or_raise(conn, incident_id=incident_id)


def add_feedback(conn: Connection, *, incident_id: int, verdict: str, comment: str | None,
                 actor: str, notifications: Sequence[NotificationSpec] = (),
                 public_url: str = "", now: datetime | None = None) -> FeedbackTarget:
    """Record a human verdict; a false positive also resolves an active incident.

    Returns the series and windows the verdict is about, for the detectors' ``feedback``.
    """
    if verdict not in VERDICTS:
        raise ValidationError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    now = as_utc_or_now(now)
    row = incident_store.get_or_raise(conn, incident_id=incident_id, for_update=True)
    incident_store.update(conn, incident_id=incident_id, feedback=verdict)
    incident_store.create_event(conn, incident_id=incident_id, action=f"feedback.{verdict}",
                                actor=actor, comment=comment, at=now)
    if verdict == "false_positive" and row["status"] != "resolved":
        close(conn, row, actor=actor, comment=comment or "marked as a false positive",
                 notifications=notifications, public_url=public_url, now=now)
    alert_rows = incident_store.get_alerts(conn, incident_id=incident_id, limit=10_000)
    series = [(a["metric"], a["field"], float(a["window_start"])) for a in alert_rows]
    return FeedbackTarget(
        incident_id=incident_id, dataset=row["dataset"], metric=row.get("metric"),
        field=row.get("field"), verdict=verdict,
        window_starts=sorted({s[2] for s in series}), alerts=series)
