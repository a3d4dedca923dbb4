"""Prometheus Alertmanager's v2 API (``POST /api/v2/alerts``).

Each incident is one alert with labels ``{alertname="DqpulseIncident", dataset, kind,
severity, incident_id, owner}`` and annotations ``{summary, description, incident_url}``,
so users reuse their Alertmanager routing, grouping, silences and receivers. Alertmanager
keeps an alert firing until its ``endsAt``; dqpulse sends ``endsAt = now + hold_s`` while an
incident is active (and the notify worker re-sends active incidents well within the hold,
see :func:`dqpulse.alerts.dispatch.refresh_firing`) and ``endsAt = now`` on resolve. An
escalation changes the ``severity`` label, that is the alert's identity, so it ends the
alert under the old severity in the same request. Posting the same labels again is
idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from dqpulse.alerts.notifiers.base import (
    Notifier,
    OutgoingRequest,
    description,
    dumps,
    register,
)
from dqpulse.spec import NotificationSpec

ALERT_NAME = "DqpulseIncident"
DEFAULT_HOLD_S = 3600.0


def base_url(url: str) -> str:
    url = url.rstrip("/")
    for suffix in ("/api/v2/alerts", "/api/v2"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def labels(message: Mapping[str, Any], *, severity: str | None = None) -> dict[str, str]:
    out = {
        "alertname": ALERT_NAME,
        "dataset": str(message["dataset"]),
        "kind": str(message["kind"]),
        "severity": str(severity or message["severity"]),
        "incident_id": str(message["incident_id"]),
    }
    if message.get("owner"):
        out["owner"] = str(message["owner"])
    return out


def alerts(message: Mapping[str, Any], *, now: datetime,
           hold_s: float = DEFAULT_HOLD_S) -> list[dict[str, Any]]:
    """The alert list announcing ``message`` at ``now``."""
    annotations = {
        "summary": str(message.get("summary") or ""),
        "description": description(message),
        "incident_url": str(message["incident_url"]),
    }
    if message["event"] == "acknowledged" and message.get("actor"):
        annotations["acknowledged_by"] = str(message["actor"])
    starts_at = str(message.get("opened_at") or _iso(now))
    ends_at = now if message["event"] == "resolved" else now + timedelta(seconds=hold_s)
    alert = {"labels": labels(message), "annotations": annotations, "startsAt": starts_at,
             "endsAt": _iso(ends_at), "generatorURL": str(message["incident_url"])}
    out = [alert]
    previous = message.get("previous_severity")
    if message["event"] == "escalated" and previous and previous != message["severity"]:
        out.insert(0, {"labels": labels(message, severity=str(previous)),
                       "annotations": annotations, "startsAt": starts_at,
                       "endsAt": _iso(now), "generatorURL": str(message["incident_url"])})
    return out


@register
class AlertmanagerNotifier(Notifier):
    """Pushes incidents as alerts to Alertmanager (``url`` = its base URL).

    >>> from datetime import UTC, datetime
    >>> from dqpulse.spec import NotificationSpec
    >>> from dqpulse.alerts.notifiers.base import example_message
    >>> n = AlertmanagerNotifier(NotificationSpec(name="am", type="alertmanager",
    ...     url="http://127.0.0.1:9093"))
    >>> req = n.build(example_message(), now=datetime(2026, 1, 1, tzinfo=UTC))
    >>> req.url, req.json()[0]["labels"]["alertname"]
    ('http://127.0.0.1:9093/api/v2/alerts', 'DqpulseIncident')
    """

    type = "alertmanager"

    def __init__(self, spec: NotificationSpec, *, hold_s: float = DEFAULT_HOLD_S,
                 **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self.hold_s = hold_s

    def build(self, message: Mapping[str, Any], *, now: datetime) -> OutgoingRequest:
        body = alerts(message, now=now, hold_s=self.hold_s)
        return OutgoingRequest("POST", f"{base_url(self.spec.url)}/api/v2/alerts",
                               self.headers(message), dumps(body))
