"""Opsgenie Alert API (https://docs.opsgenie.com/docs/alert-api).

``url`` is the API base (``https://api.opsgenie.com`` or ``https://api.eu.opsgenie.com``),
``secret`` the API integration key (``Authorization: GenieKey ...``). opened/reopened/
escalated create an alert whose ``alias`` is the incident's dedup key (Opsgenie
de-duplicates open alerts by alias); acknowledged and resolved call the acknowledge and
close actions on that alias. Opsgenie answers ``202``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from dqpulse.alerts.notifiers.base import (
    Notifier,
    OutgoingRequest,
    description,
    dumps,
    facts,
    register,
    title,
)
from dqpulse.errors import ConfigError

PRIORITY = {"critical": "P1", "warning": "P3", "info": "P5"}


def base_url(url: str) -> str:
    url = url.rstrip("/")
    for suffix in ("/v2/alerts", "/v2"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url


def request_for(message: Mapping[str, Any], *, base: str) -> tuple[str, dict[str, Any]]:
    """(url, body) of the Alert API call announcing ``message``."""
    alias = str(message["dedup_key"])[:512]
    event = str(message["event"])
    if event in ("acknowledged", "resolved"):
        action = "acknowledge" if event == "acknowledged" else "close"
        url = f"{base}/v2/alerts/{quote(alias, safe='')}/{action}?identifierType=alias"
        note = message.get("comment") or f"{event} in dqpulse: {message['incident_url']}"
        return url, {"source": "dqpulse", "user": str(message.get("actor") or "dqpulse"),
                     "note": str(note)[:25000]}
    body = {
        "message": title(message)[:130],
        "alias": alias,
        "description": description(message)[:15000],
        "priority": PRIORITY.get(str(message["severity"]), "P3"),
        "source": "dqpulse",
        "entity": str(message["dataset"])[:512],
        "tags": [f"dataset:{message['dataset']}", f"kind:{message['kind']}",
                 f"severity:{message['severity']}", "dqpulse"],
        "details": {k: v for k, v in facts(message)} | {
            "incident_url": str(message["incident_url"]),
            "incident_id": str(message["incident_id"]),
            "idempotency_key": str(message["idempotency_key"])},
    }
    return f"{base}/v2/alerts", body


@register
class OpsgenieNotifier(Notifier):
    """Creates, acknowledges and closes Opsgenie alerts by alias.

    >>> from datetime import UTC, datetime
    >>> from dqpulse.spec import NotificationSpec
    >>> from dqpulse.alerts.notifiers.base import example_message
    >>> n = OpsgenieNotifier(NotificationSpec(name="o", type="opsgenie",
    ...     url="https://api.opsgenie.com", secret="K"))
    >>> n.build(example_message(), now=datetime(2026, 1, 1, tzinfo=UTC)).url
    'https://api.opsgenie.com/v2/alerts'
    """

    type = "opsgenie"

    def validate_spec(self) -> None:
        super().validate_spec()
        if not self.spec.secret:
            raise ConfigError(f"notifications[{self.spec.name}].secret: Opsgenie needs an "
                              "API integration key")

    def headers(self, message: Mapping[str, Any]) -> dict[str, str]:
        return super().headers(message) | {"Authorization": f"GenieKey {self.spec.secret}"}

    def build(self, message: Mapping[str, Any], *, now: datetime) -> OutgoingRequest:
        url, body = request_for(message, base=base_url(self.spec.url))
        return OutgoingRequest("POST", url, self.headers(message), dumps(body))
