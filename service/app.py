"""FastAPI application factory."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from sqlalchemy import Engine

from dqpulse.config import Settings
from dqpulse.services.exposition import DatasetMetricsCollector
from dqpulse.services.model import ModelCache
from dqpulse.spec import Spec
from dqpulse.store.db import make_engine, schema_behind_if_known
from dqpulse.telemetry import Telemetry
from service import errors
from service.auth import TokenAuth
from service.routers import (
    audit,
    datasets,
    health,
    incidents,
    lineage,
    model,
    silences,
    tokens,
)
from service.ui import install as install_console

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def _document_open_mode(app: FastAPI) -> None:
    """In open mode no request needs a token: the served OpenAPI document says so (no
    security requirement, no 401), so a client or a fuzzer reads the truth."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.pop("security", None)
                    operation.get("responses", {}).pop("401", None)
            schema.get("components", {}).pop("securitySchemes", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # the first scrape should not be the cold one (connections, statements, every
    # dataset's newest window): one collection in the background as the server starts
    threading.Thread(target=app.state.exporter.warm, name="exporter-warm",
                     daemon=True).start()
    if isinstance(app.state.engine, Engine):  # as warm(): never a test's shared connection
        threading.Thread(target=_say_if_schema_behind, args=(app.state.engine,),
                         name="schema-check", daemon=True).start()
    yield


def _say_if_schema_behind(engine: Engine) -> None:
    """At start: a database this version cannot serve is logged as what to do (its
    requests and /readyz answer 503 saying the same)."""
    behind = schema_behind_if_known(engine)  # not reachable now: requests, /readyz say so
    if behind is not None:
        log.error("the API cannot serve this database: %s", behind)


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               telemetry: Telemetry | None = None, spec: Spec | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        lifespan=_lifespan,
        title="dqpulse",
        version="0.1.0",
        description="Streaming data-quality observability: metric history, incidents, "
                    "root cause and lineage of the datasets dqpulse watches.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        responses=errors.problems(503),  # any route, when the database fails under it
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
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(auth)],
                    responses=errors.problems(401, 422))
    for router in (datasets.router, incidents.router, silences.router, lineage.router,
                   tokens.router, audit.router, model.router):
        api.include_router(router)
    app.include_router(api)
    app.include_router(health.router)
    if settings.auth == "open":
        _document_open_mode(app)
    install_console(app)
    # inside the request counter below, so a refused body is counted like any answer
    app.add_middleware(errors.BodySizeLimit, max_bytes=settings.api_max_body_bytes)

    @app.middleware("http")
    async def count_requests(request: Request,
                             call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")  # the template: bounded label values
        if (route is not None and request.url.path.startswith(API_PREFIX)
                and not path.startswith(API_PREFIX)):
            path = API_PREFIX + path
        telemetry = app.state.telemetry
        telemetry.http_requests.labels(request.method, path, str(response.status_code)).inc()
        telemetry.http_seconds.labels(request.method, path).observe(
            time.perf_counter() - started)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    return app
