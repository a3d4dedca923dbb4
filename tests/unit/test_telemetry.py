from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from dqpulse.finalize.export import export_window
from dqpulse.records import MetricPoint
from dqpulse.telemetry import Telemetry


def _value(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    assert value is not None, name
    return value


def test_per_field_gauges_stop_at_the_budget_and_count_what_they_drop():
    telemetry = Telemetry(CollectorRegistry(), field_metric_budget=3)
    for index in range(5):
        telemetry.set_field_metric("orders", f"f{index}", "completeness.null_ratio", 0.1)
    telemetry.set_field_metric("orders", "f0", "completeness.null_ratio", 0.5)  # known: updates
    registry = telemetry.registry
    assert _value(registry, "dqpulse_field_metric_dropped_total") == 2
    assert _value(registry, "dqpulse_field_metric",
                  {"dataset": "orders", "field": "f0", "metric": "completeness.null_ratio"}) == 0.5
    assert registry.get_sample_value("dqpulse_field_metric", {
        "dataset": "orders", "field": "f4", "metric": "completeness.null_ratio"}) is None


def test_finalized_window_exports_dataset_gauges_in_base_units():
    telemetry = Telemetry(CollectorRegistry())
    export_window(telemetry, "orders", [
        MetricPoint("volume.records", 120.0),
        MetricPoint("freshness.seconds_since_last_record", 4.5),
        MetricPoint("quality.completeness", 0.98),
        MetricPoint("completeness.null_ratio", 0.02, field="amount"),
        MetricPoint("distribution.mean", float("nan"), field="amount"),
    ])
    registry = telemetry.registry
    assert _value(registry, "dqpulse_volume_records", {"dataset": "orders"}) == 120
    assert _value(registry, "dqpulse_freshness_seconds_since_last_record",
                  {"dataset": "orders"}) == 4.5
    assert _value(registry, "dqpulse_quality_score",
                  {"dataset": "orders", "dimension": "completeness"}) == pytest.approx(0.98)
    assert _value(registry, "dqpulse_windows_finalized_total", {"dataset": "orders"}) == 1
