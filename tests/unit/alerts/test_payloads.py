"""Channel payloads, built purely from a message (no network)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dqpulse.alerts.notifiers import alertmanager, base, opsgenie, pagerduty, slack, teams
from dqpulse.alerts.notifiers.base import example_message, retry_after
from dqpulse.alerts.notifiers.webhook import sign, verify_signature
from dqpulse.errors import ConfigError
from dqpulse.spec import NotificationSpec

NOW = datetime(2026, 1, 1, 0, 2, tzinfo=UTC)


def spec(type_: str, **kw) -> NotificationSpec:
    values = {"name": f"{type_}-1", "type": type_, "url": "https://svc.example/hook/T0K3N",
              "secret": "S3CR3T"}
    values.update(kw)
    return NotificationSpec.model_validate(values)


def test_slack_block_kit_shape():
    body = base.create(spec("slack")).build(example_message(), now=NOW).json()
    assert body["text"].startswith("[CRITICAL] opened: orders volume incident #7")
    kinds = [b["type"] for b in body["blocks"]]
    assert kinds == ["header", "section", "section", "actions", "context"]
    assert len(body["blocks"][0]["text"]["text"]) <= 150
    fields = body["blocks"][2]["fields"]
    assert len(fields) <= 10
    texts = "\n".join(f["text"] for f in fields)
    for fact in ("*What broke*\nvolume.records", "*Expected*\n950 .. 1,050", "*Observed*\n12",
                 "*Owner*\npayments", "*Since*\n2026-01-01T00:00:00Z"):
        assert fact in texts
    assert body["blocks"][3]["elements"][0]["url"] == "http://127.0.0.1:8000/api/v1/incidents/7"


def test_slack_escapes_mrkdwn_control_characters():
    body = slack.payload(example_message(summary="a < b & c > d"))
    assert body["blocks"][1]["text"]["text"] == "a &lt; b &amp; c &gt; d"


def test_teams_adaptive_card_shape():
    body = base.create(spec("teams")).build(example_message(event="resolved"), now=NOW).json()
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0]["color"] == "Good"
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Observed"] == "12" and facts["Owner"] == "payments"
    assert card["actions"][0] == {"type": "Action.OpenUrl", "title": "Open incident",
                                  "url": "http://127.0.0.1:8000/api/v1/incidents/7"}


@pytest.mark.parametrize(("event", "action"), [("opened", "trigger"), ("reopened", "trigger"),
                                               ("escalated", "trigger"),
                                               ("acknowledged", "acknowledge"),
                                               ("resolved", "resolve")])
def test_pagerduty_event_actions_share_the_dedup_key(event, action):
    body = base.create(spec("pagerduty")).build(example_message(event=event), now=NOW).json()
    assert body["routing_key"] == "S3CR3T" and body["event_action"] == action
    assert body["dedup_key"] == "dqpulse:orders:flow"
    if action == "trigger":
        assert body["payload"]["severity"] == "critical"
        assert body["payload"]["source"] == "dqpulse/orders"
        assert len(body["payload"]["summary"]) <= 1024
        assert body["links"][0]["href"].endswith("/api/v1/incidents/7")
    else:
        assert "payload" not in body


def test_pagerduty_and_opsgenie_need_their_key():
    with pytest.raises(ConfigError, match="routing key"):
        base.create(spec("pagerduty", secret=None))
    with pytest.raises(ConfigError, match="integration key"):
        base.create(spec("opsgenie", secret=None))


def test_opsgenie_create_ack_close():
    notifier = base.create(spec("opsgenie", url="https://api.eu.opsgenie.com/v2/alerts"))
    create = notifier.build(example_message(), now=NOW)
    assert create.url == "https://api.eu.opsgenie.com/v2/alerts"
    assert create.headers["Authorization"] == "GenieKey S3CR3T"
    body = create.json()
    assert body["alias"] == "dqpulse:orders:flow" and body["priority"] == "P1"
    assert len(body["message"]) <= 130
    ack = notifier.build(example_message(event="acknowledged", actor="alice"), now=NOW)
    assert ack.url == ("https://api.eu.opsgenie.com/v2/alerts/dqpulse%3Aorders%3Aflow/"
                       "acknowledge?identifierType=alias")
    assert ack.json()["user"] == "alice"
    close = notifier.build(example_message(event="resolved"), now=NOW)
    assert close.url.endswith("/close?identifierType=alias")
    assert opsgenie.PRIORITY["info"] == "P5"


def test_alertmanager_firing_resolved_and_escalated():
    notifier = base.create(spec("alertmanager", url="http://am:9093/", secret=None))
    firing = notifier.build(example_message(), now=NOW)
    assert firing.url == "http://am:9093/api/v2/alerts"
    [alert] = firing.json()
    assert alert["labels"] == {"alertname": "DqpulseIncident", "dataset": "orders",
                               "kind": "volume", "severity": "critical", "incident_id": "7",
                               "owner": "payments"}
    assert set(alert["annotations"]) == {"summary", "description", "incident_url"}
    assert alert["startsAt"] == "2026-01-01T00:01:00Z"
    assert alert["endsAt"] > "2026-01-01T00:02:00Z"
    [resolved] = notifier.build(example_message(event="resolved"), now=NOW).json()
    assert resolved["endsAt"] == "2026-01-01T00:02:00Z"
    old, new = alertmanager.alerts(example_message(event="escalated",
                                                   previous_severity="warning"), now=NOW)
    assert old["labels"]["severity"] == "warning" and old["endsAt"] == "2026-01-01T00:02:00Z"
    assert new["labels"]["severity"] == "critical"


def test_webhook_signature_roundtrip_tamper_and_replay():
    notifier = base.create(spec("webhook"))
    request = notifier.build(example_message(), now=NOW)
    ts = request.headers["X-Dqpulse-Timestamp"]
    assert ts == str(int(NOW.timestamp()))
    assert request.headers["Idempotency-Key"] == "7:opened:1:oncall"
    assert request.headers["X-Dqpulse-Event"] == "opened"
    signature = request.headers["X-Dqpulse-Signature"]
    assert signature.startswith("v1=") and len(signature) == 3 + 64
    assert request.json()["incident_id"] == 7
    assert verify_signature("S3CR3T", ts, request.body, signature, now=NOW.timestamp() + 10)
    assert not verify_signature("wrong", ts, request.body, signature, now=NOW.timestamp())
    assert not verify_signature("S3CR3T", ts, request.body + b"x", signature,
                                now=NOW.timestamp())
    assert not verify_signature("S3CR3T", ts, request.body, signature,
                                now=NOW.timestamp() + 301)
    assert not verify_signature("S3CR3T", "not-a-number", request.body, signature)
    rotated = f"{sign('old', ts, request.body)},{signature}"
    assert verify_signature("S3CR3T", ts, request.body, rotated, now=NOW.timestamp())


def test_unsigned_webhook_without_secret():
    request = base.create(spec("webhook", secret=None)).build(example_message(), now=NOW)
    assert "X-Dqpulse-Signature" not in request.headers


def test_secrets_never_in_repr_or_errors():
    for type_ in base.available():
        notifier = base.create(spec(type_))
        assert "T0K3N" not in repr(notifier) and "S3CR3T" not in repr(notifier)
        assert notifier.redact("GET https://svc.example/hook/T0K3N key=S3CR3T") == \
            "GET *** key=***"


def test_retry_after_parses_seconds_and_dates():
    assert retry_after("7") == 7.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_registry_refuses_a_second_registration_of_a_type():
    with pytest.raises(ValueError, match="already registered"):
        base.register(type("Again", (slack.SlackNotifier,), {"type": "slack"}))
    with pytest.raises(ConfigError, match="unknown notifier type"):
        base.get("carrier-pigeon")
    assert {"slack", "teams", "pagerduty", "opsgenie", "webhook", "alertmanager"} <= set(
        base.available())
    assert teams.CARD_CONTENT_TYPE and pagerduty.SEVERITY
