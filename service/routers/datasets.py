"""Datasets, their metric series and schema versions."""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool

from dqpulse.access import Principal
from dqpulse.errors import ValidationError
from dqpulse.spec import DatasetSpec
from dqpulse.store import datasets as dataset_store
from dqpulse.store import incidents as incident_store
from dqpulse.store import metrics as metric_store
from dqpulse.store import schemas as schema_store
from dqpulse.store.rollups import resolution_for
from service.auth import PrincipalDep
from service.deps import ConnDep, EngineDep, Scope, ScopeDep
from service.errors import problems
from service.params import NO_NUL, DatasetName, TimeQuery, epoch
from service.schemas import (
    DatasetRead,
    MetricSeriesRead,
    QualityScores,
    SchemaVersionRead,
    SeriesRead,
)

router = APIRouter(prefix="/datasets", tags=["datasets"])

def _to_read(conn: ConnDep, spec: DatasetSpec) -> DatasetRead:
    latest = metric_store.get_latest_window(conn, dataset=spec.name)
    quality = {p["metric"].split(".", 1)[1]: p["value"] for p in latest
               if p["metric"].startswith("quality.") and p["field"] == ""}
    own_incidents = incident_store.count_active(conn, dataset=spec.name)
    impacts = incident_store.count_active_impacts(conn, dataset=spec.name)
    freshness = [p["value"] for p in latest
                 if p["metric"] == "freshness.seconds_since_last_record" and p["field"] == ""]
    return DatasetRead(
        name=spec.name, topic=spec.topic, format=spec.format, owner=spec.owner,
        window_seconds=spec.window, lateness_seconds=spec.lateness,
        freshness_sla_seconds=spec.freshness_sla,
        last_window_start=latest[0]["window_start"] if latest else None,
        quality=QualityScores(**{k: v for k, v in quality.items()
                                 if k in QualityScores.model_fields}),
        open_incidents=own_incidents + impacts,
        open_impacts=impacts,
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


# bounds of the history query: epoch seconds from 1970 to 9999, a step of 1 s to a year
MAX_TIME = 253_402_300_799.0
MAX_STEP = 366 * 86_400.0
_SOURCES = {None: "raw", 3600: "rollup_1h", 86_400: "rollup_1d"}


def encode_cursor(before: float, step: float | None) -> str:
    raw = json.dumps({"v": 1, "before": before, "step": step}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, step: float | None) -> float:
    """The exclusive upper time bound of the page a cursor names; 422 for anything this
    API did not hand out for the same step."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        before = float(data["before"])
        ok = data["v"] == 1 and data["step"] == step and 0 <= before <= MAX_TIME
    except (ValueError, TypeError, KeyError, binascii.Error):
        ok = False
    if not ok:
        raise ValidationError("query parameter 'cursor': not a cursor of this series and "
                              "step (take 'next_cursor' of the previous page unchanged)")
    return before


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


# A page's points become JSON here, as plain dicts (the keys and order of PointRead):
# building 672 pydantic models and dumping them cost more than the query itself
def _bucket_points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"window_start": float(r["window_start"]), "value": _num(r["value"]),
             "score": _num(r["score"]), "anomalous": bool(r["anomalous"]),
             "explanation": None, "expected_low": _num(r["expected_low"]),
             "expected_high": _num(r["expected_high"]),
             "points": None if r["points"] is None else int(r["points"]),
             "min": _num(r["min"]), "max": _num(r["max"]), "last": _num(r["last"])}
            for r in rows]


def _raw_points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"window_start": float(r["window_start"]), "value": _num(r["value"]),
             "score": _num(r["score"]), "anomalous": bool(r["anomalous"]),
             "explanation": r["explanation"],
             "expected_low": _band(r["explanation"], "expected_low"),
             "expected_high": _band(r["explanation"], "expected_high"),
             "points": None, "min": None, "max": None, "last": None} for r in rows]


def _series_body(**body: Any) -> Response:
    """A :class:`MetricSeriesRead` as JSON, by orjson (non-finite numbers as null, as
    pydantic writes them); the route's response model documents it."""
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/{name}/metrics/{metric}", response_model=MetricSeriesRead,
            summary="Points of one metric series, newest page first",
            description="Raw points, or with `step` buckets aggregated in the database: from "
                        "the daily rollup when `step` is a whole number of days, the hourly "
                        "one when a whole number of hours, else from the points. A page "
                        "holds the newest `limit` points of the range, oldest first; "
                        "`truncated` says more are older, `next_cursor` (and the `Link` "
                        "header) fetches them.",
            responses=problems(404))
