"""API shapes (``XRead``/``XPage``); the public contract of DESIGN.md."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class QualityScores(BaseModel):
    completeness: float | None = None
    timeliness: float | None = None
    validity: float | None = None
    consistency: float | None = None
    uniqueness: float | None = None


class DatasetRead(BaseModel):
    name: str
    topic: str
    format: str
    owner: str | None
    window_seconds: float
    lateness_seconds: float
    freshness_sla_seconds: float | None
    last_window_start: float | None = None
    quality: QualityScores = QualityScores()
    open_incidents: int = Field(
        default=0, description="open or acknowledged incidents that hit the dataset: its own "
                               "and those of upstream breaks it is an impact of")
    open_impacts: int = Field(
        default=0, description="of open_incidents, those of upstream datasets that this "
                               "dataset is an impact of (one incident per break)")
    seconds_since_last_record: float | None = Field(
        default=None, description="freshness in the newest window (compare with the SLA)")
    contract: dict[str, Any] = Field(
        default_factory=dict,
        description="the declared contract from dqpulse.yaml: event_time, key, label, "
                    "fairness and fields with their rules (type, required, min, max, "
                    "allowed, pattern, ...)")


class SeriesRead(BaseModel):
    metric: str
    field: str
    points: int | None = Field(description="point count; null with counts=false")
    first_window: float
    last_window: float


class PointRead(BaseModel):
    window_start: float = Field(description="window start, or bucket start with 'step' "
                                            "(epoch seconds)")
    value: float | None = Field(description="the point's value; with 'step' the mean")
    score: float | None = Field(description="anomaly score; with 'step' the highest")
    anomalous: bool = Field(description="with 'step': any window of the bucket")
    explanation: dict[str, Any] | None = None
    expected_low: float | None = Field(
        default=None, description="lower edge of the detector's expected band")
    expected_high: float | None = Field(
        default=None, description="upper edge of the detector's expected band")
    points: int | None = Field(
        default=None, description="raw points in the bucket (only with 'step')")
    min: float | None = Field(default=None, description="lowest value (only with 'step')")
    max: float | None = Field(default=None, description="highest value (only with 'step')")
    last: float | None = Field(
        default=None, description="value of the bucket's newest window (only with 'step')")


class MetricSeriesRead(BaseModel):
    dataset: str
    metric: str
    field: str
    step: float | None
    source: Literal["raw", "rollup_1h", "rollup_1d"] = Field(
        description="what the buckets were aggregated from: the raw points, or the hourly "
                    "or daily rollups (a step that is a whole number of days or hours)")
    points: list[PointRead] = Field(description="oldest first")
    truncated: bool = Field(
        description="true when the range holds more points (or buckets) than 'limit': "
                    "this page is the newest 'limit' of them; pass 'next_cursor' for the "
                    "older ones")
    next_cursor: str | None = Field(
        description="opaque cursor of the next (older) page; also in the 'Link' header "
                    "(rel=\"next\"); null on the last page")


class SchemaVersionRead(BaseModel):
    version: int
    fields: dict[str, list[str]]
    diff: dict[str, Any]
    first_seen: float
    last_seen: float
