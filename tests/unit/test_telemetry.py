"""Prometheus exposition: the data-quality collector over a real (SQLite) store, the names
table against METRIC_NAMES and docs/metrics.md, and the per-process counters."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from dqpulse.finalize.export import export_window
from dqpulse.metrics import METRIC_NAMES
from dqpulse.records import MetricPoint
from dqpulse.services.exposition import DatasetMetricsCollector, render
from dqpulse.services.exposition_names import DATA_FAMILIES, MAPPINGS
from dqpulse.spec import parse_spec
from dqpulse.store import checkpoints, datasets, incidents
from dqpulse.store import metrics as metric_store
from dqpulse.telemetry import Telemetry

ROOT = Path(__file__).resolve().parents[2]

SPEC = """
datasets:
  - {name: orders, topic: orders, owner: team-a, freshness_sla: 5m, quality_objective: 0.95}
  - {name: clicks, topic: clicks}
"""


def _write_window(conn, dataset: str, start: float, fields: int, records: float) -> None:
    points = [MetricPoint("volume.records", records), MetricPoint("quality.validity", 0.5),
              MetricPoint("freshness.event_lag_max_seconds", 3.0),
              MetricPoint("distribution.psi_baseline", 0.1, "f0"),
              *(MetricPoint("completeness.null_ratio", 0.01 * i, f"f{i}") for i in range(fields))]
    checkpoints.set_partition_count(conn, dataset=dataset, partition_count=1)
    metric_store.create_window(conn, dataset=dataset, window_start=start,
                               window_end=start + 60, points=points)
    metric_store.update_scores(conn, dataset=dataset, window_start=start,
                               scores=[("volume.records", "", 0.7, False, None)])
    checkpoints.mark_finalized(conn, dataset=dataset, until=start + 60, baseline=b"",
                               last_schema={})


def _open_incident(conn, dataset: str, kind: str, severity: str) -> None:
    now = datetime.now(UTC)
    incidents.create(conn, dataset=dataset, kind=kind, severity=severity, status="open",
                     dedup_key=f"{dataset}:{kind}:{severity}:{now.timestamp()}", opened_at=now,
                     last_alert_at=now, summary="s")


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple, float]:
    out = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
def exporter(engine):
    with engine.begin() as conn:
        datasets.apply_spec(conn, spec=parse_spec(SPEC))
        _write_window(conn, "orders", 0.0, fields=3, records=10)
        _write_window(conn, "orders", 60.0, fields=3, records=12)
        _write_window(conn, "clicks", 0.0, fields=3, records=5)
        _open_incident(conn, "orders", "volume", "critical")
        _open_incident(conn, "orders", "volume", "critical")
        _open_incident(conn, "clicks", "validity", "warning")
    collector = DatasetMetricsCollector(engine, field_series_budget=5)
    registry = CollectorRegistry()
    registry.register(collector)
    yield engine, registry, collector
    collector.close()


def test_newest_window_values_incidents_and_objectives_are_exported(exporter):
    _, registry, _ = exporter
    value = registry.get_sample_value
    assert value("dqpulse_volume_records", {"dataset": "orders"}) == 12  # newest window
    assert value("dqpulse_volume_records", {"dataset": "clicks"}) == 5
    assert value("dqpulse_quality_score_ratio",
                 {"dataset": "orders", "dimension": "validity"}) == 0.5
    assert value("dqpulse_freshness_event_lag_seconds",
                 {"dataset": "orders", "quantile": "1"}) == 3
    assert value("dqpulse_anomaly_score",
                 {"dataset": "orders", "metric": "volume.records", "field": ""}) == 0.7
    assert value("dqpulse_incidents_open",
                 {"dataset": "orders", "kind": "volume", "severity": "critical"}) == 2
    assert value("dqpulse_dataset_freshness_objective_seconds", {"dataset": "orders"}) == 300
    assert value("dqpulse_dataset_quality_objective_ratio", {"dataset": "orders"}) == 0.95
    assert value("dqpulse_dataset_quality_objective_ratio", {"dataset": "clicks"}) is None
    assert value("dqpulse_dataset_last_window_end_timestamp_seconds",
                 {"dataset": "orders"}) == 120
    assert value("dqpulse_dataset_info",
                 {"dataset": "orders", "owner": "team-a", "topic": "orders"}) == 1
    assert value("dqpulse_exporter_leader") == 1


def test_field_series_budget_is_shared_round_robin_and_what_it_drops_is_counted(exporter):
    _, registry, _ = exporter
    # 2 datasets x (3 null ratios + 1 drift) = 8 per-field series, budget 5
    admitted = [labels for name in ("dqpulse_completeness_null_ratio",
                                    "dqpulse_distribution_drift")
                for labels in _samples(registry, name)]
    per_dataset = {d: sum(1 for labels in admitted if ("dataset", d) in labels)
                   for d in ("orders", "clicks")}
    assert sorted(per_dataset.values()) == [2, 3]
    assert registry.get_sample_value("dqpulse_exporter_field_series_over_budget") == 3
    before = registry.get_sample_value("dqpulse_exporter_field_series_dropped_total")
    generate_latest(registry)
    assert registry.get_sample_value("dqpulse_exporter_field_series_dropped_total") > before


def test_a_removed_dataset_has_no_series_at_the_next_scrape(exporter):
    engine, registry, _ = exporter
    assert _samples(registry, "dqpulse_volume_records")
    with engine.begin() as conn:
        datasets.apply_spec(conn, spec=parse_spec(SPEC.replace(
            "  - {name: clicks, topic: clicks}\n", "")), prune=True)
    text = generate_latest(registry).decode()
    assert 'dataset="clicks"' not in text
    assert 'dataset="orders"' in text


def _lines(text: str) -> list[str]:
    # what varies from scrape to scrape by itself: the collection time, the summed drops
    return sorted(line for line in text.splitlines()
                  if "collect_duration" not in line and "dropped_total" not in line)


def test_the_rendered_scrape_is_generate_latest_and_follows_every_change(exporter):
    """render() reuses each dataset's lines while its inputs are unchanged: the body is
    what generate_latest writes for the same samples, before and after a dataset moves,
    an incident opens and the budget's shares change."""
    engine, registry, _ = exporter
    first = render(registry).decode()
    assert _lines(first) == _lines(generate_latest(registry).decode())
    assert _lines(render(registry).decode()) == _lines(first)  # nothing moved: the same
    with engine.begin() as conn:
        _write_window(conn, "clicks", 60.0, fields=1, records=7)  # fewer fields: shares move
        _open_incident(conn, "clicks", "schema", "warning")
    moved = render(registry).decode()
    assert 'dqpulse_volume_records{dataset="clicks"} 7.0' in moved
    assert 'dqpulse_incidents_open{dataset="clicks",kind="schema",severity="warning"} 1.0' in moved
    assert 'dqpulse_volume_records{dataset="clicks"} 5.0' not in moved
    assert _lines(moved) == _lines(generate_latest(registry).decode())
    assert registry.get_sample_value("dqpulse_volume_records", {"dataset": "orders"}) == 12


