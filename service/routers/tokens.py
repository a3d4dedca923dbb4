"""API tokens (admin only): create (the token is shown once), list, read, expire, revoke.

Revoking keeps the row (for the audit trail); a revoked or expired token answers 401.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from dqpulse.errors import ConflictError
from dqpulse.services import tokens as token_service
from dqpulse.store import tokens as token_store
from service.auth import require
from service.deps import ConnDep, Scope, ScopeDep
from service.errors import problems
from service.params import IdPath, IsoTime

router = APIRouter(prefix="/tokens", tags=["tokens"],
                   dependencies=[require("admin", "managing API tokens")],
                   responses=problems(403))

TEAM = r"^[^\x00,]{1,200}$"


class TokenRead(BaseModel):
    id: int
    name: str
    role: Literal["viewer", "editor", "admin"]
    teams: list[str] = Field(description="dataset owners this token sees (admin: all)")
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    active: bool = Field(description="neither revoked nor expired")


class TokenCreated(TokenRead):
    token: str = Field(description="the secret, shown this once (only its hash is stored)")


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.@:-]+$")
    role: Literal["viewer", "editor", "admin"] = "viewer"
    teams: list[Annotated[str, Field(pattern=TEAM)]] = Field(
        default_factory=list, max_length=50,
        description="dataset owners this token sees; at least one unless role is admin")
    expires_in_days: int | None = Field(default=None, ge=1, le=3650,
                                        description="expiry; none: never expires")


class TokenUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_at: IsoTime | None = Field(
        description="new expiry (a past time expires the token at once); null: never")


def _not_itself(scope: Scope, token_id: int, verb: str) -> None:
    """An admin cannot lock itself out: another admin token (or the CLI) does that."""
    if scope.principal.token_id == token_id:
        raise ConflictError(f"a token cannot {verb} itself: use another admin token or "
                            f"'dqpulse token {verb}'")


def _read(row: dict[str, Any]) -> TokenRead:
    now = datetime.now(UTC)
    active = row["revoked_at"] is None and (row["expires_at"] is None or row["expires_at"] > now)
    return TokenRead(**{k: row[k] for k in TokenRead.model_fields if k != "active"},
                     active=active)


@router.get("", response_model=list[TokenRead], summary="API tokens (never their secrets)")
def list_tokens(conn: ConnDep,
                include_revoked: Annotated[bool, Query(description="also revoked tokens")]
                = False) -> list[TokenRead]:
    return [_read(r) for r in token_store.get_all(conn)
            if include_revoked or r["revoked_at"] is None]


@router.post("", response_model=TokenCreated, status_code=201, responses=problems(400, 409, 413),
             summary="Create a token; the response holds its secret, shown once")
def create_token(body: TokenCreate, conn: ConnDep, scope: ScopeDep) -> TokenCreated:
    expires_at = (datetime.now(UTC) + timedelta(days=body.expires_in_days)
                  if body.expires_in_days else None)
    token, row = token_service.create(conn, scope.principal, name=body.name, role=body.role,
                                      teams=body.teams, expires_at=expires_at)
    return TokenCreated(**_read(row).model_dump(), token=token)


@router.get("/{token_id}", response_model=TokenRead, responses=problems(404),
            summary="One token")
def get_token(token_id: IdPath, conn: ConnDep) -> TokenRead:
    return _read(token_store.get_or_raise(conn, token_id=token_id))


@router.patch("/{token_id}", response_model=TokenRead, responses=problems(400, 404, 409, 413),
              summary="Set or clear a token's expiry")
def update_token(token_id: IdPath, body: TokenUpdate, conn: ConnDep,
                 scope: ScopeDep) -> TokenRead:
    _not_itself(scope, token_id, "expire")
    expires_at = body.expires_at.astimezone(UTC) if body.expires_at else None
    return _read(token_service.set_expiry(conn, scope.principal, token_id=token_id,
                                          expires_at=expires_at))


@router.post("/{token_id}/revoke", response_model=TokenRead, responses=problems(404, 409),
             summary="Revoke a token for good (it answers 401 from now on)")
def revoke_token(token_id: IdPath, conn: ConnDep, scope: ScopeDep) -> TokenRead:
    _not_itself(scope, token_id, "revoke")
    return _read(token_service.revoke(conn, scope.principal, token_id=token_id))
