"""API shapes (``XRead``/``XPage``); the public contract of DESIGN.md."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


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


class SeriesRead(BaseModel):
    metric: str
    field: str
    points: int
    first_window: float
    last_window: float


class PointRead(BaseModel):
    window_start: float
    value: float | None
    score: float | None
    anomalous: bool
    explanation: dict[str, Any] | None = None


class MetricSeriesRead(BaseModel):
    dataset: str
    metric: str
    field: str
    step: float | None
    points: list[PointRead]


class SchemaVersionRead(BaseModel):
    version: int
    fields: dict[str, list[str]]
    diff: dict[str, Any]
    first_seen: float
    last_seen: float
