"""Bearer-token authentication for /api/v1: who the caller is (a :class:`Principal`).

``DQPULSE_AUTH=required`` (the default): every /api/v1 request needs
``Authorization: Bearer <token>``; the token names a role and teams (``dqpulse token
create``). Tokens in ``DQPULSE_API_TOKENS`` (comma-separated) are admins, for bootstrapping.
``DQPULSE_AUTH=open`` (the demo, a laptop): no token is asked for and every request acts
as an anonymous admin. /healthz, /readyz, /metrics, /docs and the console's pages stay open.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from dqpulse.access import ANONYMOUS_ADMIN, Principal, Role
from dqpulse.config import Settings
from dqpulse.errors import AuthError
from dqpulse.services import tokens as token_service

bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="A dqpulse API token (`dqpulse token create` or "
                                "`POST /api/v1/tokens`); not needed with DQPULSE_AUTH=open")


class TokenAuth:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        raw = settings.api_tokens.get_secret_value() if settings.api_tokens else ""
        self.static = [t.strip() for t in raw.split(",") if t.strip()]
        self.open = settings.auth == "open"
        self.engine = engine

    async def __call__(self, request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None,
                                              Depends(bearer)]) -> Principal:
        # async: open mode and static tokens need no I/O (no threadpool trip); a stored
        # token is looked up in the threadpool
        principal = (ANONYMOUS_ADMIN if self.open
                     else await run_in_threadpool(self._principal, credentials))
        request.state.principal = principal
        return principal

    def _principal(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        if self.open:
            return ANONYMOUS_ADMIN
        if credentials is None or not credentials.credentials:
            raise AuthError("missing 'Authorization: Bearer <token>' header")
        token = credentials.credentials
        for index, static in enumerate(self.static, start=1):
            if hmac.compare_digest(static.encode(), token.encode()):
                return Principal(name=f"static-token-{index}", role="admin")
        with self.engine.connect() as conn:
            return token_service.authenticate(conn, token)


async def get_principal(request: Request) -> Principal:  # no I/O: no threadpool
    principal: Principal = request.state.principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(role: Role, action: str) -> object:
    """A route dependency: 403 unless the caller's role allows ``action``."""

    def check(principal: PrincipalDep) -> None:
        principal.require(role, action)

    return Depends(check)
