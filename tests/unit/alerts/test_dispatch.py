"""Outbox delivery on SQLite with scripted notifiers (no network): order, retries, dead
letters, leases and rate limits."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from dqpulse.alerts import actions
from dqpulse.alerts import incidents as inc
from dqpulse.alerts.dispatch import DispatchOptions, backoff_delay, deliver_due
from dqpulse.alerts.notifiers.base import Notifier, OutgoingRequest, SendResult, dumps
from dqpulse.spec import NotificationSpec
from dqpulse.store.tables import notification_outbox

from .conftest import anomaly, at, channel, dataset, window

URL = "http://dq.example"


class ScriptedNotifier(Notifier):
    """Answers from a script of outcomes ("ok", "fail", "perm", "raise"); "ok" when exhausted."""

    type = "scripted"

    def __init__(self, spec: NotificationSpec, script: list[str] | None = None,
                 clock=None) -> None:
        super().__init__(spec, clock=clock)
        self.script = list(script or [])
        self.sent: list[tuple[str, str]] = []  # (idempotency key, outcome)

    def build(self, message: Mapping[str, Any], *, now: datetime) -> OutgoingRequest:
        return OutgoingRequest("POST", self.spec.url, self.headers(message), dumps(message))

    def send(self, message: Mapping[str, Any], *, now: datetime | None = None) -> SendResult:
        step = self.script.pop(0) if self.script else "ok"
        self.sent.append((message["idempotency_key"], step))
        if step == "raise":
            raise RuntimeError(f"boom {self.spec.url}")
        if step == "fail":
            return SendResult(ok=False, status=503, error="HTTP 503")
        if step == "perm":
            return SendResult(ok=False, status=400, error="HTTP 400", permanent=True)
        return SendResult(ok=True, status=200)


def open_and_resolve(engine: Engine, channels: list[NotificationSpec], index: int = 0,
                     ds=None) -> int:
    options = inc.IncidentOptions(auto_resolve_windows=1)
    ds = ds or dataset()
    s, e = window(index)
    with engine.begin() as conn:
        outcome = inc.process_window(conn, dataset=ds, window_start=s, window_end=e,
                                     anomalies=[anomaly(index)], notifications=channels,
                                     public_url=URL, now=at(index), options=options)
    s, e = window(index + 1)
    with engine.begin() as conn:
        inc.process_window(conn, dataset=ds, window_start=s, window_end=e, anomalies=[],
                           notifications=channels, public_url=URL, now=at(index + 1),
                           options=options)
    return outcome.opened[0]


def statuses(engine: Engine) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        return [(r.idempotency_key, r.status, r.attempts) for r in conn.execute(
            select(notification_outbox).order_by(notification_outbox.c.id))]


def test_backoff_is_full_jitter_and_capped():
    rng = random.Random(1)
    delays = [backoff_delay(n, base_s=1.0, cap_s=8.0, rng=rng) for n in range(1, 200)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert max(delays[:1]) <= 1.0 and max(delays[50:]) > 4.0


def test_delivers_both_events_in_order(engine):
    spec = channel()
    incident_id = open_and_resolve(engine, [spec])
    notifier = ScriptedNotifier(spec)
    report = deliver_due(engine, channels={"oncall": notifier}, now=at(5))
    assert report.delivered == 2
    assert [k for k, _ in notifier.sent] == [f"{incident_id}:opened:1:oncall",
                                             f"{incident_id}:resolved:2:oncall"]
    assert [s for _, s, _ in statuses(engine)] == ["delivered", "delivered"]


def test_failure_blocks_later_events_of_that_incident_until_it_succeeds(engine):
    spec = channel()
    open_and_resolve(engine, [spec])
    notifier = ScriptedNotifier(spec, ["fail", "fail"])
    options = DispatchOptions(base_backoff_s=10, max_backoff_s=10)
    t = at(5)
    report = deliver_due(engine, channels={"oncall": notifier}, now=t, options=options,
                         rng=random.Random(0))
    assert report.retried == 1 and report.delivered == 0
    assert len(notifier.sent) == 1  # the resolve was not sent ahead of the open
    # the resolved row is due but blocked behind the backing-off opened row
    report = deliver_due(engine, channels={"oncall": notifier}, now=t + timedelta(seconds=0.001),
                         options=options)
    assert report.claimed == 0
    report = deliver_due(engine, channels={"oncall": notifier}, now=t + timedelta(seconds=11),
                         options=options)
    assert report.retried == 1
    report = deliver_due(engine, channels={"oncall": notifier}, now=t + timedelta(seconds=30),
                         options=options)
    assert report.delivered == 2
    keys = [k for k, _ in notifier.sent]
    assert keys[0] == keys[1] == keys[2] and keys[3].split(":")[1] == "resolved"
    assert [(s, a) for _, s, a in statuses(engine)] == [("delivered", 3), ("delivered", 1)]


def test_one_channel_down_does_not_hold_up_another(engine):
    a, b = channel("a"), channel("b")
    open_and_resolve(engine, [a, b])
    down, up = ScriptedNotifier(a, ["fail"] * 10), ScriptedNotifier(b)
    deliver_due(engine, channels={"a": down, "b": up}, now=at(5))
    assert [e for e in statuses(engine) if e[0].endswith(":b")] == [
        (k, "delivered", 1) for k, _, _ in statuses(engine) if k.endswith(":b")]
    assert len(up.sent) == 2 and len(down.sent) == 1


def test_dead_letter_after_retry_budget_and_at_once_on_permanent_error(engine):
    spec = channel()
    open_and_resolve(engine, [spec])
    notifier = ScriptedNotifier(spec, ["fail", "fail", "perm"])
    options = DispatchOptions(base_backoff_s=1, max_backoff_s=1, max_attempts=2)
    t = at(5)
    deliver_due(engine, channels={"oncall": notifier}, now=t, options=options)
    report = deliver_due(engine, channels={"oncall": notifier}, now=t + timedelta(seconds=2),
                         options=options)
    assert report.dead == 1
    report = deliver_due(engine, channels={"oncall": notifier}, now=t + timedelta(seconds=4),
                         options=options)
    assert report.dead == 1  # the resolve hit a permanent 400: dead at once
    assert [(s, a) for _, s, a in statuses(engine)] == [("dead", 2), ("dead", 1)]


def test_a_crashing_notifier_counts_as_a_failed_attempt_and_redacts_the_url(engine):
    spec = channel(url="http://127.0.0.1:9/hooks/T0K3N")
    open_and_resolve(engine, [spec])
    notifier = ScriptedNotifier(spec, ["raise"])
    report = deliver_due(engine, channels={"oncall": notifier}, now=at(5))
    assert report.retried == 1
    with engine.connect() as conn:
        error = conn.execute(select(notification_outbox.c.last_error)).scalars().first()
    assert "T0K3N" not in error and "***" in error


def test_a_claimed_row_of_a_dead_notifier_is_retried_after_the_lease(engine):
    spec = channel()
    incident_id = open_and_resolve(engine, [spec])
    options = DispatchOptions(claim_lease_s=30)

    class Dies(ScriptedNotifier):
        def send(self, message, *, now=None):
            raise SystemExit("killed mid-send")  # not an Exception: escapes like a SIGKILL

    t = at(5)
    try:
        deliver_due(engine, channels={"oncall": Dies(spec)}, now=t, options=options)
    except SystemExit:
        pass
    assert [s for _, s, _ in statuses(engine)] == ["pending", "pending"]
    survivor = ScriptedNotifier(spec)
    assert deliver_due(engine, channels={"oncall": survivor}, now=t + timedelta(seconds=10),
                       options=options).claimed == 0
    report = deliver_due(engine, channels={"oncall": survivor}, now=t + timedelta(seconds=31),
                         options=options)
    assert report.delivered == 2
    assert [k for k, _ in survivor.sent] == [f"{incident_id}:opened:1:oncall",
                                             f"{incident_id}:resolved:2:oncall"]


def test_channel_rate_limit_caps_attempts_per_minute(engine):
    spec = channel(rate_limit_per_minute=3)
    for index in range(0, 20, 4):  # five incidents on five datasets -> 10 rows
        open_and_resolve(engine, [spec], index=index, ds=dataset(name=f"ds{index}"))
    now = [0.0]
    notifier = ScriptedNotifier(spec, clock=lambda: now[0])
    report = deliver_due(engine, channels={"oncall": notifier}, now=at(30))
    assert report.delivered == 3 and report.rate_limited > 0
    now[0] = 20.0  # one more token after 20 s
    report = deliver_due(engine, channels={"oncall": notifier}, now=at(30))
    assert report.delivered == 1
    now[0] = 200.0
    for _ in range(5):
        deliver_due(engine, channels={"oncall": notifier}, now=at(30))
        now[0] += 60.0
    assert [s for _, s, _ in statuses(engine)] == ["delivered"] * 10
    # per incident the open still came before the resolve
    order = [k for k, _ in notifier.sent]
    for incident_id in {k.split(":")[0] for k in order}:
        mine = [k.split(":")[1] for k in order if k.split(":")[0] == incident_id]
        assert mine == ["opened", "resolved"]


def test_rows_of_unconfigured_channels_are_left_alone(engine):
    open_and_resolve(engine, [channel("gone")])
    report = deliver_due(engine, channels={"oncall": ScriptedNotifier(channel())}, now=at(5))
    assert report.claimed == 0
    assert [s for _, s, _ in statuses(engine)] == ["pending", "pending"]


def test_inc_process_window_and_ack_keep_per_channel_sequence(engine):
    spec = channel()
    s, e = window(0)
    with engine.begin() as conn:
        incident_id = inc.process_window(conn, dataset=dataset(), window_start=s, window_end=e,
                                         anomalies=[anomaly(0)], notifications=[spec],
                                         public_url=URL, now=at(0)).opened[0]
        actions.acknowledge(conn, incident_id=incident_id, actor="a", notifications=[spec],
                            public_url=URL, now=at(1))
        actions.resolve(conn, incident_id=incident_id, actor="a", notifications=[spec],
                        public_url=URL, now=at(2))
    notifier = ScriptedNotifier(spec)
    deliver_due(engine, channels={"oncall": notifier}, now=at(5))
    assert [k.split(":")[1] for k, _ in notifier.sent] == ["opened", "acknowledged", "resolved"]


def test_alertmanager_heartbeat_resends_only_active_incidents(engine):
    from dqpulse.alerts.dispatch import refresh_firing

    class FakeAlertmanager(ScriptedNotifier):
        type = "alertmanager"

    spec = channel("am")
    keep = open_and_resolve(engine, [spec], index=0, ds=dataset(name="resolved-one"))
    s, e = window(5)
    with engine.begin() as conn:
        active = inc.process_window(conn, dataset=dataset(name="still-bad"), window_start=s,
                                    window_end=e, anomalies=[anomaly(5)], notifications=[spec],
                                    public_url=URL, now=at(5)).opened[0]
    notifier = FakeAlertmanager(spec)
    deliver_due(engine, channels={"am": notifier}, now=at(6))
    assert len(notifier.sent) == 3
    assert refresh_firing(engine, channels={"am": notifier}, now=at(7)) == 1
    assert notifier.sent[-1][0] == f"{active}:opened:1:am" and keep != active
    assert refresh_firing(engine, channels={"am": ScriptedNotifier(spec)}) == 0  # not AM
