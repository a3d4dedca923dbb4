"""Liveness, readiness and Prometheus exposition (outside /api/v1)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from dqpulse.services.exposition import render
from dqpulse.store.db import schema_behind
from service.deps import EngineDep, TelemetryDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database answers and is migrated")
def readyz(engine: EngineDep) -> Response:
    try:
        behind = schema_behind(engine)
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure
        return JSONResponse(status_code=503,
                            content={"status": "unavailable", "detail": type(exc).__name__})
    if behind is not None:  # "run `dqpulse migrate`"
        return JSONResponse(status_code=503, content={"status": "unavailable",
                                                      "detail": behind})
    return JSONResponse({"status": "ready"})


@router.get("/metrics", summary="Prometheus metrics of this process", include_in_schema=False)
def metrics(telemetry: TelemetryDep) -> Response:
    # the data-quality families come with their text (only moved datasets re-rendered)
    return Response(render(telemetry.registry), media_type=CONTENT_TYPE_LATEST)
