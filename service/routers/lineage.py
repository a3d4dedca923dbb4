"""Lineage graph, OpenLineage ingestion, and the root cause of an incident."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel

from dqpulse.rca.lineage import edges_from_openlineage
from dqpulse.services import incidents as incident_service
from dqpulse.services.lineage import lineage_graph
from dqpulse.store import datasets as dataset_store
from dqpulse.store import lineage as lineage_store
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


@router.get("/lineage", response_model=LineageRead, summary="The lineage graph around a dataset")
def get_lineage(
    conn: ConnDep,
    dataset: Annotated[str | None, Query(description="Start dataset; all edges if absent")] = None,
    direction: Annotated[Literal["upstream", "downstream"] | None, Query()] = None,
    depth: Annotated[int, Query(ge=1, le=20)] = 3,
) -> LineageRead:
    graph = lineage_graph(conn)
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
    return RootCauseRead(**incident_service.root_cause(conn, incident_id=incident_id, depth=depth))
