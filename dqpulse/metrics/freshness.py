"""Freshness: event-time lag (ingest time - event time) and time since the last record.

``freshness.seconds_since_last_record`` and ``freshness.consumer_lag_records`` come from
the finalize context (wall clock and consumer position), not from the records.
"""

from __future__ import annotations

import numpy as np

from dqpulse.metrics import sketches
from dqpulse.metrics.base import FamilyState, register_family
from dqpulse.metrics.codec import pack, unpack
from dqpulse.records import ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec


@register_family
class FreshnessState(FamilyState):
    family = "freshness"

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        self.lag = sketches.new_kll()
        self.lag_max: float | None = None
        self.min_event_time: float | None = None
        self.max_event_time: float | None = None

    def update(self, batch: ColumnBatch) -> None:
        if batch.event_times is None or batch.n == 0:
            return
        lag = batch.ingest_time - batch.event_times
        self.lag.update(lag)
        self.lag_max = _max(self.lag_max, float(lag.max()))
        self.min_event_time = _min(self.min_event_time, float(batch.event_times.min()))
        self.max_event_time = _max(self.max_event_time, float(batch.event_times.max()))

    def merge(self, other: FreshnessState) -> FreshnessState:
        self.lag.merge(other.lag)
        self.lag_max = _max(self.lag_max, other.lag_max)
        self.min_event_time = _min(self.min_event_time, other.min_event_time)
        self.max_event_time = _max(self.max_event_time, other.max_event_time)
        return self

    def to_bytes(self) -> bytes:
        return pack(
            {"lag_max": self.lag_max, "min_et": self.min_event_time, "max_et": self.max_event_time},
            [sketches.kll_bytes(self.lag)],
        )

    @classmethod
    def from_bytes(cls, spec: DatasetSpec, data: bytes) -> FreshnessState:
        header, blobs = unpack(data)
        state = cls(spec)
        state.lag = sketches.kll_load(blobs[0])
        state.lag_max = header["lag_max"]
        state.min_event_time = header["min_et"]
        state.max_event_time = header["max_et"]
        return state

    def share_within(self, seconds: float) -> float | None:
        """Share of records whose lag is at most ``seconds`` (from the KLL sketch)."""
        if self.lag.is_empty():
            return None
        return float(self.lag.get_cdf(np.array([seconds]), True)[0])

    def points(self) -> list[MetricPoint]:
        if self.lag.is_empty():
            p50 = p95 = None
        else:
            p50, p95 = (float(v) for v in sketches.quantiles(self.lag, [0.5, 0.95]))
        return [
            MetricPoint("freshness.event_lag_p50_seconds", p50),
            MetricPoint("freshness.event_lag_p95_seconds", p95),
            MetricPoint("freshness.event_lag_max_seconds", self.lag_max),
        ]


def _max(left: float | None, right: float | None) -> float | None:
    if left is None:
        return right
    return left if right is None else max(left, right)


def _min(left: float | None, right: float | None) -> float | None:
    if left is None:
        return right
    return left if right is None else min(left, right)
