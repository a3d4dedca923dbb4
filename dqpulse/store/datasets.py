"""Repository of declared datasets (``dqpulse apply`` writes them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from dqpulse.errors import NotFoundError
from dqpulse.spec import DatasetSpec, Spec
from dqpulse.store.tables import datasets, lineage_edges


def apply_spec(conn: Connection, *, spec: Spec, prune: bool = False) -> dict[str, list[str]]:
    """Upsert every dataset and declared lineage edge of ``spec``; return what changed.

    Runs inside the caller's transaction, so a failure applies nothing.
    """
    rows = conn.execute(select(datasets.c.name, datasets.c.spec))
    existing = {row.name: row.spec for row in rows}
    changes: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": [], "deleted": []}
    for dataset in spec.datasets:
        body = dataset.model_dump(mode="json")
        if dataset.name not in existing:
            conn.execute(insert(datasets).values(
                name=dataset.name, topic=dataset.topic, owner=dataset.owner, spec=body))
            changes["created"].append(dataset.name)
        elif existing[dataset.name] != body:
            conn.execute(update(datasets).where(datasets.c.name == dataset.name).values(
                topic=dataset.topic, owner=dataset.owner, spec=body, updated_at=func.now()))
            changes["updated"].append(dataset.name)
        else:
            changes["unchanged"].append(dataset.name)
    if prune:
        stale = set(existing) - {d.name for d in spec.datasets}
        if stale:
            conn.execute(delete(datasets).where(datasets.c.name.in_(stale)))
            changes["deleted"].extend(sorted(stale))
    conn.execute(delete(lineage_edges).where(lineage_edges.c.origin == "declared"))
    for edge in spec.lineage:
        conn.execute(insert(lineage_edges).values(
            source=edge.source, target=edge.target, job=edge.job or "", origin="declared"))
    return changes


def get_all(conn: Connection) -> list[DatasetSpec]:
    rows = conn.execute(select(datasets.c.spec).order_by(datasets.c.name))
    return [DatasetSpec.model_validate(row.spec) for row in rows]


def get_owners(conn: Connection) -> dict[str, str | None]:
    """``{dataset: owner}`` of every dataset (the owner is the team it belongs to)."""
    return {row.name: row.owner for row in conn.execute(select(datasets.c.name, datasets.c.owner))}


def get(conn: Connection, *, name: str) -> DatasetSpec | None:
    row = conn.execute(select(datasets.c.spec).where(datasets.c.name == name)).first()
    return None if row is None else DatasetSpec.model_validate(row.spec)


def get_or_raise(conn: Connection, *, name: str) -> DatasetSpec:
    dataset = get(conn, name=name)
    if dataset is None:
        raise NotFoundError(f"dataset {name!r} does not exist")
    return dataset


def get_row(conn: Connection, *, name: str) -> dict[str, Any]:
    row = conn.execute(select(datasets).where(datasets.c.name == name)).mappings().first()
    if row is None:
        raise NotFoundError(f"dataset {name!r} does not exist")
    return dict(row)
