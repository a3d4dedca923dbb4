"""Slack incoming webhook with a Block Kit message.

Slack documents the payload at https://api.slack.com/messaging/webhooks: ``text`` (the
notification fallback) plus ``blocks``; a header block holds at most 150 characters of
plain text, a section at most 10 fields. Slack answers ``200 ok``; it has no idempotency
header, so a retried delivery may show twice in the rare crash-after-send case.
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


def escape(text: str) -> str:
    """Slack mrkdwn escaping of the three control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(message: Mapping[str, Any]) -> dict[str, Any]:
    """The Block Kit body announcing ``message``."""
    head = title(message)
    summary = str(message.get("summary") or "")
    fields = [{"type": "mrkdwn", "text": f"*{escape(k)}*\n{escape(v)[:1900]}"}
              for k, v in facts(message)][:10]
    return {
        "text": f"{head}: {summary}"[:3000],
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": head[:150],
                                        "emoji": False}},
            {"type": "section", "text": {"type": "mrkdwn", "text": escape(summary)[:3000]
                                         or escape(head)}},
            {"type": "section", "fields": fields},
            {"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Open incident"},
                 "url": str(message["incident_url"]), "action_id": "open_incident"},
            ]},
            {"type": "context", "elements": [
                {"type": "mrkdwn",
                 "text": escape(f"dqpulse · {message['dedup_key']} · "
                                f"{message['idempotency_key']}")},
            ]},
        ],
    }


@register
class SlackNotifier(Notifier):
    """Posts a Block Kit message to a Slack incoming webhook.

    >>> from datetime import UTC, datetime
    >>> from dqpulse.spec import NotificationSpec
    >>> from dqpulse.alerts.notifiers.base import example_message
    >>> n = SlackNotifier(NotificationSpec(name="s", type="slack", url="https://hooks.example/x"))
    >>> n.build(example_message(), now=datetime(2026, 1, 1, tzinfo=UTC)).json()["blocks"][0]["type"]
    'header'
    """

    type = "slack"

    def build(self, message: Mapping[str, Any], *, now: datetime) -> OutgoingRequest:
        return OutgoingRequest("POST", self.spec.url, self.headers(message),
                               dumps(payload(message)))
