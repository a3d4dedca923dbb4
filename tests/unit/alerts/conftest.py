"""SQLite at ``alembic upgrade head`` for the alerting unit tests (no services needed)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from dqpulse.alerts.anomalies import Anomaly
from dqpulse.spec import DatasetSpec, NotificationSpec
from dqpulse.store.db import make_engine, upgrade_to_head

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = 60.0


@pytest.fixture(scope="session")
def _migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("alerts-db") / "template.db"
    upgrade_to_head(f"sqlite:///{path}")
    return path


@pytest.fixture
def engine(_migrated_template: Path, tmp_path: Path) -> Iterator[Engine]:
    target = tmp_path / "alerts.db"
    target.write_bytes(_migrated_template.read_bytes())
    eng = make_engine(f"sqlite:///{target}")
    yield eng
    eng.dispose()


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
