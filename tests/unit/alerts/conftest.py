"""Builders for the alerting unit tests (the ``engine`` fixture is tests/unit/conftest.py's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dqpulse.alerts.anomalies import Anomaly
from dqpulse.spec import DatasetSpec, NotificationSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = 60.0


def dataset(**overrides: Any) -> DatasetSpec:
    values: dict[str, Any] = {"name": "orders", "topic": "orders", "owner": "payments",
                              "window": "1m"}
    values.update(overrides)
    return DatasetSpec.model_validate(values)


def channel(name: str = "oncall", type_: str = "webhook", **overrides: Any) -> NotificationSpec:
    values: dict[str, Any] = {"name": name, "type": type_,
                              "url": f"http://127.0.0.1:9/{name}", "secret": "s3cret"}
    values.update(overrides)
    return NotificationSpec.model_validate(values)


def window(index: int) -> tuple[float, float]:
    start = T0.timestamp() + index * WINDOW
    return start, start + WINDOW


def at(index: int) -> datetime:
    """Wall-clock time when window ``index`` is finalized."""
    return T0 + timedelta(seconds=(index + 1) * WINDOW + 30)


def anomaly(index: int, *, metric: str = "volume.records", field: str = "",
            score: float = 0.95, kind: str | None = None, severity: str | None = None,
            observed: float = 12.0) -> Anomaly:
    from dqpulse.alerts.anomalies import kind_of_metric

    start, end = window(index)
    return Anomaly(dataset="orders", kind=kind or kind_of_metric(metric), metric=metric,
                   field=field, window_start=start, window_end=end, score=score,
                   severity=severity,
                   explanation={"expected_low": 950.0, "expected_high": 1050.0,
                                "observed": observed, "direction": "down"})
