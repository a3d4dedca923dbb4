"""Repository of API tokens: only a SHA-256 hash is stored; the token is shown once.

A token is 32 random bytes, so a fast hash is enough (no password stretching needed):
finding a token from its hash is as hard as guessing the token.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from dqpulse.errors import ConflictError, NotFoundError
from dqpulse.store.tables import api_tokens
from dqpulse.utc import as_utc

TOKEN_PREFIX = "dqp_"  # noqa: S105 - a visible prefix, not a secret
_COLUMNS = (api_tokens.c.id, api_tokens.c.name, api_tokens.c.role, api_tokens.c.teams,
            api_tokens.c.created_at, api_tokens.c.created_by, api_tokens.c.expires_at,
            api_tokens.c.revoked_at)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _row(mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for key in ("created_at", "expires_at", "revoked_at"):
        row[key] = None if row[key] is None else as_utc(row[key])
    row["teams"] = sorted(row["teams"] or [])
    return row


def create(conn: Connection, *, name: str, role: str = "viewer", teams: Sequence[str] = (),
           expires_at: datetime | None = None, created_by: str = "cli",
           owner: str | None = None) -> tuple[str, dict[str, Any]]:
    """A new token and its row; ``owner`` (the pre-0004 single team) joins ``teams``."""
    exists = conn.execute(select(api_tokens.c.id).where(api_tokens.c.name == name)).first()
    if exists is not None:
        raise ConflictError(f"a token named {name!r} already exists")
    all_teams = sorted({*teams, *([owner] if owner else [])})
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    result = conn.execute(insert(api_tokens).values(
        name=name, token_hash=_hash(token), owner=owner, role=role, teams=all_teams,
        expires_at=expires_at, created_by=created_by).returning(api_tokens.c.id))
    return token, get_or_raise(conn, token_id=int(result.scalar_one()))


def get(conn: Connection, *, token_id: int | None = None,
        name: str | None = None) -> dict[str, Any] | None:
    query = select(*_COLUMNS)
    query = (query.where(api_tokens.c.id == token_id) if token_id is not None
             else query.where(api_tokens.c.name == name))
    row = conn.execute(query).mappings().first()
    return None if row is None else _row(row)


def get_or_raise(conn: Connection, *, token_id: int | None = None,
                 name: str | None = None) -> dict[str, Any]:
    found = get(conn, token_id=token_id, name=name)
    if found is None:
        raise NotFoundError(f"token {token_id if name is None else repr(name)} does not exist")
    return found


def get_all(conn: Connection) -> list[dict[str, Any]]:
    return [_row(r) for r in conn.execute(select(*_COLUMNS).order_by(api_tokens.c.id))
            .mappings()]


def get_by_token(conn: Connection, *, token: str) -> dict[str, Any] | None:
    """The token's row (revoked and expired ones too: the caller says which it accepts)."""
    row = conn.execute(select(*_COLUMNS).where(api_tokens.c.token_hash == _hash(token))
                       ).mappings().first()
    return None if row is None else _row(row)


def update_expiry(conn: Connection, *, token_id: int, expires_at: datetime | None
                  ) -> dict[str, Any]:
    get_or_raise(conn, token_id=token_id)
    conn.execute(update(api_tokens).where(api_tokens.c.id == token_id)
                 .values(expires_at=expires_at))
    return get_or_raise(conn, token_id=token_id)


def revoke(conn: Connection, *, token_id: int, at: datetime) -> dict[str, Any]:
    """Revoke a token for good (idempotent: the first revocation time is kept)."""
    row = get_or_raise(conn, token_id=token_id)
    if row["revoked_at"] is None:
        conn.execute(update(api_tokens).where(api_tokens.c.id == token_id)
                     .values(revoked_at=at))
    return get_or_raise(conn, token_id=token_id)