async def get_series(
    name: DatasetName,
    metric: Annotated[str, Path(pattern=r"^[a-z_]+\.[a-z0-9_]+$", max_length=120)],
    engine: EngineDep,
    principal: PrincipalDep,
    request: Request,
    field: Annotated[str, Query(description="Field path for per-field metrics",
                                max_length=500, pattern=NO_NUL)] = "",
    start: TimeQuery = None,
    end: TimeQuery = None,
    step: Annotated[float | None, Query(ge=1, le=MAX_STEP,
                                        description="Bucket size in seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000,
                                description="Points (or buckets) per page")] = 10_000,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_-]*$",
                                        description="'next_cursor' of the previous page")
                      ] = None,
) -> Response:
    # the whole read in one trip to the threadpool (a sync handler with its connection
    # and scope as dependencies made three): the hottest read of the API
    return await run_in_threadpool(_read_series, engine, principal, request, name, metric,
                                   field, epoch(start), epoch(end), step, limit, cursor)


def _read_series(engine: Engine, principal: Principal, request: Request, name: str,
                 metric: str, field: str, start_s: float | None, end_s: float | None,
                 step: float | None, limit: int, cursor: str | None) -> Response:
    with engine.begin() as conn:
        Scope(principal, conn).dataset(name)
        return _series_page(conn, request, name, metric, field, start_s, end_s, step, limit,
                            cursor)


def _series_page(conn: Connection, request: Request, name: str, metric: str, field: str,
                 start_s: float | None, end_s: float | None, step: float | None, limit: int,
                 cursor: str | None) -> Response:
    if start_s is not None and end_s is not None and start_s >= end_s:
        # an empty range: no points (a well-formed request is not an error)
        return _series_body(dataset=name, metric=metric, field=field, step=step,
                            source=_SOURCES[resolution_for(step) if step else None],
                            points=[], truncated=False, next_cursor=None)
    before = decode_cursor(cursor, step) if cursor else None  # empty: the first page
    query = {"dataset": name, "metric": metric, "field": field, "start": start_s,
             "end": end_s, "before": before, "limit": limit + 1}
    if step is not None:
        # aggregated in the database: a 30-day range of 1-minute windows is one query
        rows = metric_store.get_buckets(conn, step=step, **query)
    else:
        rows = metric_store.get_points(conn, **query)
    truncated = len(rows) > limit
    rows = rows[1:] if truncated else rows  # the oldest one only said that there are more
    next_cursor = encode_cursor(float(rows[0]["window_start"]), step) if truncated else None
    points = _bucket_points(rows) if step is not None else _raw_points(rows)
    source = _SOURCES[resolution_for(step) if step is not None else None]
    response = _series_body(dataset=name, metric=metric, field=field, step=step,
                            source=source, points=points, truncated=truncated,
                            next_cursor=next_cursor)
    if next_cursor is not None:
        link = request.url.include_query_params(cursor=next_cursor)
        response.headers["Link"] = f'<{link}>; rel="next"'
    return response


@router.get("/{name}/schema", response_model=list[SchemaVersionRead],
            summary="Observed schema versions with diffs", responses=problems(404))
def get_schema(name: DatasetName, conn: ConnDep, scope: ScopeDep) -> list[SchemaVersionRead]:
    scope.dataset(name)
    return [SchemaVersionRead(**{k: row[k] for k in SchemaVersionRead.model_fields})
            for row in schema_store.get_all(conn, dataset=name)]