def test_warm_collects_once_so_the_first_scrape_finds_every_window_read(exporter):
    engine, registry, collector = exporter
    assert collector.leadership is not None  # an engine of its own: warm() runs
    collector.warm()
    assert set(collector._windows) == {"orders", "clicks"}
    assert set(collector._fragments) == {"orders", "clicks"}


def test_every_metric_name_has_a_prometheus_family_documented_in_docs_metrics():
    assert set(MAPPINGS) == set(METRIC_NAMES)
    docs = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(dqpulse_[a-z_]+)`", docs, flags=re.M))
    families = [*Telemetry(CollectorRegistry()).registry.collect(),
                *DatasetMetricsCollector(None, elect=False).describe()]  # type: ignore[arg-type]
    exported = {family.name for family in DATA_FAMILIES}
    exported |= {family.name + ("_total" if family.type == "counter" else "")
                 for family in families}
    assert exported <= documented, sorted(exported - documented)
    assert documented <= exported, sorted(documented - exported)
    for name in exported:  # Prometheus naming: no unit-less counters, base units only
        assert not re.search(r"_(milliseconds|minutes|hours|kilobytes|percent)\b", name)


def test_a_finalized_window_is_counted_by_the_process_that_finalized_it():
    telemetry = Telemetry(CollectorRegistry())
    export_window(telemetry, "orders", [MetricPoint("volume.records", 120.0)])
    assert telemetry.registry.get_sample_value("dqpulse_windows_finalized_total",
                                               {"dataset": "orders"}) == 1
    assert telemetry.registry.get_sample_value("dqpulse_volume_records",
                                               {"dataset": "orders"}) is None


def test_a_failing_database_read_is_counted_and_the_scrape_still_answers(tmp_path):
    from dqpulse.store.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'unmigrated.db'}")  # no tables at all
    registry = CollectorRegistry()
    registry.register(DatasetMetricsCollector(engine))
    text = generate_latest(registry).decode()
    assert "dqpulse_exporter_errors_total 1.0" in text
    assert "dqpulse_volume_records{" not in text
    engine.dispose()
