"""Every channel format against a real loopback receiver that validates the documented
shape, and the real Alertmanager of the local stack (pushed alert, then its resolution)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from dqpulse.alerts import actions
from dqpulse.alerts import incidents as inc
from dqpulse.alerts.anomalies import Anomaly
from dqpulse.alerts.dispatch import DispatchOptions, deliver_due
from dqpulse.alerts.notifiers import build_notifiers
from dqpulse.spec import DatasetSpec, NotificationSpec
from dqpulse.store import outbox as outbox_store

from .receivers import (
    Receiver,
    opsgenie_receiver,
    pagerduty_receiver,
    slack_receiver,
    teams_receiver,
    webhook_receiver,
)

pytestmark = pytest.mark.integration

PUBLIC = "http://dq.test"
KEY = "R0UT1NGKEY0123456789abcdef012345"


def _lifecycle(db_engine, channel: NotificationSpec, dataset: str) -> int:
    """Open (critical), acknowledge and resolve one incident routed to ``channel``."""
    ds = DatasetSpec(name=dataset, topic=dataset, owner="payments")
    start = datetime.now(UTC).timestamp() // 60 * 60
    anomaly = Anomaly(dataset, "volume", "volume.records", "", start, start + 60, 0.995,
                          None, {"observed": 3.0, "expected_low": 900.0,
                                 "expected_high": 1100.0, "direction": "down"})
    with db_engine.begin() as conn:
        incident_id = inc.process_window(conn, dataset=ds, window_start=start,
                                         window_end=start + 60, anomalies=[anomaly],
                                         notifications=[channel], public_url=PUBLIC).opened[0]
        actions.acknowledge(conn, incident_id=incident_id, actor="alice", comment="looking",
                            notifications=[channel], public_url=PUBLIC)
        actions.resolve(conn, incident_id=incident_id, actor="alice", comment="fixed",
                        notifications=[channel], public_url=PUBLIC)
    return incident_id


def _deliver_all(db_engine, channel: NotificationSpec, expected: int) -> None:
    notifiers = build_notifiers([channel], timeout_s=5)
    options = DispatchOptions(base_backoff_s=0.05, max_backoff_s=0.1)
    delivered = 0
    deadline = time.monotonic() + 20
    while delivered < expected and time.monotonic() < deadline:
        delivered += deliver_due(db_engine, channels=notifiers, options=options).delivered
    for notifier in notifiers.values():
        notifier.close()
    assert delivered == expected


CASES = [
    ("slack", lambda: slack_receiver(), {"url_path": "/services/T000/B000/XXXX"}),
    ("teams", lambda: teams_receiver(), {"url_path": "/workflows/abc/triggers/manual/run"}),
    ("pagerduty", lambda: pagerduty_receiver(KEY), {"url_path": "/v2/enqueue", "secret": KEY}),
    ("opsgenie", lambda: opsgenie_receiver("GENIE-KEY"), {"url_path": "", "secret": "GENIE-KEY"}),
    ("webhook", lambda: webhook_receiver("S3CR3T"), {"url_path": "/dq", "secret": "S3CR3T"}),
]


@pytest.mark.parametrize(("kind", "make", "extra"), CASES, ids=[c[0] for c in CASES])
def test_channel_payloads_match_the_service_documented_shape(db_engine, kind, make, extra):
    receiver: Receiver = make()
    try:
        channel = NotificationSpec(name=f"{kind}-ch", type=kind,
                                   url=receiver.url + extra["url_path"],
                                   secret=extra.get("secret"))
        incident_id = _lifecycle(db_engine, channel, f"orders-{kind}")
        _deliver_all(db_engine, channel, expected=3)
        got = receiver.accepted()
        assert receiver.rejected() == [], [r.problems for r in receiver.rejected()]
        assert len(got) == 3
        assert [r.key.split(":")[1] for r in got] == ["opened", "acknowledged", "resolved"]
        assert all(r.key.startswith(f"{incident_id}:") for r in got)
        link = f"{PUBLIC}/api/v1/incidents/{incident_id}"
        assert link in got[0].body.decode()  # the first message links to the incident
        opened_text = got[0].body.decode()
        for needle in ("payments", "volume.records"):
            assert needle in opened_text
        if kind == "pagerduty":
            assert [r.json["event_action"] for r in got] == ["trigger", "acknowledge", "resolve"]
            assert len({r.json["dedup_key"] for r in got}) == 1
        if kind == "opsgenie":
            assert got[0].json["alias"] == f"dqpulse:orders-{kind}:flow"
            assert got[1].path.endswith("/acknowledge?identifierType=alias")
            assert got[2].path.endswith("/close?identifierType=alias")
        if kind == "webhook":
            assert got[0].json["expected_low"] == 900.0 and got[0].json["observed"] == 3.0
            assert got[0].json["since"] is not None
        with db_engine.begin() as conn:
            rows = outbox_store.get_all(conn, incident_id=incident_id)
        assert [r["status"] for r in rows] == ["delivered"] * 3
        assert all(extra.get("secret", "§") not in str(r["payload"]) for r in rows)
    finally:
        receiver.down()


def test_receiver_rejection_is_dead_lettered_not_retried(db_engine):
    receiver = webhook_receiver("the-right-secret")
    try:
        channel = NotificationSpec(name="bad-sig", type="webhook", url=receiver.url,
                                   secret="a-wrong-secret")
        incident_id = _lifecycle(db_engine, channel, "orders-badsig")
        notifiers = build_notifiers([channel])
        report = deliver_due(db_engine, channels=notifiers)
        # 400 is permanent: dead at once, and a dead row does not hold up the next event
        assert report.dead == 3 and report.delivered == 0 and report.retried == 0
        assert deliver_due(db_engine, channels=notifiers).claimed == 0
        with db_engine.begin() as conn:
            rows = outbox_store.get_all(conn, incident_id=incident_id)
        assert [r["status"] for r in rows] == ["dead"] * 3
        assert "signature does not verify" in rows[0]["last_error"]
        assert "a-wrong-secret" not in rows[0]["last_error"]
    finally:
        receiver.down()


# ---- the real Alertmanager -----------------------------------------------------------------

def _am_alerts(base: str, incident_id: int) -> list[dict]:
    response = httpx.get(f"{base}/api/v2/alerts",
                         params={"filter": f'incident_id="{incident_id}"'}, timeout=5)
    response.raise_for_status()
    return response.json()


def test_alertmanager_shows_the_pushed_alert_and_then_its_resolution(db_engine, stack_env):
    base = stack_env.get("DQPULSE_ALERTMANAGER_URL", "http://127.0.0.1:19094")
    dataset = f"am-{uuid.uuid4().hex[:8]}"
    channel = NotificationSpec(name="am", type="alertmanager", url=base)
    ds = DatasetSpec(name=dataset, topic=dataset, owner="payments")
    start = datetime.now(UTC).timestamp() // 60 * 60
    anomaly = Anomaly(dataset, "volume", "volume.records", "", start, start + 60, 0.93,
                          None, {"observed": 3.0, "expected_low": 900.0,
                                 "expected_high": 1100.0, "direction": "down"})
    worse = Anomaly(dataset, "volume", "volume.records", "", start + 60, start + 120,
                        0.999, None, {"observed": 0.0})
    with db_engine.begin() as conn:
        incident_id = inc.process_window(conn, dataset=ds, window_start=start,
                                         window_end=start + 60, anomalies=[anomaly],
                                         notifications=[channel], public_url=PUBLIC).opened[0]
    _deliver_all(db_engine, channel, expected=1)
    deadline = time.monotonic() + 10
    alerts: list[dict] = []
    while time.monotonic() < deadline and not alerts:
        alerts = _am_alerts(base, incident_id)
        time.sleep(0.2)
    [alert] = alerts
    assert alert["labels"] == {"alertname": "DqpulseIncident", "dataset": dataset,
                               "kind": "volume", "severity": "warning",
                               "incident_id": str(incident_id), "owner": "payments"}
    assert alert["annotations"]["incident_url"] == f"{PUBLIC}/api/v1/incidents/{incident_id}"
    assert "expected" in alert["annotations"]["description"].lower()
    assert alert["status"]["state"] == "active"

    # escalation: the alert moves to the new severity label, the old one ends
    with db_engine.begin() as conn:
        inc.process_window(conn, dataset=ds, window_start=start + 60, window_end=start + 120,
                           anomalies=[worse], notifications=[channel], public_url=PUBLIC)
    _deliver_all(db_engine, channel, expected=1)
    time.sleep(0.5)
    assert [a["labels"]["severity"] for a in _am_alerts(base, incident_id)] == ["critical"]

    with db_engine.begin() as conn:
        actions.resolve(conn, incident_id=incident_id, actor="alice", notifications=[channel],
                        public_url=PUBLIC)
    _deliver_all(db_engine, channel, expected=1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _am_alerts(base, incident_id):
        time.sleep(0.2)
    assert _am_alerts(base, incident_id) == []  # endsAt in the past: no longer active
