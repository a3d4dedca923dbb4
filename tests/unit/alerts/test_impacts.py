"""One incident per break: downstream alerts join the upstream root's incident (issue 14)."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Engine, select

from dqpulse.alerts import incidents as inc
from dqpulse.alerts.impacts import Related
from dqpulse.alerts.notifiers.base import facts
from dqpulse.rca.attribution import root_cause
from dqpulse.rca.lineage import Edge, LineageGraph
from dqpulse.store import incidents as incident_store
from dqpulse.store.tables import notification_outbox

from .conftest import anomaly, at, channel, dataset, window

URL = "http://dq.example"
#  src -> join -> out   (owners: team-src, team-join, team-out)
GRAPH = LineageGraph([Edge("src", "join"), Edge("join", "out")])
OWNERS = {"src": "team-src", "join": "team-join", "out": "team-out"}
SEGMENT = {"dimension": "producer", "value": "svc-07", "share": 0.92,
           "text": "92% of the null increase in customer.segment comes from producer=svc-07"}


def related(name: str, slack_windows: float = 1.0) -> Related:
    return Related(
        upstream={r.dataset: r.depth for r in GRAPH.walk(name, "upstream", 5)},
        downstream={r.dataset: r.depth for r in GRAPH.walk(name, "downstream", 5)},
        owners=OWNERS, slack_windows=slack_windows)


def alert(name: str, index: int, score: float = 0.99):
    a = anomaly(index, metric="completeness.null_ratio", field="customer.segment",
                score=score)
    return replace(a, dataset=name, explanation={**a.explanation, "segment": SEGMENT})


def run(engine: Engine, name: str, index: int, *, alerts: bool = True,
        channels=None) -> inc.WindowOutcome:
    start, end = window(index)
    with engine.begin() as conn:
        return inc.process_window(
            conn, dataset=dataset(name=name, topic=name, owner=OWNERS[name]),
            window_start=start, window_end=end,
            anomalies=[alert(name, index)] if alerts else [],
            notifications=channels if channels is not None else [channel()],
            public_url=URL, now=at(index), related=related(name))


def incidents(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return sorted(incident_store.get_page(conn, limit=50), key=lambda r: r["id"])


def outbox(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(notification_outbox).order_by(notification_outbox.c.id)).mappings()]


def test_downstream_alerts_join_the_root_incident_as_impacts_with_owners(engine):
    root_id = run(engine, "src", 0).opened[0]
    joined = run(engine, "join", 0)
    out = run(engine, "out", 1)  # a window later: still within the slack
    assert joined.opened == [] and joined.impacts == [root_id]
    assert out.opened == [] and out.impacts == [root_id]
    [only] = incidents(engine)
    assert only["id"] == root_id and only["dataset"] == "src"
    assert only["alert_count"] == 3
    impacts = only["details"]["impacts"]
    assert [(i["dataset"], i["owner"], i["distance"]) for i in impacts] == [
        ("join", "team-join", 1), ("out", "team-out", 2)]
    assert impacts[0]["kinds"] == ["completeness"] and impacts[0]["segment"] == SEGMENT
    with engine.connect() as conn:
        rows = incident_store.get_alerts(conn, incident_id=root_id, limit=10)
        events = incident_store.get_events(conn, incident_id=root_id)
    assert sorted(r["dataset"] for r in rows) == ["join", "out", "src"]  # alerts keep theirs
    assert [e["action"] for e in events] == ["opened", "impact", "impact"]
    # one notification per impacted dataset, carrying the root and the impacts so far
    notes = outbox(engine)
    assert [n["event"] for n in notes] == ["opened", "impact", "impact"]
    last = notes[-1]["payload"]
    assert last["root"] == {"dataset": "src", "incident_id": root_id}
    assert [i["dataset"] for i in last["impacts"]] == ["join", "out"]
    assert last["segment"]["value"] == "svc-07"
    lines = dict(facts(last))
    assert lines["Impact"] == "join (team-join), out (team-out)"
    assert lines["Root cause"] == f"src (incident #{root_id})"
    assert lines["Segment"].startswith("92% of the null increase")


def test_more_alerts_of_a_joined_dataset_do_not_notify_again(engine):
    root_id = run(engine, "src", 0).opened[0]
    run(engine, "join", 0)
    again = run(engine, "join", 1)
    assert again.impacts == [root_id] and again.notifications == 0
    [only] = incidents(engine)
    [impact] = only["details"]["impacts"]
    assert impact["alerts"] == 2 and impact["last_window_end"] == window(1)[1]


def test_a_downstream_incident_that_opened_first_is_merged_into_the_root(engine):
    early = run(engine, "out", 0).opened[0]  # its worker finalized first
    root_id = run(engine, "src", 0).opened[0]
    merged = incidents(engine)
    assert [r["id"] for r in merged] == [early, root_id]
    down = merged[0]
    assert down["status"] == "resolved" and down["details"]["merged_into"] == root_id
    [impact] = merged[1]["details"]["impacts"]
    assert (impact["dataset"], impact["owner"], impact["distance"]) == ("out", "team-out", 2)
    assert impact["merged_incident_id"] == early
    # the downstream's later alerts go to the root, not to a new incident
    later = run(engine, "out", 1)
    assert later.opened == [] and later.impacts == [root_id]
    # channels told about the merged incident hear that it is resolved (merged)
    events = [(n["incident_id"], n["event"]) for n in outbox(engine)]
    assert events == [(early, "opened"), (root_id, "opened"), (root_id, "impact"),
                      (early, "resolved")]
    assert [i["dataset"] for i in outbox(engine)[2]["payload"]["impacts"]] == ["out"]


def test_alerts_outside_the_slack_open_their_own_incident(engine):
    root_id = run(engine, "src", 0).opened[0]
    far = run(engine, "join", 5)  # five windows after the root's last alerted window
    assert far.impacts == [] and len(far.opened) == 1
    assert {r["dataset"] for r in incidents(engine)} == {"src", "join"}
    assert incidents(engine)[0]["id"] == root_id


def test_unrelated_datasets_and_no_lineage_keep_their_own_incidents(engine):
    start, end = window(0)
    run(engine, "src", 0)
    with engine.begin() as conn:  # no ``related``: behaviour before issue 14
        outcome = inc.process_window(
            conn, dataset=dataset(name="join", topic="join"), window_start=start,
            window_end=end, anomalies=[alert("join", 0)], notifications=[channel()],
            public_url=URL, now=at(0))
    assert len(outcome.opened) == 1
    assert len(incidents(engine)) == 2


def test_root_cause_body_names_the_root_and_lists_impacts(engine):
    root_id = run(engine, "src", 0).opened[0]
    run(engine, "join", 0)
    run(engine, "out", 1)
    with engine.connect() as conn:
        incident = incident_store.get_or_raise(conn, incident_id=root_id)
        alerts = incident_store.get_alerts(conn, incident_id=root_id, limit=100)
    body = root_cause(incident, alerts, GRAPH, {}, owners=OWNERS)
    assert body["root"]["dataset"] == "src" and body["root"]["rank"] == 1
    assert body["root"]["segment"]["value"] == "svc-07"
    assert body["root"]["explains"] == ["join", "out"]
    assert [a["dataset"] for a in body["alternatives"]] == ["src", "join", "out"]
    assert [a["lineage_distance"] for a in body["alternatives"]] == [0, -1, -2]
    assert [(i["dataset"], i["owner"]) for i in body["impacts"]] == [
        ("join", "team-join"), ("out", "team-out")]


def test_a_nearer_root_merged_later_brings_its_impacts_along(engine):
    # join opens first, out joins join's incident; then src (farther upstream) opens
    nearer = run(engine, "join", 0).opened[0]
    assert run(engine, "out", 0).impacts == [nearer]
    root_id = run(engine, "src", 0).opened[0]
    rows = {r["id"]: r for r in incidents(engine)}
    assert rows[nearer]["details"]["merged_into"] == root_id
    impacts = rows[root_id]["details"]["impacts"]
    assert [(i["dataset"], i["distance"], i["merged_incident_id"]) for i in impacts] == [
        ("join", 1, nearer), ("out", 2, nearer)]
    root_events = [n["event"] for n in outbox(engine) if n["incident_id"] == root_id]
    assert root_events == ["opened", "impact", "impact"]
