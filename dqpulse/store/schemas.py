"""Repository of observed schema versions per dataset (fields, type sets, diffs)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Connection, insert, select, update

from dqpulse.store.tables import schema_versions


def fingerprint(fields: dict[str, list[str]]) -> str:
    body = json.dumps({k: sorted(v) for k, v in sorted(fields.items())}, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def record_observation(conn: Connection, *, dataset: str, fields: dict[str, list[str]],
                       diff: dict[str, Any], seen_at: float) -> int:
    """Extend the current version's last_seen, or store a new version; return its number."""
    digest = fingerprint(fields)
    current = conn.execute(select(schema_versions).where(schema_versions.c.dataset == dataset)
                           .order_by(schema_versions.c.version.desc()).limit(1)).mappings().first()
    if current is not None and current["fingerprint"] == digest:
        conn.execute(update(schema_versions).where(schema_versions.c.id == current["id"])
                     .values(last_seen=max(seen_at, current["last_seen"])))
        return int(current["version"])
    version = 1 if current is None else int(current["version"]) + 1
    conn.execute(insert(schema_versions).values(
        dataset=dataset, version=version, fingerprint=digest, fields=fields, diff=diff,
        first_seen=seen_at, last_seen=seen_at))
    return version


def get_all(conn: Connection, *, dataset: str) -> list[dict[str, Any]]:
    rows = conn.execute(select(schema_versions).where(schema_versions.c.dataset == dataset)
                        .order_by(schema_versions.c.version)).mappings()
    return [dict(row) for row in rows]
