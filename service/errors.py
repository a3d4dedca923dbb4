"""The one place that maps errors to HTTP responses, all with one documented body.

Every error the API answers is a :class:`Problem`: ``{"error": "<Type>", "detail": "..."}``
plus ``errors`` (one entry per bad parameter) for request validation. That covers
dqpulse's error tree, FastAPI's request validation, unknown paths (404), unsupported
methods (405, with an ``Allow`` header naming every method the path serves) and bodies
over ``DQPULSE_API_MAX_BODY_BYTES`` (413).
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dqpulse.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    DqpulseError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
)
from dqpulse.store.db import is_transient, schema_behind_if_known

_STATUS: list[tuple[type[DqpulseError], int]] = [
    (NotFoundError, 404),
    (ConflictError, 409),
    (ValidationError, 422),
    (ConfigError, 422),
    (AuthError, 401),
    (ForbiddenError, 403),
]
log = logging.getLogger(__name__)
# seconds a client is asked to wait after a 503 (a pool slot or a failover's reconnect)
DATABASE_RETRY_AFTER_S = 2
_HTTP_ERROR_NAMES = {404: "NotFoundError", 405: "MethodNotAllowedError",
                     413: "PayloadTooLargeError", 401: "AuthError"}
_MODEL_NAME = re.compile(r"^[A-Z][A-Za-z]+$")
_WHERE = {"query": "query parameter", "path": "path parameter", "body": "body field",
          "header": "header"}


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description="where: ['query', 'limit'], ['body', 'ends_at']")
    msg: str
    type: str


class Problem(BaseModel):
    """The body of every error response."""

    error: str = Field(description="error type: ValidationError, NotFoundError, AuthError, "
                                   "ForbiddenError, ConflictError, MethodNotAllowedError, "
                                   "PayloadTooLargeError")
    detail: str = Field(description="what is wrong, naming the parameter and the reason")
    errors: list[FieldProblem] | None = Field(
        default=None, description="request validation: one entry per bad parameter")


_DESCRIPTIONS = {400: "the request body is not JSON",
                 401: "missing, invalid, expired or revoked token",
                 403: "the token's role does not allow this action",
                 404: "no such object (or not one of the token's teams)",
                 409: "the request contradicts the object's state",
                 413: "request body too large",
                 422: "a parameter or body field is invalid",
                 503: "the database did not answer or aborted the request: try again "
                      "after Retry-After seconds"}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses."""
    return {code: {"model": Problem, "description": _DESCRIPTIONS[code]} for code in codes}


def problem_response(status: int, error: str, detail: str,
                     errors: list[dict[str, Any]] | None = None,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(error=error, detail=detail,
                   errors=[FieldProblem(**e) for e in errors] if errors is not None else None)
    return JSONResponse(status_code=status, headers=headers,
                        content=body.model_dump(exclude_none=True))


def _field_problem(error: dict[str, Any]) -> dict[str, Any]:
    loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
    return {"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}


def _describe(found: list[dict[str, Any]]) -> str:
    """``query parameter 'since': <why>`` per parameter (a union's alternatives joined)."""
    messages: dict[str, list[str]] = {}
    for problem in found:
        loc = problem["loc"]
        where = _WHERE.get(str(loc[0]), str(loc[0])) if loc else "request"
        if len(loc) > 1 and where == "body field":
            # a union's alternatives appear in loc by model name (CamelCase): not a field
            name = ".".join(str(p) for p in loc[1:] if not _MODEL_NAME.match(str(p)))
        else:
            name = str(loc[1]) if len(loc) > 1 else ""
        key = f"{where} {name!r}" if name else where
        if problem["msg"] not in messages.setdefault(key, []):
            messages[key].append(problem["msg"])
    return "; ".join(f"{key}: {' or '.join(msgs)}" for key, msgs in messages.items())


def _allowed_methods(request: Request, reported: str) -> list[str]:
    """Every method the app serves at this path: the router stops at the first route whose
    path matches, so its own ``Allow`` (``reported``) names only that route's methods."""
    methods = {m.strip().upper() for m in reported.split(",") if m.strip()}
    path = request.url.path
    for template, operations in request.app.openapi().get("paths", {}).items():
        regex, _, _ = compile_path(template)
        if regex.match(path):
            methods.update(method.upper() for method in operations)
    return sorted(methods)


def _lacks_schema(exc: Exception) -> bool:
    """A table or column that is not there (Postgres 42P01/42703, SQLite's wording)."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in ("42P01", "42703"):
        return True
    said = str(orig or exc)
    return "no such table" in said or "no such column" in said


def install(app: FastAPI) -> None:
    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # a schema never migrated, or behind this version: no table or column it needs
        behind = (await run_in_threadpool(schema_behind_if_known, request.app.state.engine)
                  if _lacks_schema(exc) else None)
        if behind is not None:
            log.error("%s %s: %s", request.method, request.url.path, behind)
            return problem_response(503, "DatabaseUnavailable", behind,
                                    headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})
        if not is_transient(exc):
            raise exc  # a fault of ours: a 500, logged with its traceback
        # a restart, a failover, a full pool, a deadlock: the request's transaction was
        # rolled back (unless the connection broke in its commit), so it can be sent
        # again; the driver's message (hosts, ports) goes to the log, not to the client
        cause = type(getattr(exc, "orig", None) or exc).__name__
        log.warning("%s %s: the database failed (%s), answered 503: %s", request.method,
                    request.url.path, cause, str(exc).splitlines()[0] if str(exc) else cause)
        return problem_response(
            503, "DatabaseUnavailable",
            f"the database did not answer or aborted this request ({cause}): try again",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})

    for kind in (OperationalError, InterfaceError, PoolTimeout, ProgrammingError):
        app.add_exception_handler(kind, _database_unavailable)

    @app.exception_handler(DqpulseError)
    async def _dqpulse_error(_request: Request, exc: DqpulseError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return problem_response(status, type(exc).__name__, str(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        found = [_field_problem(e) for e in exc.errors()]
        return problem_response(422, "ValidationError",
                                _describe(found) or "invalid request",
                                errors=found)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request, headers.get("Allow", "")))
        name = _HTTP_ERROR_NAMES.get(exc.status_code, "HTTPError")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 405:
            detail = f"{request.method} is not served here; allowed: {headers['Allow']}"
        return problem_response(exc.status_code, name, detail, headers=headers or None)


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with a 413 problem, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body"))
        body = b"".join(chunks)
        await self.app(scope, _replay([{"type": "http.request", "body": body,
                                        "more_body": False}], receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(413, "PayloadTooLargeError",
                                    f"request body over {self.max_bytes} bytes")
        await response(scope, receive, send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
