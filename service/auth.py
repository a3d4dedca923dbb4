"""Bearer-token authentication for /api/v1.

Open by default (no token created: a local install or the demo). Once a token exists
(``dqpulse token create``) or ``DQPULSE_API_TOKENS`` is set (comma-separated static
tokens), every /api/v1 request needs ``Authorization: Bearer <token>``; /healthz,
/readyz, /metrics and /docs stay open for probes and scrapers.
"""

from __future__ import annotations

import hmac
import time

from fastapi import Request
from sqlalchemy import Engine

from dqpulse.config import Settings
from dqpulse.errors import AuthError
from dqpulse.store import tokens as token_store

_CACHE_S = 10.0


class TokenAuth:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        raw = settings.api_tokens.get_secret_value() if settings.api_tokens else ""
        self.static = [t.strip() for t in raw.split(",") if t.strip()]
        self.engine = engine
        self._any_checked_at = 0.0
        self._any = False

    def _tokens_exist(self) -> bool:
        now = time.monotonic()
        if now - self._any_checked_at > _CACHE_S:
            with self.engine.connect() as conn:
                self._any = token_store.any_exist(conn)
            self._any_checked_at = now
        return self._any

    def __call__(self, request: Request) -> None:
        if not self.static and not self._tokens_exist():
            request.state.actor = None
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("missing 'Authorization: Bearer <token>' header")
        for static in self.static:
            if hmac.compare_digest(static, token):
                request.state.actor = "static-token"
                return
        with self.engine.connect() as conn:
            found = token_store.get_by_token(conn, token=token)
        if found is None:
            raise AuthError("invalid API token")
        request.state.actor = str(found["name"])
