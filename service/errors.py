"""The one place that maps dqpulse's error tree to HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from dqpulse.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    DqpulseError,
    NotFoundError,
    ValidationError,
)

_STATUS: list[tuple[type[DqpulseError], int]] = [
    (NotFoundError, 404),
    (ConflictError, 409),
    (ValidationError, 422),
    (ConfigError, 422),
    (AuthError, 401),
]


def install(app: FastAPI) -> None:
    @app.exception_handler(DqpulseError)
    async def _dqpulse_error(_request: Request, exc: DqpulseError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
        return JSONResponse(status_code=status,
                            content={"detail": str(exc), "error": type(exc).__name__})
