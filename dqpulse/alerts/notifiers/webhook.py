"""A generic JSON webhook, signed with HMAC-SHA256 over the timestamp and the body.

The body is the outbox message itself (see docs/alerting.md for its fields). Headers:

* ``Idempotency-Key`` -- the same on every retry of one notification; receivers dedupe on it;
* ``X-Dqpulse-Event`` -- opened | reopened | escalated | acknowledged | resolved;
* ``X-Dqpulse-Timestamp`` -- Unix seconds at sending time;
* ``X-Dqpulse-Signature`` -- ``v1=<hex>`` with
  ``hex = HMAC-SHA256(secret, f"{timestamp}.{body}")`` (only when ``secret`` is set).

A receiver recomputes the signature over the raw body bytes, compares in constant time,
and rejects timestamps more than five minutes from its clock, which makes a captured
request useless for replay after that window (:func:`verify_signature` does all three).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dqpulse.alerts.notifiers.base import Notifier, OutgoingRequest, dumps, register

SIGNATURE_VERSION = "v1"


def sign(secret: str, timestamp: str | int, body: bytes) -> str:
    """``v1=<hex>`` for ``body`` sent at ``timestamp``.

    >>> sign("s3cret", 1700000000, b'{"a":1}')[:10]
    'v1=1698a50'
    """
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify_signature(secret: str, timestamp: str | int, body: bytes | str, signature: str,
                     tolerance_s: float = 300, *, now: float | None = None) -> bool:
    """Whether ``signature`` (the ``X-Dqpulse-Signature`` header) signs ``body`` at
    ``timestamp`` (the ``X-Dqpulse-Timestamp`` header) and the timestamp lies within
    ``tolerance_s`` of ``now``. Several comma-separated ``v1=`` values are accepted, so a
    sender may sign with an old and a new secret while a secret is rotated.

    >>> body = b'{"event":"opened"}'
    >>> verify_signature("k", 100, body, sign("k", 100, body), now=150)
    True
    >>> verify_signature("k", 100, body, sign("k", 100, body), now=1000)
    False
    >>> verify_signature("k", 100, body + b" ", sign("k", 100, body), now=150)
    False
    """
    try:
        sent_at = int(str(timestamp))
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_s:
        return False
    raw = body.encode("utf-8") if isinstance(body, str) else body
    expected = sign(secret, sent_at, raw)
    return any(hmac.compare_digest(expected, candidate.strip())
               for candidate in signature.split(","))


@register
class WebhookNotifier(Notifier):
    """POSTs the message as JSON, signed when ``secret`` is set.

    >>> from datetime import UTC, datetime
    >>> from dqpulse.spec import NotificationSpec
    >>> from dqpulse.alerts.notifiers.base import example_message
    >>> n = WebhookNotifier(NotificationSpec(name="w", type="webhook",
    ...     url="https://hooks.example/x", secret="k"))
    >>> req = n.build(example_message(), now=datetime(2026, 1, 1, tzinfo=UTC))
    >>> verify_signature("k", req.headers["X-Dqpulse-Timestamp"], req.body,
    ...                  req.headers["X-Dqpulse-Signature"], now=1767225600)
    True
    """

    type = "webhook"

    def build(self, message: Mapping[str, Any], *, now: datetime) -> OutgoingRequest:
        body = dumps(dict(message))
        timestamp = str(int(now.timestamp()))
        headers = self.headers(message) | {
            "X-Dqpulse-Event": str(message["event"]),
            "X-Dqpulse-Timestamp": timestamp,
        }
        if self.spec.secret:
            headers["X-Dqpulse-Signature"] = sign(self.spec.secret, timestamp, body)
        return OutgoingRequest("POST", self.spec.url, headers, body)
