"""Repository of API tokens: only a hash is stored; the token is shown once."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import Connection, insert, select

from dqpulse.errors import ConflictError
from dqpulse.store.tables import api_tokens


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(conn: Connection, *, name: str, owner: str | None = None) -> str:
    exists = conn.execute(select(api_tokens.c.id).where(api_tokens.c.name == name)).first()
    if exists is not None:
        raise ConflictError(f"a token named {name!r} already exists")
    token = "dqp_" + secrets.token_urlsafe(32)
    conn.execute(insert(api_tokens).values(name=name, token_hash=_hash(token), owner=owner))
    return token


def get_by_token(conn: Connection, *, token: str) -> dict[str, object] | None:
    row = conn.execute(select(api_tokens.c.name, api_tokens.c.owner)
                       .where(api_tokens.c.token_hash == _hash(token))).mappings().first()
    return None if row is None else dict(row)


def any_exist(conn: Connection) -> bool:
    return conn.execute(select(api_tokens.c.id).limit(1)).first() is not None
