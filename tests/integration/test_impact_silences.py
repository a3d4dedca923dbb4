"""Silences govern impact notifications as they would the impacted dataset's own incident
(issue 14): the real notifier path (outbox -> dispatcher -> webhook notifier) to a real
loopback HTTP receiver, over the real Postgres (SAVEPOINT per test). About 1 s per case.

``src -> orders``: the upstream ``src`` (owner team-src, channel ``src-oncall``) opens the
incident; ``orders`` (owner payments, channel ``payments-oncall``) joins it as an impact.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from dqpulse.alerts import incidents as inc
from dqpulse.alerts.anomalies import Anomaly
from dqpulse.alerts.dispatch import DispatchOptions, deliver_due
from dqpulse.alerts.impacts import Related
from dqpulse.alerts.notifiers import build_notifiers
from dqpulse.spec import DatasetSpec, NotificationSpec
from dqpulse.store import incidents as incident_store
from dqpulse.store import silences as silence_store
from dqpulse.store.tables import notification_outbox

from .receivers import Receiver, webhook_receiver

pytestmark = pytest.mark.integration

PUBLIC = "http://dq.test"
SECRET = "S3CR3T"
OWNERS = {"src": "team-src", "orders": "payments"}
RELATED = {"src": Related(downstream={"orders": 1}, owners=OWNERS),
           "orders": Related(upstream={"src": 1}, owners=OWNERS)}
NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW.timestamp() // 60 * 60 - 600


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = webhook_receiver(SECRET)
    yield found
    found.down()


def _channels(receiver: Receiver) -> list[NotificationSpec]:
    return [NotificationSpec(name=f"{team}-oncall", type="webhook", secret=SECRET,
                             url=f"{receiver.url}/{team}", match={"owner": team})
            for team in ("team-src", "payments")]


def _alert(db_engine: Any, name: str, index: int,
           channels: list[NotificationSpec]) -> inc.WindowOutcome:
    start = START + 60 * index
    anomaly = Anomaly(dataset=name, kind="completeness", metric="completeness.null_ratio",
                      field="customer.segment", window_start=start, window_end=start + 60,
                      score=0.99, severity="critical",
                      explanation={"observed": 0.4, "expected_low": 0.0,
                                   "expected_high": 0.01, "direction": "up"})
    with db_engine.begin() as conn:
        return inc.process_window(
            conn, dataset=DatasetSpec(name=name, topic=name, owner=OWNERS[name]),
            window_start=start, window_end=start + 60, anomalies=[anomaly],
            notifications=channels, public_url=PUBLIC, now=NOW + timedelta(seconds=index),
            related=RELATED[name])


def _silence(db_engine: Any, **match: str) -> int:
    values = {"dataset": None, "owner": None, "kind": None, **match}
    with db_engine.begin() as conn:
        return int(silence_store.create(
            conn, **values, starts_at=NOW - timedelta(hours=1),
            ends_at=NOW + timedelta(hours=1), comment="maintenance", created_by="test")["id"])


def _delivered(db_engine: Any, receiver: Receiver,
               channels: list[NotificationSpec]) -> list[tuple[str, str]]:
    """Deliver every queued notification through the real notifiers; what the receiver
    got, as sorted ``(path, event)`` (channels are sent to in parallel)."""
    notifiers = build_notifiers(channels, timeout_s=5)
    options = DispatchOptions(base_backoff_s=0.05, max_backoff_s=0.1)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with db_engine.connect() as conn:
                pending = conn.execute(select(func.count()).select_from(notification_outbox)
                                       .where(notification_outbox.c.status == "pending")
                                       ).scalar_one()
            if not pending:
                break
            deliver_due(db_engine, channels=notifiers, options=options)
    finally:
        for notifier in notifiers.values():
            notifier.close()
    assert receiver.rejected() == []
    return sorted((r.path, r.json["event"]) for r in receiver.accepted())


def _events(db_engine: Any, incident_id: int) -> list[tuple[str, str | None]]:
    with db_engine.connect() as conn:
        return [(e["action"], e["comment"])
                for e in incident_store.get_events(conn, incident_id=incident_id)]


def test_without_silences_the_impact_reaches_the_root_and_the_impacted_channels(
        db_engine, receiver):
    channels = _channels(receiver)
    root_id = _alert(db_engine, "src", 0, channels).opened[0]
    joined = _alert(db_engine, "orders", 0, channels)
    assert joined.impacts == [root_id] and joined.notifications == 2
    assert _delivered(db_engine, receiver, channels) == [
        ("/payments", "impact"), ("/team-src", "impact"), ("/team-src", "opened")]


@pytest.mark.parametrize("match", [{"dataset": "orders"}, {"owner": "payments"},
                                   {"dataset": "orders", "kind": "completeness"}],
                         ids=["dataset", "owner", "dataset-and-kind"])
def test_a_silenced_impacted_dataset_sends_no_impact_until_its_silence_ends(
        db_engine, receiver, match):
    channels = _channels(receiver)
    silence_id = _silence(db_engine, **match)
    root_id = _alert(db_engine, "src", 0, channels).opened[0]  # the root is not silenced
    joined = _alert(db_engine, "orders", 0, channels)
    assert joined.impacts == [root_id]
    assert (joined.notifications, joined.suppressed) == (0, 2)
    assert _delivered(db_engine, receiver, channels) == [("/team-src", "opened")]
    assert _events(db_engine, root_id)[-2:] == [
        ("impact", "orders (owner payments) impacted: completeness"),
        ("silenced", f"impact notification of orders to 2 channel(s) suppressed by "
                     f"silence #{silence_id}")]
    still = _alert(db_engine, "orders", 1, channels)  # still silenced: nothing, no new event
    assert (still.notifications, still.suppressed) == (0, 0)
    assert len(_events(db_engine, root_id)) == 3
    with db_engine.begin() as conn:
        silence_store.delete(conn, silence_id=silence_id)
    after = _alert(db_engine, "orders", 2, channels)  # announced once the silence is over
    assert after.notifications == 2
    assert _delivered(db_engine, receiver, channels) == [
        ("/payments", "impact"), ("/team-src", "impact"), ("/team-src", "opened")]
    assert _alert(db_engine, "orders", 2, channels).notifications == 0  # announced once


def test_a_silence_of_another_kind_does_not_suppress_the_impact(db_engine, receiver):
    channels = _channels(receiver)
    _silence(db_engine, dataset="orders", kind="volume")
    _alert(db_engine, "src", 0, channels)
    assert _alert(db_engine, "orders", 0, channels).notifications == 2


def test_a_silenced_root_keeps_the_impact_from_its_audience_only(db_engine, receiver):
    channels = _channels(receiver)
    root_id = _alert(db_engine, "src", 0, channels).opened[0]  # team-src told
    silence_id = _silence(db_engine, dataset="src")  # then the root goes into maintenance
    joined = _alert(db_engine, "orders", 0, channels)
    assert (joined.notifications, joined.suppressed) == (1, 1)
    assert _delivered(db_engine, receiver, channels) == [
        ("/payments", "impact"), ("/team-src", "opened")]
    assert _events(db_engine, root_id)[-1] == (
        "silenced", f"impact notification of orders to 1 channel(s) suppressed by "
                    f"silence #{silence_id}")


def test_a_merged_downstream_incident_of_a_silenced_dataset_sends_no_impact(
        db_engine, receiver):
    channels = _channels(receiver)
    _silence(db_engine, owner="payments")
    early = _alert(db_engine, "orders", 0, channels).opened[0]  # silenced: nobody told
    opened = _alert(db_engine, "src", 0, channels)  # the root opens and merges it
    assert opened.merged == [early]
    assert _delivered(db_engine, receiver, channels) == [("/team-src", "opened")]
    [root_id] = opened.opened
    assert _events(db_engine, root_id)[-1][0] == "silenced"
