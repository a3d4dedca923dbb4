"""Microsoft Teams through a Workflows (Power Automate) webhook with an Adaptive Card.

The "Post to a channel when a webhook request is received" workflow takes a message whose
``attachments`` hold one card with ``contentType`` ``application/vnd.microsoft.card.adaptive``
(https://learn.microsoft.com/microsoftteams/platform/task-modules-and-cards/cards/cards-reference).
The workflow answers ``202 Accepted``.
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

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
_COLOR = {"critical": "Attention", "warning": "Warning", "info": "Accent"}


def card(message: Mapping[str, Any]) -> dict[str, Any]:
    """The Adaptive Card (schema 1.4) announcing ``message``."""
    color = "Good" if message["event"] == "resolved" else _COLOR.get(str(message["severity"]),
                                                                     "Default")
    return {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": title(message), "size": "Large",
             "weight": "Bolder", "wrap": True, "color": color},
            {"type": "TextBlock", "text": str(message.get("summary") or ""), "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts(message)]},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": "Open incident",
                     "url": str(message["incident_url"])}],
    }


def payload(message: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None,
                         "content": card(message)}],
    }


@register
class TeamsNotifier(Notifier):
    """Posts an Adaptive Card to a Teams workflow webhook.

    >>> from datetime import UTC, datetime
    >>> from dqpulse.spec import NotificationSpec
    >>> from dqpulse.alerts.notifiers.base import example_message
    >>> n = TeamsNotifier(NotificationSpec(name="t", type="teams", url="https://wf.example/x"))
    >>> body = n.build(example_message(), now=datetime(2026, 1, 1, tzinfo=UTC)).json()
    >>> body["attachments"][0]["contentType"]
    'application/vnd.microsoft.card.adaptive'
    """

    type = "teams"

    def build(self, message: Mapping[str, Any], *, now: datetime) -> OutgoingRequest:
        return OutgoingRequest("POST", self.spec.url, self.headers(message),
                               dumps(payload(message)))
