"""FastAPI application factory."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from sqlalchemy import Engine

from dqpulse.config import Settings
from dqpulse.store.db import make_engine
from dqpulse.telemetry import Telemetry
from service import errors
from service.routers import datasets, health

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               telemetry: Telemetry | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="dqpulse",
        version="0.1.0",
        description="Streaming data-quality observability: metric history, incidents, "
                    "root cause and lineage of the datasets dqpulse watches.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.engine = engine or make_engine(settings.database_url)
    app.state.telemetry = telemetry or Telemetry(field_metric_budget=settings.field_metric_budget)
    errors.install(app)

    api = APIRouter(prefix=API_PREFIX)
    api.include_router(datasets.router)
    for module_name in ("incidents", "silences", "lineage"):
        try:
            module = __import__(f"service.routers.{module_name}", fromlist=["router"])
        except ModuleNotFoundError:
            continue
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router)

    @app.middleware("http")
    async def count_requests(request: Request,
                             call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        app.state.telemetry.http_requests.labels(request.method, path,
                                                 str(response.status_code)).inc()
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    return app
