"""API tokens and who they are: create, list, expire, revoke (CLI and API), authenticate.

Every change is written to the audit log in the same transaction as the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine

from dqpulse.access import ROLES, Principal, Role
from dqpulse.errors import AuthError, ValidationError
from dqpulse.services import audit
from dqpulse.store import tokens as token_store


def _role(value: str) -> Role:
    for role in ROLES:
        if role == value:
            return role
    raise ValidationError(f"role must be one of {', '.join(ROLES)}, got {value!r}")


def create(conn: Connection, principal: Principal, *, name: str, role: str,
           teams: Sequence[str], expires_at: datetime | None = None) -> tuple[str, dict[str, Any]]:
    """A new token (returned once; only its hash is stored) and its row."""
    checked = _role(role)
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise ValidationError("expires_at must be in the future")
    token, row = token_store.create(conn, name=name, role=checked, teams=teams,
                                    expires_at=expires_at, created_by=principal.name)
    audit.record(conn, principal, action="token.create", target=f"token:{row['name']}",
                 team=None, detail={"role": checked, "teams": row["teams"],
                                    "expires_at": expires_at.isoformat() if expires_at else None})
    return token, row


def set_expiry(conn: Connection, principal: Principal, *, token_id: int,
               expires_at: datetime | None) -> dict[str, Any]:
    row = token_store.update_expiry(conn, token_id=token_id, expires_at=expires_at)
    audit.record(conn, principal, action="token.expire", target=f"token:{row['name']}",
                 team=None, detail={"expires_at": expires_at.isoformat() if expires_at else None})
    return row


def revoke(conn: Connection, principal: Principal, *, token_id: int) -> dict[str, Any]:
    row = token_store.revoke(conn, token_id=token_id, at=datetime.now(UTC))
    audit.record(conn, principal, action="token.revoke", target=f"token:{row['name']}",
                 team=None)
    return row


def authenticate(conn: Connection, token: str, *, now: datetime | None = None) -> Principal:
    """The caller a bearer token stands for; AuthError when unknown, expired or revoked."""
    row = token_store.get_by_token(conn, token=token)
    if row is None:
        raise AuthError("invalid API token")
    if row["revoked_at"] is not None:
        raise AuthError(f"API token {row['name']!r} was revoked")
    if row["expires_at"] is not None and row["expires_at"] <= (now or datetime.now(UTC)):
        raise AuthError(f"API token {row['name']!r} expired")
    return Principal(name=str(row["name"]), role=_role(str(row["role"])),
                     teams=frozenset(row["teams"]), token_id=int(row["id"]))


CLI = Principal(name="cli", role="admin")


def create_token(engine: Engine, *, name: str, role: str = "viewer", teams: Sequence[str] = (),
                 expires_at: datetime | None = None) -> tuple[str, dict[str, Any]]:
    """``dqpulse token create``: a new token, shown once."""
    with engine.begin() as conn:
        return create(conn, CLI, name=name, role=role, teams=teams, expires_at=expires_at)


def list_tokens(engine: Engine) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        return token_store.get_all(conn)


def revoke_token(engine: Engine, *, name: str) -> dict[str, Any]:
    with engine.begin() as conn:
        token_id = int(token_store.get_or_raise(conn, name=name)["id"])
        return revoke(conn, CLI, token_id=token_id)


def expire_token(engine: Engine, *, name: str, at: datetime | None) -> dict[str, Any]:
    with engine.begin() as conn:
        token_id = int(token_store.get_or_raise(conn, name=name)["id"])
        return set_expiry(conn, CLI, token_id=token_id, expires_at=at)
