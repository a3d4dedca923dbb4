"""Every registered notifier type passes the same checks (River's ``checks/`` pattern)."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

import pytest

from dqpulse.alerts.notifiers import base
from dqpulse.alerts.notifiers.base import EVENTS, example_message
from dqpulse.spec import NotificationSpec

NOW = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
SECRET = "C0NTRACT-S3CR3T"
TOKEN = "URL-T0K3N"


def make(type_: str, url: str = f"https://svc.example/{TOKEN}") -> base.Notifier:
    return base.create(NotificationSpec(name=f"{type_}-contract", type=type_, url=url,
                                        secret=SECRET))


TYPES = base.available()


@pytest.mark.parametrize("type_", TYPES)
@pytest.mark.parametrize("event", EVENTS)
def test_builds_a_json_post_carrying_the_idempotency_key(type_, event):
    request = make(type_).build(example_message(event=event), now=NOW)
    assert request.method == "POST" and request.url.startswith(("http://", "https://"))
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "7:opened:1:oncall"
    json.loads(request.body)


@pytest.mark.parametrize("type_", TYPES)
def test_build_is_pure(type_):
    notifier = make(type_)
    first = notifier.build(example_message(), now=NOW)
    second = notifier.build(example_message(), now=NOW)
    assert first == second


@pytest.mark.parametrize("type_", TYPES)
def test_opening_message_says_what_since_expected_observed_owner_and_links(type_):
    body = make(type_).build(example_message(), now=NOW).body.decode()
    for needle in ("http://127.0.0.1:8000/api/v1/incidents/7", "volume.records", "payments",
                   "950", "12"):
        assert needle in body, (type_, needle)
    assert "2026-01-01T00:00:00Z" in body  # since when (start of the first bad window)


@pytest.mark.parametrize("type_", TYPES)
def test_odd_messages_still_build(type_):
    odd = example_message(summary="ü" * 5000 + " <&> ", observed=None, expected_low=None,
                          expected_high=None, owner=None, field="a.b[0]",
                          dataset="x" * 200, since=None)
    request = make(type_).build(odd, now=NOW)
    json.loads(request.body)


@pytest.mark.parametrize("type_", TYPES)
def test_secrets_stay_out_of_repr_and_errors(type_):
    notifier = make(type_)
    assert SECRET not in repr(notifier) and TOKEN not in repr(notifier)
    assert SECRET not in notifier.redact(f"failed: {notifier.spec.url} {SECRET}")
    assert TOKEN not in notifier.redact(f"failed: {notifier.spec.url}")


@pytest.mark.parametrize("type_", TYPES)
def test_unreachable_receiver_is_a_retryable_failure_not_an_exception(type_):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: connection refused
    notifier = make(type_, url=f"http://127.0.0.1:{port}/{TOKEN}")
    try:
        result = notifier.send(example_message(), now=NOW)
    finally:
        notifier.close()
    assert not result.ok and not result.permanent
    assert result.error and TOKEN not in result.error and SECRET not in result.error
