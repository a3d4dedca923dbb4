"""PagerDuty Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/overview).

``trigger`` on opened/reopened/escalated, ``acknowledge`` and ``resolve`` on those
events, all with ``dedup_key`` = the incident's dedup key, so PagerDuty folds every event
of one incident into one alert. ``secret`` is the integration's routing key; it goes only
into the request body, never into the outbox. PagerDuty answers ``202``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dqpulse.alerts.notifiers.base import (
    Notifier,
    OutgoingRequest,
    dumps,
    facts,
    register,
    title,
)
from dqpulse.errors import ConfigError

_ACTION = {"opened": "trigger", "reopened": "trigger", "escalated": "trigger",
           "impact": "trigger",
           "acknowledged": "acknowledge", "resolved": "resolve"}
SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


def payload(message: Mapping[str, Any], *, routing_key: str) -> dict[str, Any]:
    action = _ACTION[str(message["event"])]
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": str(message["dedup_key"]),
    }
    if action == "trigger":
        body["payload"] = {
            "summary": f"{title(message)}: {message.get('summary') or ''}"[:1024],
            "source": f"dqpulse/{message['dataset']}",
            "severity": SEVERITY.get(str(message["severity"]), "warning"),
            "timestamp": message.get("occurred_at"),
            "component": message["dataset"],
            "group": message.get("owner") or "unassigned",
            "class": message["kind"],
            "custom_details": dict(facts(message)) | {
                "incident_id": message["incident_id"],
                "idempotency_key": message["idempotency_key"]},
        }
        body["links"] = [{"href": message["incident_url"],
                          "text": f"dqpulse incident #{message['incident_id']}"}]
        body["client"] = "dqpulse"
        body["client_url"] = message["incident_url"]
    return body


@register
class PagerDutyNotifier(Notifier):
    """Sends Events API v2 events; ``secret`` is the routing (integration) key.

    >>> from datetime import UTC, datetime
    >>> from dqpulse.spec import NotificationSpec
    >>> from dqpulse.alerts.notifiers.base import example_message
    >>> n = PagerDutyNotifier(NotificationSpec(name="p", type="pagerduty",
    ...     url="https://events.pagerduty.com/v2/enqueue", secret="R0UT1NGKEY"))
    >>> n.build(example_message(), now=datetime(2026, 1, 1, tzinfo=UTC)).json()["event_action"]
    'trigger'
    """

    type = "pagerduty"

    def validate_spec(self) -> None:
        super().validate_spec()
        if not self.spec.secret:
            raise ConfigError(f"notifications[{self.spec.name}].secret: PagerDuty needs the "
                              "integration's routing key")

    def build(self, message: Mapping[str, Any], *, now: datetime) -> OutgoingRequest:
        assert self.spec.secret is not None
        return OutgoingRequest("POST", self.spec.url, self.headers(message),
                               dumps(payload(message, routing_key=self.spec.secret)))
