"""Prometheus counters of finalized windows (this process's work).

The values of a finalized window are not exported from here: one process reads them from
the database at scrape time (:mod:`dqpulse.services.exposition`), so a value is exported
once however many workers finalize, and goes when its dataset goes.
"""

from __future__ import annotations

from collections.abc import Sequence

from dqpulse.records import MetricPoint
from dqpulse.telemetry import Telemetry


def export_window(telemetry: Telemetry, dataset: str, points: Sequence[MetricPoint]) -> None:
    """Count a window this process finalized."""
    del points  # the values are read from the database by the exposition collector
    telemetry.windows_finalized.labels(dataset).inc()
