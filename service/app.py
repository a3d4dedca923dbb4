"""FastAPI application factory."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from sqlalchemy import Engine

from dqpulse.config import Settings
from dqpulse.services.exposition import DatasetMetricsCollector
from dqpulse.services.model import ModelCache
from dqpulse.spec import Spec
from dqpulse.store.db import make_engine
from dqpulse.telemetry import Telemetry
from service import errors
from service.auth import TokenAuth
from service.routers import datasets, health, incidents, lineage, model, silences
from service.ui import install as install_console

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               telemetry: Telemetry | None = None, spec: Spec | None = None) -> FastAPI:
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

    # the applied model (channels for routing): from the database, never from a file
    app.state.model = ModelCache(app.state.engine, fixed=spec)
    # the data-quality series of the model's datasets, read at scrape time (exactly one
    # exporting process among the replicas: see dqpulse.services.exposition)
    app.state.exporter = DatasetMetricsCollector(
        app.state.engine, field_series_budget=app.state.telemetry.field_metric_budget,
        model=app.state.model.spec)
    app.state.telemetry.registry.register(app.state.exporter)

    auth = TokenAuth(settings, app.state.engine)
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(auth)])
    for router in (datasets.router, incidents.router, silences.router, lineage.router,
                   model.router):
        api.include_router(router)
    app.include_router(api)
    app.include_router(health.router)
    install_console(app)

    @app.middleware("http")
    async def count_requests(request: Request,
                             call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")  # the template: bounded label values
        if request.url.path.startswith(API_PREFIX) and not path.startswith(API_PREFIX):
            path = API_PREFIX + path
        telemetry = app.state.telemetry
        telemetry.http_requests.labels(request.method, path, str(response.status_code)).inc()
        telemetry.http_seconds.labels(request.method, path).observe(
            time.perf_counter() - started)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    return app
