"""API tokens (``dqpulse token create``)."""

from __future__ import annotations

from sqlalchemy import Engine

from dqpulse.store import tokens as token_store


def create_token(engine: Engine, *, name: str, owner: str | None = None) -> str:
    """A new API token (shown once; only its hash is stored)."""
    with engine.begin() as conn:
        return token_store.create(conn, name=name, owner=owner)
