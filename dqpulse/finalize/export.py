"""Prometheus exposition of finalized windows: dataset-level values as gauges."""

from __future__ import annotations

import math
from collections.abc import Sequence

from dqpulse.records import MetricPoint
from dqpulse.telemetry import Telemetry

# Per-field series exported as gauges; the budget in Telemetry bounds their label values.
FIELD_GAUGES = ("completeness.null_ratio", "validity.violation_ratio", "distribution.psi")


def export_window(telemetry: Telemetry, dataset: str, points: Sequence[MetricPoint]) -> None:
    """Publish a finalized window's dataset-level values as Prometheus gauges."""
    telemetry.windows_finalized.labels(dataset).inc()
    for point in points:
        if point.value is None or (isinstance(point.value, float) and math.isnan(point.value)):
            continue
        if point.field == "":
            if point.metric == "volume.records":
                telemetry.volume_records.labels(dataset).set(point.value)
            elif point.metric == "freshness.seconds_since_last_record":
                telemetry.seconds_since_last_record.labels(dataset).set(point.value)
            elif point.metric == "freshness.consumer_lag_records":
                telemetry.consumer_lag.labels(dataset).set(point.value)
            elif point.metric.startswith("quality."):
                telemetry.quality_score.labels(dataset,
                                               point.metric.split(".", 1)[1]).set(point.value)
        elif point.metric in FIELD_GAUGES:
            telemetry.set_field_metric(dataset, point.field, point.metric, point.value)
