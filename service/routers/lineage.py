"""Lineage graph, OpenLineage ingestion, and the root cause of an incident."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel

from dqpulse.errors import NotFoundError
from dqpulse.rca.attribution import root_cause
from dqpulse.rca.lineage import Edge, LineageGraph, edges_from_openlineage
from dqpulse.store import datasets as dataset_store
from dqpulse.store import incidents as incident_store
from dqpulse.store import lineage as lineage_store
from dqpulse.store import metrics as metric_store
from service.deps import ConnDep

router = APIRouter(tags=["lineage"])


class EdgeRead(BaseModel):
    source: str
    target: str
    job: str
    origin: str


class LineageRead(BaseModel):
    dataset: str | None
    direction: str | None
    nodes: list[str]
    edges: list[EdgeRead]


class RootCauseRead(BaseModel):
    incident_id: int
    dataset: str
    suspects: list[dict[str, Any]]
    impacted: list[dict[str, Any]]
    fields: list[dict[str, Any]]
    autoencoder: dict[str, Any] | None = None


class OpenLineageAccepted(BaseModel):
    edges_added: int
    edges: list[EdgeRead]


def _graph(conn: ConnDep) -> LineageGraph:
    return LineageGraph(Edge(*row) for row in lineage_store.get_all(conn))


@router.get("/lineage", response_model=LineageRead, summary="The lineage graph around a dataset")
def get_lineage(
    conn: ConnDep,
    dataset: Annotated[str | None, Query(description="Start dataset; all edges if absent")] = None,
    direction: Annotated[Literal["upstream", "downstream"] | None, Query()] = None,
    depth: Annotated[int, Query(ge=1, le=20)] = 3,
) -> LineageRead:
    graph = _graph(conn)
    if dataset is None:
        nodes = sorted({e.source for e in graph.edges} | {e.target for e in graph.edges})
        return LineageRead(dataset=None, direction=None, nodes=nodes,
                           edges=[EdgeRead(source=e.source, target=e.target, job=e.job,
                                           origin=e.origin) for e in graph.edges])
    directions = [direction] if direction else ["upstream", "downstream"]
    nodes = {dataset}
    for way in directions:
        nodes.update(r.dataset for r in graph.walk(dataset, way, depth))  # type: ignore[arg-type]
    edges = [EdgeRead(source=e.source, target=e.target, job=e.job, origin=e.origin)
             for e in graph.subgraph(nodes)]
    return LineageRead(dataset=dataset, direction=direction, nodes=sorted(nodes), edges=edges)


@router.post("/lineage/openlineage", response_model=OpenLineageAccepted, status_code=202,
             summary="Accept an OpenLineage run event; its inputs -> outputs become edges")
def post_openlineage(conn: ConnDep,
                     event: Annotated[dict[str, Any], Body()]) -> OpenLineageAccepted:
    topics = {spec.topic: spec.name for spec in dataset_store.get_all(conn)}
    edges = edges_from_openlineage(event, topics)
    for edge in edges:
        lineage_store.upsert(conn, source=edge.source, target=edge.target, job=edge.job,
                             origin=edge.origin)
    return OpenLineageAccepted(edges_added=len(edges), edges=[
        EdgeRead(source=e.source, target=e.target, job=e.job, origin=e.origin) for e in edges])


@router.get("/incidents/{incident_id}/root-cause", response_model=RootCauseRead,
            tags=["incidents"], summary="Upstream suspects, downstream impact, fields")
def get_root_cause(incident_id: int, conn: ConnDep,
                   depth: Annotated[int, Query(ge=1, le=20)] = 5) -> RootCauseRead:
    incident = incident_store.get(conn, incident_id=incident_id)
    if incident is None:
        raise NotFoundError(f"incident {incident_id} does not exist")
    alerts = incident_store.get_alerts(conn, incident_id=incident_id, limit=10_000)
    graph = _graph(conn)
    upstream = [r.dataset for r in graph.walk(incident["dataset"], "upstream", depth)]
    others = {name: incident_store.get_page(conn, dataset=name, limit=200)
              for name in upstream}
    body = root_cause(incident, alerts, graph, {k: _items(v) for k, v in others.items()},
                      depth=depth)
    body["autoencoder"] = _autoencoder_attribution(conn, incident, alerts)
    return RootCauseRead(**body)


def _autoencoder_attribution(conn: ConnDep, incident: dict[str, Any],
                             alerts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The dataset autoencoder's view of the incident's first window: which metrics it
    could not reconstruct (score and per-feature error shares)."""
    starts = [a["window_start"] for a in alerts]
    if not starts:
        return None
    first = min(starts)
    rows = metric_store.get_points(conn, dataset=incident["dataset"],
                                   metric="anomaly.autoencoder", start=first,
                                   end=first + 1e-6, limit=1)
    if not rows or not rows[0]["explanation"]:
        return None
    explanation = rows[0]["explanation"]
    return {"window_start": first, "score": rows[0]["score"],
            "top_feature": explanation.get("top_feature"),
            "features": explanation.get("features", [])}


def _items(page: Any) -> list[dict[str, Any]]:
    if isinstance(page, tuple):
        page = page[0]
    if isinstance(page, dict):
        page = page.get("items", [])
    return list(page)
