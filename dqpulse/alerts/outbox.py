"""Incident change -> notification rows, in the caller's transaction (transactional outbox).

Each notifying change of an incident takes the next number of the incident's
``event_seq`` and writes one row per channel with the idempotency key
``f"{incident_id}:{event}:{seq}:{channel}"``: stable across retries and notifier restarts,
unique per channel. The row holds a channel-neutral *message* (no secrets): the notifier
builds the channel's payload from it at sending time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from dqpulse.store import incidents as incident_store
from dqpulse.store import outbox as outbox_store
from dqpulse.utc import as_utc

MESSAGE_VERSION = 1


def incident_url(public_url: str, incident_id: int) -> str:
    return f"{public_url.rstrip('/')}/api/v1/incidents/{incident_id}"


def idempotency_key(incident_id: int, event: str, seq: int, channel: str) -> str:
    """The key of one notification: same on every retry, different for every channel.

    >>> idempotency_key(12, "opened", 1, "payments-oncall")
    '12:opened:1:payments-oncall'
    """
    return f"{incident_id}:{event}:{seq}:{channel}"


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return as_utc(moment).isoformat().replace("+00:00", "Z")


def _epoch_iso(seconds: float | None) -> str | None:
    return None if seconds is None else _iso(datetime.fromtimestamp(seconds, UTC))


def build_message(incident: Mapping[str, Any], *, event: str, idempotency: str,
                  public_url: str, now: datetime, actor: str | None = None,
                  comment: str | None = None,
                  previous_severity: str | None = None) -> dict[str, Any]:
    """The channel-neutral message for one incident event (JSON-ready, secret-free)."""
    details = incident.get("details") or {}
    explanation = details.get("explanation") or {}
    return {
        "version": MESSAGE_VERSION,
        "event": event,
        "idempotency_key": idempotency,
        "incident_id": int(incident["id"]),
        "dataset": incident["dataset"],
        "kind": incident["kind"],
        "kinds": list(details.get("kinds") or [incident["kind"]]),
        "metric": incident.get("metric"),
        "field": incident.get("field") or "",
        "severity": incident["severity"],
        "previous_severity": previous_severity,
        "status": incident["status"],
        "summary": incident["summary"],
        "score": incident.get("score"),
        "dedup_key": incident["dedup_key"],
        "owner": incident.get("owner"),
        "opened_at": _iso(incident.get("opened_at")),
        "acknowledged_at": _iso(incident.get("acknowledged_at")),
        "resolved_at": _iso(incident.get("resolved_at")),
        "since": _epoch_iso(incident.get("first_window_start")),
        "window_start": details.get("window_start"),
        "window_end": details.get("window_end"),
        "expected_low": explanation.get("expected_low"),
        "expected_high": explanation.get("expected_high"),
        "observed": explanation.get("observed"),
        "direction": explanation.get("direction"),
        "alert_count": incident.get("alert_count"),
        # root cause (issue 14): the slice that carries it, the root, the datasets it hits
        "segment": explanation.get("segment"),
        "root": {"dataset": incident["dataset"], "incident_id": int(incident["id"])},
        "impacts": [{"dataset": i.get("dataset"), "owner": i.get("owner"),
                     "distance": i.get("distance"), "kinds": i.get("kinds")}
                    for i in details.get("impacts") or []],
        "incident_url": incident_url(public_url, int(incident["id"])),
        "occurred_at": _iso(now),
        "actor": actor,
        "comment": comment,
    }


def enqueue(conn: Connection, *, incident: Mapping[str, Any], event: str,
            channels: Sequence[str], public_url: str, now: datetime,
            actor: str | None = None, comment: str | None = None,
            previous_severity: str | None = None) -> int:
    """Write one outbox row per channel for ``event``; return how many were written."""
    if not channels:
        return 0
    incident_id = int(incident["id"])
    seq = incident_store.next_event_seq(conn, incident_id=incident_id)
    for channel in channels:
        key = idempotency_key(incident_id, event, seq, channel)
        message = build_message(incident, event=event, idempotency=key,
                                public_url=public_url, now=now, actor=actor,
                                comment=comment, previous_severity=previous_severity)
        outbox_store.create(conn, incident_id=incident_id, channel=channel, event=event,
                            idempotency_key=key, payload=message, now=now)
    return len(channels)
