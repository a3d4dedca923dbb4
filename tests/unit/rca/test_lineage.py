from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dqpulse.errors import ValidationError
from dqpulse.rca.attribution import field_attribution, root_cause
from dqpulse.rca.lineage import Edge, LineageGraph, edges_from_openlineage

GRAPH = LineageGraph([Edge("raw", "clean"), Edge("clean", "orders"), Edge("orders", "report"),
                      Edge("report", "raw")])  # a cycle must not loop forever


def test_walk_upstream_and_downstream_nearest_first_without_cycles():
    up = GRAPH.walk("orders", "upstream", depth=5)
    assert [(r.dataset, r.depth) for r in up] == [("clean", 1), ("raw", 2), ("report", 3)]
    down = GRAPH.walk("orders", "downstream", depth=1)
    assert [r.dataset for r in down] == ["report"]


def test_openlineage_event_becomes_edges_and_kafka_topics_map_to_datasets():
    event = {"eventType": "COMPLETE", "job": {"namespace": "spark", "name": "enrich"},
             "inputs": [{"namespace": "kafka://127.0.0.1:19092", "name": "orders-raw"}],
             "outputs": [{"namespace": "kafka://127.0.0.1:19092", "name": "orders"}]}
    edges = edges_from_openlineage(event, {"orders-raw": "orders_raw", "orders": "orders"})
    assert edges == [Edge("orders_raw", "orders", "spark/enrich", "openlineage")]


@pytest.mark.parametrize("event, message", [
    ({"inputs": []}, "job.name"),
    ({"job": {"name": "j"}, "inputs": {"name": "x"}}, "'inputs' must be a list"),
    ({"job": {"name": "j"}, "outputs": [{"namespace": "n"}]}, "outputs[0].name"),
])
def test_malformed_openlineage_event_names_the_field(event, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        edges_from_openlineage(event, {})


def test_root_cause_prefers_an_upstream_incident_that_opened_earlier():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    incident = {"id": 9, "dataset": "orders", "kind": "volume", "opened_at": t0}
    upstream = {"raw": [{"id": 3, "kind": "freshness", "opened_at": t0 - timedelta(minutes=5),
                         "resolved_at": None}],
                "clean": [{"id": 4, "kind": "volume", "opened_at": t0 - timedelta(days=2),
                           "resolved_at": t0 - timedelta(days=1)}]}
    alerts = [{"metric": "volume.records", "field": "", "window_start": 10.0, "score": 0.99},
              {"metric": "completeness.null_ratio", "field": "amount", "window_start": 5.0,
               "score": 0.95}]
    body = root_cause(incident, alerts, GRAPH, upstream)
    assert [s["dataset"] for s in body["suspects"]] == ["raw"]
    assert body["suspects"][0]["path"] == ["raw", "clean", "orders"]
    assert [i["dataset"] for i in body["impacted"]] == ["report", "raw", "clean"]
    assert body["fields"][0]["field"] == "amount"  # broke first


def test_without_upstream_incidents_the_dataset_itself_is_the_suspect():
    incident = {"id": 1, "dataset": "orders", "kind": "schema",
                "opened_at": datetime(2026, 1, 1, tzinfo=UTC)}
    body = root_cause(incident, [], GRAPH, {})
    assert body["suspects"][0]["dataset"] == "orders"


def test_field_attribution_shares_sum_to_one():
    alerts = [{"metric": "m", "field": f, "window_start": 1.0, "score": s}
              for f, s in (("a", 0.9), ("b", 0.95), ("a", 0.99))]
    ranked = field_attribution(alerts)
    assert sum(e["share"] for e in ranked) == pytest.approx(1.0, abs=1e-3)
    assert {e["field"]: e["alerts"] for e in ranked} == {"a": 2, "b": 1}
