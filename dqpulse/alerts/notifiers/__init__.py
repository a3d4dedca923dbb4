"""Notification channels, one module each, registered by type name.

Importing this package registers the built-in types: slack, teams, pagerduty, opsgenie,
webhook, alertmanager.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dqpulse.alerts.notifiers import (  # noqa: F401  (import registers the channel types)
    alertmanager,
    opsgenie,
    pagerduty,
    slack,
    teams,
    webhook,
)
from dqpulse.alerts.notifiers.base import (
    Notifier,
    OutgoingRequest,
    SendResult,
    available,
    create,
    get,
    load_entry_points,
    register,
)
from dqpulse.spec import NotificationSpec

__all__ = ["Notifier", "OutgoingRequest", "SendResult", "available", "build_notifiers",
           "create", "get", "load_entry_points", "register"]


def build_notifiers(specs: Iterable[NotificationSpec], **kwargs: Any) -> dict[str, Notifier]:
    """One notifier per configured channel, by channel name."""
    return {spec.name: create(spec, **kwargs) for spec in specs}
