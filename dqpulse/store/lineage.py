"""Repository of lineage edges (declared in dqpulse.yaml or learned from OpenLineage)."""

from __future__ import annotations

from sqlalchemy import Connection, func, insert, select, update

from dqpulse.store.tables import lineage_edges


def get_all(conn: Connection) -> list[tuple[str, str, str, str]]:
    rows = conn.execute(select(lineage_edges.c.source, lineage_edges.c.target,
                               lineage_edges.c.job, lineage_edges.c.origin))
    return [(r.source, r.target, r.job, r.origin) for r in rows]


def upsert(conn: Connection, *, source: str, target: str, job: str, origin: str) -> None:
    found = conn.execute(select(lineage_edges.c.source).where(
        lineage_edges.c.source == source, lineage_edges.c.target == target)).first()
    if found is None:
        conn.execute(insert(lineage_edges).values(source=source, target=target, job=job,
                                                  origin=origin))
    else:
        conn.execute(update(lineage_edges).where(
            lineage_edges.c.source == source, lineage_edges.c.target == target)
            .values(job=job, updated_at=func.now()))
