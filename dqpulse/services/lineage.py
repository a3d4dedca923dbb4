"""The lineage graph as the flows and the API read it."""

from __future__ import annotations

from sqlalchemy import Connection

from dqpulse.rca.lineage import Edge, LineageGraph
from dqpulse.store import lineage as lineage_store


def lineage_graph(conn: Connection) -> LineageGraph:
    """The lineage graph as stored (declared and OpenLineage edges)."""
    return LineageGraph(Edge(*row) for row in lineage_store.get_all(conn))
