"""Lineage graph, OpenLineage ingestion, and the root cause of an incident."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from dqpulse.rca.lineage import Edge, LineageGraph
from dqpulse.rca.openlineage import EVENT_TYPES, read_run_event
from dqpulse.services import audit
from dqpulse.services import incidents as incident_service
from dqpulse.services.lineage import lineage_graph
from dqpulse.store import datasets as dataset_store
from dqpulse.store import lineage as lineage_store
from dqpulse.store import openlineage as openlineage_store
from service.auth import require
from service.deps import ConnDep, ScopeDep
from service.errors import problems
from service.params import NO_NUL, IdPath

router = APIRouter(tags=["lineage"])


class EdgeRead(BaseModel):
    source: str
    target: str
    job: str
    origin: str


class JobRead(BaseModel):
    """A job node learned from OpenLineage: its newest run state and its datasets."""

    job: str
    last_event_type: str
    last_event_time: float
    inputs: list[str]
    outputs: list[str]


class LineageRead(BaseModel):
    dataset: str | None
    direction: str | None
    nodes: list[str]
    edges: list[EdgeRead]
    jobs: list[JobRead] = Field(default_factory=list)


class SegmentRead(BaseModel):
    """The dimension value that carries a dataset's change (Adtributor-style)."""

    dimension: str | None = None
    value: str | None = None
    share: float | None = Field(default=None, description="share of the change it explains")
    text: str | None = Field(default=None, examples=[
        "92% of the null increase in customer.segment comes from producer=checkout-v2"])


class CandidateRead(BaseModel):
    """A candidate root of the incident, with its evidence."""

    rank: int
    dataset: str
    incident_id: int | None
    owner: str | None
    onset: float | None = Field(description="first alerted window start (epoch seconds)")
    lineage_distance: int = Field(
        description="hops from the incident's dataset: upstream > 0, downstream < 0")
    explains: list[str] = Field(description="other alerting datasets it reaches downstream")
    score: float | None
    metric: str | None
    field: str | None
    segment: SegmentRead | None


class ImpactRead(BaseModel):
    """A downstream dataset whose alerts joined the root's incident."""

    model_config = ConfigDict(extra="allow")

    dataset: str
    owner: str | None = None
    distance: int | None = None
    kinds: list[str] = Field(default_factory=list)
    alerts: int = 0
    first_window_start: float | None = None
    segment: dict[str, Any] | None = None


class RootCauseRead(BaseModel):
    incident_id: int
    dataset: str
    root: CandidateRead | None = None
    alternatives: list[CandidateRead] = Field(default_factory=list)
    impacts: list[ImpactRead] = Field(default_factory=list)
    segments: list[dict[str, Any]] = Field(default_factory=list)
    suspects: list[dict[str, Any]]
    impacted: list[dict[str, Any]]
    fields: list[dict[str, Any]]
    autoencoder: dict[str, Any] | None = None


class OpenLineageAccepted(BaseModel):
    edges_added: int
    edges: list[EdgeRead]
    job: str
    event_type: str
    run_recorded: bool


class OpenLineageDataset(BaseModel):
    namespace: str = Field(default="", max_length=200, pattern=NO_NUL)
    name: str = Field(min_length=1, max_length=300, pattern=NO_NUL)


class OpenLineageJob(BaseModel):
    namespace: str = Field(default="", max_length=100, pattern=NO_NUL)
    name: str = Field(min_length=1, max_length=199, pattern=NO_NUL)


class OpenLineageRun(BaseModel):
    model_config = ConfigDict(extra="allow")

    runId: str = Field(default="", max_length=64, pattern=NO_NUL)  # noqa: N815 - OpenLineage


