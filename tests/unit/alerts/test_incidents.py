"""Incident lifecycle on SQLite at alembic head: grouping, dedup, reopen, flapping, silences."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from dqpulse.alerts import actions
from dqpulse.alerts import incidents as inc
from dqpulse.alerts.anomalies import Anomaly, kind_of_metric, severity_of
from dqpulse.errors import ConflictError, ValidationError
from dqpulse.spec import MatchSpec
from dqpulse.store import incidents as incident_store
from dqpulse.store import outbox as outbox_store
from dqpulse.store import silences as silence_store
from dqpulse.store.tables import alerts, notification_outbox

from .conftest import anomaly, at, channel, dataset, window

URL = "http://dq.example"


def run(engine: Engine, index: int, anomalies: list[Anomaly], *, ds=None, channels=None,
        options=None, now=None) -> inc.WindowOutcome:
    start, end = window(index)
    with engine.begin() as conn:
        return inc.process_window(
            conn, dataset=ds or dataset(), window_start=start, window_end=end,
            anomalies=anomalies, notifications=channels if channels is not None else [channel()],
            public_url=URL, now=now or at(index), options=options)


def outbox_rows(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(notification_outbox).order_by(notification_outbox.c.id)).mappings()]


def incident(engine: Engine, incident_id: int) -> dict:
    with engine.connect() as conn:
        return incident_store.get_or_raise(conn, incident_id=incident_id)


def test_kind_of_metric_maps_families_and_quality_dimensions():
    assert kind_of_metric("volume.records") == "volume"
    assert kind_of_metric("freshness.seconds_since_last_record") == "freshness"
    assert kind_of_metric("uniqueness.duplicate_ratio") == "uniqueness"
    assert kind_of_metric("ml_data.parity_difference") == "ml_data"
    assert kind_of_metric("quality.completeness") == "completeness"
    assert kind_of_metric("quality.timeliness") == "freshness"
    assert kind_of_metric("quality.consistency") == "schema"
    assert kind_of_metric("rules.amount_positive") == "validity"


def test_severity_config_beats_detector_beats_score():
    a = anomaly(0, metric="completeness.null_ratio", field="email", score=0.5)
    assert severity_of(dataset(), a) == "info"
    assert severity_of(dataset(), Anomaly(**{**a.__dict__, "score": 0.99})) == "critical"
    assert severity_of(dataset(), Anomaly(**{**a.__dict__, "severity": "warning"})) \
        == "warning"
    ds = dataset(fields={"email": {"type": "string", "severity": "warning"}})
    assert severity_of(ds, a) == "warning"
    ds = dataset(severity={"completeness": "info", "completeness.null_ratio": "critical"},
                 fields={"email": {"severity": "warning"}})
    assert severity_of(ds, a) == "critical"  # metric key beats kind key and field spec
    ds = dataset(severity={"email": "info", "completeness.null_ratio": "critical"})
    assert severity_of(ds, a) == "info"  # field key is the most specific


def test_first_anomaly_opens_incident_and_queues_notification_in_same_transaction(engine):
    outcome = run(engine, 0, [anomaly(0, score=0.99)])
    assert len(outcome.opened) == 1 and outcome.notifications == 1
    row = incident(engine, outcome.opened[0])
    assert row["status"] == "open" and row["severity"] == "critical"
    assert row["dedup_key"] == "dqpulse:orders:flow" and row["owner"] == "payments"
    assert row["summary"] == "orders: volume.records dropped to 12 (expected 950 .. 1,050)"
    [note] = outbox_rows(engine)
    assert note["event"] == "opened" and note["status"] == "pending"
    assert note["idempotency_key"] == f"{row['id']}:opened:1:oncall"
    payload = note["payload"]
    assert payload["incident_url"] == f"{URL}/api/v1/incidents/{row['id']}"
    assert payload["expected_low"] == 950.0 and payload["observed"] == 12.0
    assert payload["since"] == "2026-01-01T00:00:00Z" and payload["owner"] == "payments"
    assert "s3cret" not in str(payload)
    with engine.connect() as conn:
        events = incident_store.get_events(conn, incident_id=row["id"])
    assert [(e["action"], e["actor"]) for e in events] == [("opened", "dqpulse")]


def test_failed_transaction_leaves_neither_incident_nor_outbox_row(engine):
    start, end = window(0)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        inc.process_window(conn, dataset=dataset(), window_start=start, window_end=end,
                           anomalies=[anomaly(0)], notifications=[channel()], public_url=URL,
                           now=at(0))
        raise RuntimeError("finalize failed after the hook")
    assert outbox_rows(engine) == []
    with engine.connect() as conn:
        assert incident_store.get_page(conn) == []


def test_many_anomalies_of_one_kind_group_into_one_incident(engine):
    fields = [f"f{i}" for i in range(40)]
    outcome = run(engine, 0, [anomaly(0, metric="completeness.null_ratio", field=f)
                              for f in fields])
    assert len(outcome.opened) == 1 and outcome.alerts == 40
    outcome = run(engine, 1, [anomaly(1, metric="completeness.null_ratio", field=f)
                              for f in fields])
    assert outcome.opened == [] and len(outcome.updated) == 1 and outcome.notifications == 0
    assert incident(engine, outcome.updated[0])["alert_count"] == 80


def test_volume_and_freshness_share_one_incident_other_kinds_do_not(engine):
    outcome = run(engine, 0, [anomaly(0, metric="volume.records"),
                              anomaly(0, metric="freshness.seconds_since_last_record"),
                              anomaly(0, metric="uniqueness.duplicate_ratio")])
    assert len(outcome.opened) == 2
    kinds = sorted(tuple(incident(engine, i)["details"]["kinds"]) for i in outcome.opened)
    assert kinds == [("freshness", "volume"), ("uniqueness",)]


def _moved(metric: str, field: str, observed: float, expected: float,
           dataset_name: str = "orders") -> Anomaly:
    start, end = window(0)
    return Anomaly(dataset_name, kind_of_metric(metric), metric, field, start, end, 0.95, None,
                   {"observed": observed, "expected": expected,
                    "direction": "up" if observed > expected else "down"})


def test_a_distinct_count_that_follows_the_record_count_joins_the_flow_incident(engine):
    # twice the traffic brings 1.6x the distinct emails and 2.1x the distinct ids (unique
    # per record, give or take noise): one flow incident; a country count 20x up in the
    # same window is a category explosion of its own
    outcome = run(engine, 0, [_moved("volume.records", "", 2000.0, 1000.0),
                              _moved("distribution.distinct_count", "email", 800.0, 500.0),
                              _moved("distribution.distinct_count", "id", 2100.0, 1000.0),
                              _moved("distribution.distinct_count", "country", 120.0, 6.0)])
    groups = sorted((tuple(incident(engine, i)["details"]["kinds"]),
                     incident(engine, i)["alert_count"]) for i in outcome.opened)
    assert groups == [(("distribution",), 1), (("distribution", "volume"), 3)]
    assert outcome.alerts == 4
    # a silent topic: no records, fewer distinct values; a count moving the other way
    # is not the flow's
    quiet = run(engine, 0, [
        _moved("volume.records", "", 0.0, 1000.0, "clicks"),
        _moved("distribution.distinct_count", "email", 20.0, 500.0, "clicks"),
        _moved("distribution.distinct_count", "status", 9.0, 3.0, "clicks")],
        ds=dataset(name="clicks", topic="clicks"))
    kinds = sorted(tuple(incident(engine, i)["details"]["kinds"]) for i in quiet.opened)
    assert kinds == [("distribution",), ("distribution", "volume")]


def test_completeness_alerts_join_an_active_schema_incident(engine):
    first = run(engine, 0, [anomaly(0, metric="schema.new_fields"),
                            anomaly(0, metric="completeness.null_ratio", field="email")])
    assert len(first.opened) == 1
    second = run(engine, 1, [anomaly(1, metric="validity.violation_ratio", field="amount")])
    assert second.opened == [] and second.updated == first.opened
    assert incident(engine, first.opened[0])["details"]["kinds"] == [
        "completeness", "schema", "validity"]


def test_incident_auto_resolves_after_configured_healthy_windows(engine):
    opened = run(engine, 0, [anomaly(0)]).opened[0]
    options = inc.IncidentOptions(auto_resolve_windows=3)
    assert run(engine, 1, [], options=options).resolved == []
    assert run(engine, 2, [], options=options).resolved == []
    assert incident(engine, opened)["healthy_windows"] == 2
    outcome = run(engine, 3, [], options=options)
    assert outcome.resolved == [opened] and outcome.open_incidents == 0
    row = incident(engine, opened)
    assert row["status"] == "resolved" and row["resolved_at"] == at(3)
    assert [r["event"] for r in outbox_rows(engine)] == ["opened", "resolved"]
    with engine.connect() as conn:
        events = incident_store.get_events(conn, incident_id=opened)
    assert events[-1]["action"] == "resolved" and events[-1]["actor"] == "dqpulse"
    assert "3 healthy windows" in events[-1]["comment"]


def test_an_alert_resets_the_healthy_window_count(engine):
    opened = run(engine, 0, [anomaly(0)]).opened[0]
    run(engine, 1, [])
    run(engine, 2, [])
    run(engine, 3, [anomaly(3)])
    run(engine, 4, [])
    assert incident(engine, opened)["status"] == "open"


def test_recurrence_within_grace_reopens_instead_of_new_incident(engine):
    options = inc.IncidentOptions(auto_resolve_windows=1, reopen_grace_windows=10)
    opened = run(engine, 0, [anomaly(0)], options=options).opened[0]
    assert run(engine, 1, [], options=options).resolved == [opened]
    outcome = run(engine, 5, [anomaly(5)], options=options)
    assert outcome.reopened == [opened] and outcome.opened == []
    row = incident(engine, opened)
    assert row["status"] == "open" and row["reopen_count"] == 1 and row["resolved_at"] is None
    assert [(r["event"], r["idempotency_key"]) for r in outbox_rows(engine)] == [
        ("opened", f"{opened}:opened:1:oncall"), ("resolved", f"{opened}:resolved:2:oncall"),
        ("reopened", f"{opened}:reopened:3:oncall")]


def test_recurrence_after_grace_opens_a_new_incident(engine):
    options = inc.IncidentOptions(auto_resolve_windows=1, reopen_grace_windows=2)
    first = run(engine, 0, [anomaly(0)], options=options).opened[0]
    run(engine, 1, [], options=options)
    outcome = run(engine, 10, [anomaly(10)], options=options)
    assert outcome.opened and outcome.opened[0] != first
    assert incident(engine, outcome.opened[0])["dedup_key"] == incident(engine, first)["dedup_key"]


def test_flapping_incident_stops_bouncing_and_notifying(engine):
    options = inc.IncidentOptions(auto_resolve_windows=1, flap_reopens=2,
                                  flap_window_windows=50, flap_hold_factor=4)
    incident_id = run(engine, 0, [anomaly(0)], options=options).opened[0]
    index = 1
    for _ in range(10):  # alternate healthy / anomalous windows
        run(engine, index, [], options=options)
        run(engine, index + 1, [anomaly(index + 1)], options=options)
        index += 2
    row = incident(engine, incident_id)
    assert row["flapping"] is True and row["status"] == "open"
    events = [r["event"] for r in outbox_rows(engine)]
    # opened, resolved, reopened, resolved, reopened (-> flapping): then it holds
    assert events == ["opened", "resolved", "reopened", "resolved", "reopened"]
    for _ in range(3):
        run(engine, index, [], options=options)
        index += 1
    assert incident(engine, incident_id)["status"] == "open"
    run(engine, index, [], options=options)
    assert incident(engine, incident_id)["status"] == "resolved"
    assert outbox_rows(engine)[-1]["event"] == "resolved"
    with engine.connect() as conn:
        actions = [e["action"] for e in incident_store.get_events(conn, incident_id=incident_id)]
    assert "flapping" in actions


def test_higher_severity_escalates_and_notifies(engine):
    crit_only = channel("pager", match=MatchSpec(severity=["critical"]))
    everyone = channel("chat")
    outcome = run(engine, 0, [anomaly(0, score=0.92)], channels=[crit_only, everyone])
    incident_id = outcome.opened[0]
    assert [r["channel"] for r in outbox_rows(engine)] == ["chat"]
    outcome = run(engine, 1, [anomaly(1, score=0.995)], channels=[crit_only, everyone])
    assert outcome.escalated == [incident_id]
    rows = outbox_rows(engine)
    assert [(r["channel"], r["event"]) for r in rows[1:]] == [("pager", "escalated"),
                                                               ("chat", "escalated")]
    assert rows[1]["payload"]["previous_severity"] == "warning"
    assert incident(engine, incident_id)["severity"] == "critical"


def test_routing_matches_owner_dataset_severity_and_kind(engine):
    channels = [channel("payments", match=MatchSpec(owner="payments")),
                channel("growth", match=MatchSpec(owner=["growth"])),
                channel("orders-glob", match=MatchSpec(dataset="ord*")),
                channel("schema-only", match=MatchSpec(kind=["schema"])),
                channel("info-only", match=MatchSpec(severity=["info"]))]
    run(engine, 0, [anomaly(0, score=0.95)], channels=channels)
    assert [r["channel"] for r in outbox_rows(engine)] == ["payments", "orders-glob"]


def test_silence_records_alerts_but_suppresses_notifications_until_it_ends(engine):
    with engine.begin() as conn:
        silence_store.create(conn, dataset="orders", owner=None, kind="volume",
                             starts_at=at(0) - timedelta(minutes=1), ends_at=at(1) + timedelta(
                                 seconds=1), comment="backfill", created_by="ops")
    outcome = run(engine, 0, [anomaly(0)])
    assert len(outcome.opened) == 1 and outcome.notifications == 0 and outcome.suppressed == 1
    run(engine, 1, [anomaly(1)])
    assert outbox_rows(engine) == []
    with engine.connect() as conn:
        assert len(conn.execute(select(alerts)).all()) == 2
        actions = [e["action"] for e in incident_store.get_events(conn,
                                                                 incident_id=outcome.opened[0])]
    assert actions == ["opened", "silenced"]
    run(engine, 2, [anomaly(2)])  # the silence has ended: the incident is announced once
    run(engine, 3, [anomaly(3)])
    assert [r["event"] for r in outbox_rows(engine)] == ["opened"]


def test_silence_of_another_kind_or_dataset_does_not_apply(engine):
    with engine.begin() as conn:
        silence_store.create(conn, dataset="orders", owner=None, kind="schema",
                             starts_at=at(0) - timedelta(hours=1), ends_at=at(0) + timedelta(
                                 hours=1), comment=None, created_by="ops")
        silence_store.create(conn, dataset="payments", owner=None, kind=None,
                             starts_at=at(0) - timedelta(hours=1), ends_at=at(0) + timedelta(
                                 hours=1), comment=None, created_by="ops")
    assert run(engine, 0, [anomaly(0)]).notifications == 1


def test_owner_wide_maintenance_window_silences_every_kind(engine):
    with engine.begin() as conn:
        silence_store.create(conn, dataset=None, owner="payments", kind=None,
                             starts_at=at(0) - timedelta(hours=1), ends_at=at(0) + timedelta(
                                 hours=1), comment="maintenance", created_by="ops")
    outcome = run(engine, 0, [anomaly(0), anomaly(0, metric="schema.new_fields")])
    assert len(outcome.opened) == 2 and outcome.notifications == 0


def test_acknowledge_then_resolve_with_audit_trail_and_conflicts(engine):
    incident_id = run(engine, 0, [anomaly(0)]).opened[0]
    chans = [channel()]
    with engine.begin() as conn:
        row = actions.acknowledge(conn, incident_id=incident_id, actor="alice", comment="on it",
                                  notifications=chans, public_url=URL, now=at(1))
    assert row["status"] == "acknowledged" and row["acknowledged_at"] == at(1)
    with pytest.raises(ConflictError), engine.begin() as conn:
        actions.acknowledge(conn, incident_id=incident_id, actor="bob", notifications=chans,
                            public_url=URL)
    with engine.begin() as conn:
        row = actions.resolve(conn, incident_id=incident_id, actor="alice",
                              comment="fixed upstream", notifications=chans, public_url=URL,
                              now=at(2))
    assert row["status"] == "resolved"
    with pytest.raises(ConflictError), engine.begin() as conn:
        actions.resolve(conn, incident_id=incident_id, actor="bob", notifications=chans,
                        public_url=URL)
    with pytest.raises(ConflictError), engine.begin() as conn:
        actions.acknowledge(conn, incident_id=incident_id, actor="bob", notifications=chans,
                            public_url=URL)
    notes = outbox_rows(engine)
    assert [r["event"] for r in notes] == ["opened", "acknowledged", "resolved"]
    assert notes[1]["payload"]["actor"] == "alice" and notes[1]["payload"]["comment"] == "on it"
    with engine.connect() as conn:
        trail = [(e["action"], e["actor"]) for e in
                 incident_store.get_events(conn, incident_id=incident_id)]
    assert trail == [("opened", "dqpulse"), ("acknowledged", "alice"), ("resolved", "alice")]


def test_ack_and_resolve_go_only_to_channels_told_about_the_incident(engine):
    told = channel("told")
    later = channel("later")
    incident_id = run(engine, 0, [anomaly(0)], channels=[told]).opened[0]
    with engine.begin() as conn:
        actions.acknowledge(conn, incident_id=incident_id, actor="a", notifications=[told, later],
                            public_url=URL)
    assert {r["channel"] for r in outbox_rows(engine)} == {"told"}


def test_false_positive_feedback_resolves_and_names_the_windows(engine):
    incident_id = run(engine, 0, [anomaly(0, metric="completeness.null_ratio", field="email")]
                      ).opened[0]
    run(engine, 1, [anomaly(1, metric="completeness.null_ratio", field="email")])
    with engine.begin() as conn:
        target = actions.add_feedback(conn, incident_id=incident_id, verdict="false_positive",
                                      comment="expected after the migration", actor="analyst",
                                      notifications=[channel()], public_url=URL)
    assert target.dataset == "orders" and target.metric == "completeness.null_ratio"
    assert target.field == "email" and target.window_starts == [window(0)[0], window(1)[0]]
    row = incident(engine, incident_id)
    assert row["status"] == "resolved" and row["feedback"] == "false_positive"
    with pytest.raises(ValidationError), engine.begin() as conn:
        actions.add_feedback(conn, incident_id=incident_id, verdict="meh", comment=None, actor="x")


def test_confirmed_feedback_keeps_incident_open(engine):
    incident_id = run(engine, 0, [anomaly(0)]).opened[0]
    with engine.begin() as conn:
        actions.add_feedback(conn, incident_id=incident_id, verdict="confirmed", comment=None,
                             actor="analyst")
    assert incident(engine, incident_id)["status"] == "open"


def test_storm_of_anomalies_makes_few_incidents_and_few_notifications(engine):
    metrics = ["volume.records", "completeness.null_ratio", "validity.violation_ratio",
               "distribution.psi", "freshness.seconds_since_last_record"]
    opened = set()
    for index in range(5):
        batch = [anomaly(index, metric=metrics[i % len(metrics)], field=f"f{i % 17}",
                         score=0.9 + (i % 10) / 100) for i in range(100)]
        outcome = run(engine, index, batch)
        opened.update(outcome.opened)
    assert len(opened) <= 5
    assert len(outbox_rows(engine)) <= 2 * len(opened)
    with engine.connect() as conn:
        assert len(conn.execute(select(alerts)).all()) == 500


def test_outbox_rows_have_unique_stable_keys(engine):
    chans = [channel("a"), channel("b")]
    incident_id = run(engine, 0, [anomaly(0)], channels=chans).opened[0]
    with engine.connect() as conn:
        keys = [r["idempotency_key"] for r in outbox_store.get_all(conn, incident_id=incident_id)]
    assert keys == [f"{incident_id}:opened:1:a", f"{incident_id}:opened:1:b"]
