"""Datasets, their metric series and schema versions."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from dqpulse.spec import DatasetSpec
from dqpulse.store import datasets as dataset_store
from dqpulse.store import incidents as incident_store
from dqpulse.store import metrics as metric_store
from dqpulse.store import schemas as schema_store
from service.deps import ConnDep, ScopeDep
from service.errors import problems
from service.params import NO_NUL, DatasetName, TimeQuery, epoch
from service.schemas import (
    DatasetRead,
    MetricSeriesRead,
    PointRead,
    QualityScores,
    SchemaVersionRead,
    SeriesRead,
)

router = APIRouter(prefix="/datasets", tags=["datasets"])

MAX_STEP_S = 3_162_240_000.0  # 100 years: a bucket beyond that is one bucket anyway


def _to_read(conn: ConnDep, spec: DatasetSpec) -> DatasetRead:
    latest = metric_store.get_latest_window(conn, dataset=spec.name)
    quality = {p["metric"].split(".", 1)[1]: p["value"] for p in latest
               if p["metric"].startswith("quality.") and p["field"] == ""}
    freshness = [p["value"] for p in latest
                 if p["metric"] == "freshness.seconds_since_last_record" and p["field"] == ""]
    return DatasetRead(
        name=spec.name, topic=spec.topic, format=spec.format, owner=spec.owner,
        window_seconds=spec.window, lateness_seconds=spec.lateness,
        freshness_sla_seconds=spec.freshness_sla,
        last_window_start=latest[0]["window_start"] if latest else None,
        quality=QualityScores(**{k: v for k, v in quality.items()
                                 if k in QualityScores.model_fields}),
        open_incidents=incident_store.count_active(conn, dataset=spec.name),
        seconds_since_last_record=freshness[0] if freshness else None,
        contract=spec.model_dump(mode="json", exclude_none=True, exclude_defaults=True,
                                 include={"event_time", "key", "label", "fairness", "fields"}),
    )


@router.get("", response_model=list[DatasetRead],
            summary="List datasets with quality scores (the token's teams' datasets)")
def list_datasets(conn: ConnDep, scope: ScopeDep) -> list[DatasetRead]:
    return [_to_read(conn, spec) for spec in dataset_store.get_all(conn) if scope.sees(spec.name)]


@router.get("/{name}", response_model=DatasetRead, summary="One dataset with quality scores",
            responses=problems(404))
def get_dataset(name: DatasetName, conn: ConnDep, scope: ScopeDep) -> DatasetRead:
    scope.dataset(name)
    return _to_read(conn, dataset_store.get_or_raise(conn, name=name))


@router.get("/{name}/metrics", response_model=list[SeriesRead],
            summary="Metric series of a dataset", responses=problems(404))
def list_series(
    name: DatasetName,
    conn: ConnDep,
    scope: ScopeDep,
    counts: Annotated[bool, Query(
        description="Count each series' points; false skips the count ('points' is null), "
                    "which stays fast on months of history (the console uses it)")] = True,
) -> list[SeriesRead]:
    scope.dataset(name)
    if not counts:
        return [SeriesRead(**row, points=None)
                for row in metric_store.get_series_names(conn, dataset=name)]
    return [SeriesRead(**row) for row in metric_store.get_series_list(conn, dataset=name)]


def _band(explanation: dict[str, Any] | None, key: str) -> float | None:
    value = (explanation or {}).get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


@router.get("/{name}/metrics/{metric}", response_model=MetricSeriesRead,
            summary="Points of one metric series", responses=problems(404))
def get_series(
    name: DatasetName,
    metric: Annotated[str, Path(pattern=r"^[a-z_]+\.[a-z0-9_]+$", max_length=120)],
    conn: ConnDep,
    scope: ScopeDep,
    field: Annotated[str, Query(description="Field path for per-field metrics",
                                max_length=500, pattern=NO_NUL)] = "",
    start: TimeQuery = None,
    end: TimeQuery = None,
    step: Annotated[float | None, Query(ge=1, le=MAX_STEP_S,
                                        description="Bucket size in seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> MetricSeriesRead:
    scope.dataset(name)
    start_s, end_s = epoch(start), epoch(end)
    if start_s is not None and end_s is not None and start_s >= end_s:
        # an empty range: no points (a well-formed request is not an error)
        return MetricSeriesRead(dataset=name, metric=metric, field=field, step=step, points=[])
    if step is not None:
        # aggregated in the database: a 30-day range of 1-minute windows is one query
        buckets = metric_store.get_buckets(conn, dataset=name, metric=metric, field=field,
                                           step=step, start=start_s, end=end_s, limit=limit)
        points = [PointRead(window_start=r["window_start"], value=r["value"], score=r["score"],
                            anomalous=bool(r["anomalous"]), expected_low=r["expected_low"],
                            expected_high=r["expected_high"], points=r["points"])
                  for r in buckets]
        return MetricSeriesRead(dataset=name, metric=metric, field=field, step=step,
                                points=points)
    rows = metric_store.get_points(conn, dataset=name, metric=metric, field=field,
                                   start=start_s, end=end_s, limit=limit)
    points = [PointRead(window_start=r["window_start"], value=r["value"], score=r["score"],
                        anomalous=bool(r["anomalous"]), explanation=r["explanation"],
                        expected_low=_band(r["explanation"], "expected_low"),
                        expected_high=_band(r["explanation"], "expected_high"))
              for r in rows]
    return MetricSeriesRead(dataset=name, metric=metric, field=field, step=step, points=points)


@router.get("/{name}/schema", response_model=list[SchemaVersionRead],
            summary="Observed schema versions with diffs", responses=problems(404))
def get_schema(name: DatasetName, conn: ConnDep, scope: ScopeDep) -> list[SchemaVersionRead]:
    scope.dataset(name)
    return [SchemaVersionRead(**{k: row[k] for k in SchemaVersionRead.model_fields})
            for row in schema_store.get_all(conn, dataset=name)]
