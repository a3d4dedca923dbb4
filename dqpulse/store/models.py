"""Repository of model versions: each ``dqpulse apply`` of a whole dqpulse.yaml model."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select

from dqpulse.store.tables import model_versions

_SUMMARY = (model_versions.c.version, model_versions.c.digest, model_versions.c.changes,
            model_versions.c.applied_by, model_versions.c.source, model_versions.c.applied_at)


def latest_version(conn: Connection) -> int:
    """The newest version number, 0 when nothing was applied (one index lookup: what every
    process polls)."""
    return int(conn.execute(select(func.coalesce(func.max(model_versions.c.version), 0)))
               .scalar_one())


def get_latest(conn: Connection) -> dict[str, Any] | None:
    row = conn.execute(select(model_versions).order_by(model_versions.c.version.desc())
                       .limit(1)).mappings().first()
    return None if row is None else dict(row)


def get(conn: Connection, *, version: int) -> dict[str, Any] | None:
    row = conn.execute(select(model_versions)
                       .where(model_versions.c.version == version)).mappings().first()
    return None if row is None else dict(row)


def create(conn: Connection, *, digest: str, spec: dict[str, Any], changes: dict[str, Any],
           applied_by: str, source: str) -> int:
    result = conn.execute(insert(model_versions).values(
        digest=digest, spec=spec, changes=changes, applied_by=applied_by, source=source)
        .returning(model_versions.c.version))
    return int(result.scalar_one())


def get_page(conn: Connection, *, before: int | None = None,
             limit: int = 50) -> list[dict[str, Any]]:
    """Versions newest first, without their model bodies."""
    query = select(*_SUMMARY).order_by(model_versions.c.version.desc()).limit(limit)
    if before is not None:
        query = query.where(model_versions.c.version < before)
    return [dict(row) for row in conn.execute(query).mappings()]


def last_dataset(conn: Connection, *, name: str) -> dict[str, Any] | None:
    """The dataset ``name`` as the newest model version that had it defined it (None: no
    version did): what a dataset removed with ``--prune`` was."""
    rows = conn.execute(select(model_versions.c.spec)
                        .order_by(model_versions.c.version.desc()))
    for (spec,) in rows:
        for dataset in (spec or {}).get("datasets", []):
            if dataset.get("name") == name:
                return dict(dataset)
    return None