class OpenLineageEvent(BaseModel):
    """An OpenLineage run event: the fields dqpulse reads (others are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    eventType: Literal[EVENT_TYPES] | None = None  # type: ignore[valid-type]  # noqa: N815
    eventTime: str | None = Field(default=None, max_length=64, pattern=NO_NUL)  # noqa: N815
    run: OpenLineageRun | None = None
    job: OpenLineageJob
    inputs: list[OpenLineageDataset] = Field(default_factory=list, max_length=100)
    outputs: list[OpenLineageDataset] = Field(default_factory=list, max_length=100)


def _edge(e: Edge) -> EdgeRead:
    return EdgeRead(source=e.source, target=e.target, job=e.job, origin=e.origin)


@router.get("/lineage", response_model=LineageRead, responses=problems(404),
            summary="The lineage graph around a dataset (edges between the token's datasets)")
def get_lineage(
    conn: ConnDep,
    scope: ScopeDep,
    dataset: Annotated[str | None, Query(description="Start dataset; all edges if absent",
                                         max_length=300, pattern=NO_NUL)] = None,
    direction: Annotated[Literal["upstream", "downstream"] | None, Query()] = None,
    depth: Annotated[int, Query(ge=1, le=20)] = 3,
) -> LineageRead:
    graph = lineage_graph(conn)
    if not scope.principal.is_admin:
        graph = LineageGraph([e for e in graph.edges if scope.sees(e.source)
                              and scope.sees(e.target)])
        if dataset is not None:
            scope.dataset(dataset)
    jobs = openlineage_store.get_jobs(conn)
    if dataset is None:
        nodes = sorted({e.source for e in graph.edges} | {e.target for e in graph.edges})
        return LineageRead(dataset=None, direction=None, nodes=nodes,
                           edges=[_edge(e) for e in graph.edges],
                           jobs=_jobs_touching(jobs, set(nodes), scope))
    directions = [direction] if direction else ["upstream", "downstream"]
    nodes = {dataset}
    for way in directions:
        nodes.update(r.dataset for r in graph.walk(dataset, way, depth))  # type: ignore[arg-type]
    edges = [_edge(e) for e in graph.subgraph(nodes)]
    return LineageRead(dataset=dataset, direction=direction, nodes=sorted(nodes), edges=edges,
                       jobs=_jobs_touching(jobs, nodes, scope))


def _jobs_touching(jobs: list[dict[str, Any]], nodes: set[str],
                   scope: ScopeDep) -> list[JobRead]:
    """Job nodes that read or write one of ``nodes`` (and only datasets the caller sees)."""
    out = []
    for job in jobs:
        touched = set(job["inputs"]) | set(job["outputs"])
        if not touched & nodes:
            continue
        if not scope.principal.is_admin and not all(scope.sees(n) for n in touched & nodes):
            continue
        out.append(JobRead(**job))
    return out


@router.post("/lineage/openlineage", response_model=OpenLineageAccepted, status_code=202,
             responses=problems(400, 403, 404, 413),
             dependencies=[require("editor", "posting lineage")],
             summary="Accept an OpenLineage run event of any eventType; its inputs -> "
                     "outputs become edges, its run state is kept (a FAIL or ABORT is a "
                     "root-cause suspect downstream); the declared datasets it names must "
                     "be the token's unless it is an admin")
def post_openlineage(conn: ConnDep, scope: ScopeDep,
                     event: OpenLineageEvent) -> OpenLineageAccepted:
    specs = dataset_store.get_all(conn)
    topics = {spec.topic: spec.name for spec in specs}
    names = {spec.name for spec in specs}
    report = read_run_event(event.model_dump(), topics, datasets=names,
                            received_at=time.time())
    edges = list(report.edges)
    if not scope.principal.is_admin:
        for name in sorted(({*report.inputs, *report.outputs}) & names):
            scope.dataset(name)
    recorded = openlineage_store.create_run(
        conn, job=report.job, run_id=report.run_id, event_type=report.event_type,
        event_time=report.event_time, inputs=report.inputs, outputs=report.outputs)
    for edge in edges:
        lineage_store.upsert(conn, source=edge.source, target=edge.target, job=edge.job,
                             origin=edge.origin)
        audit.record(conn, scope.principal, action="lineage.upsert",
                     target=f"edge:{edge.source}->{edge.target}",
                     team=scope.team_of(edge.target), detail={"job": edge.job})
    if recorded:
        audit.record(conn, scope.principal, action="lineage.run",
                     target=f"job:{report.job}"[:300],
                     team=next((scope.team_of(n) for n in report.outputs if n in names), None),
                     detail={"run_id": report.run_id, "event_type": report.event_type})
    return OpenLineageAccepted(edges_added=len(edges), edges=[_edge(e) for e in edges],
                               job=report.job, event_type=report.event_type,
                               run_recorded=recorded)


@router.get("/incidents/{incident_id}/root-cause", response_model=RootCauseRead,
            tags=["incidents"], responses=problems(404),
            summary="The root (ranked alternatives with evidence: onset, lineage distance, "
                    "score, segment), the impacts with owners, suspects and fields "
                    "(within the token's teams)")
def get_root_cause(incident_id: IdPath, conn: ConnDep, scope: ScopeDep,
                   depth: Annotated[int, Query(ge=1, le=20)] = 5) -> RootCauseRead:
    scope.incident_to_read(incident_id)
    body = incident_service.root_cause(conn, incident_id=incident_id, depth=depth)
    if not scope.principal.is_admin:
        for key in ("suspects", "impacted"):
            body[key] = [item for item in body[key]
                         if all(scope.sees(str(name))
                                for name in item.get("path") or [item.get("dataset")])]
        for key in ("alternatives", "impacts", "segments"):
            body[key] = [item for item in body[key] if scope.sees(str(item["dataset"]))]
        body["root"] = body["alternatives"][0] if body["alternatives"] else None
    return RootCauseRead(**body)
