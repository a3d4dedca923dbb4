"""The applied model: the current version (what every process runs) and its history
(admin tokens only: it names every team's datasets and channels).

Secrets never leave the database expanded: channels show ``${VAR}`` references as written,
and literal secrets or URLs masked (:func:`dqpulse.services.model.public_document`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from dqpulse.errors import NotFoundError
from dqpulse.services.model import public_document
from dqpulse.store import models as model_store
from service.auth import require
from service.deps import ConnDep
from service.errors import problems

# the model names every team's datasets and channels: admins only
router = APIRouter(tags=["model"], dependencies=[require("admin", "reading the model")],
                   responses=problems(403))


class ModelVersionSummary(BaseModel):
    version: int
    applied_by: str
    applied_at: datetime
    source: str = Field(description="the file `dqpulse apply -f` read")
    changes: dict[str, Any] = Field(
        description="what this version changed against the one before: datasets, "
                    "notifications and lineage by created/updated/removed/unchanged")


class ModelRead(ModelVersionSummary):
    model: dict[str, Any] = Field(
        description="the whole dqpulse.yaml model as applied (datasets, lineage, "
                    "notifications with secrets as ${VAR} references)")


class ModelVersionPage(BaseModel):
    items: list[ModelVersionSummary]
    next_before: int | None = Field(
        description="pass as `before` for the next (older) page; null on the last page")


def _read(row: dict[str, Any]) -> ModelRead:
    return ModelRead(version=int(row["version"]), applied_by=row["applied_by"],
                     applied_at=row["applied_at"], source=row["source"],
                     changes=row["changes"], model=public_document(row["spec"]))


@router.get("/model", response_model=ModelRead, responses=problems(404),
            summary="The current model: what every process runs")
def get_model(conn: ConnDep) -> ModelRead:
    row = model_store.get_latest(conn)
    if row is None:
        raise NotFoundError("no model applied yet: run `dqpulse apply -f dqpulse.yaml`")
    return _read(row)


@router.get("/model/versions", response_model=ModelVersionPage,
            summary="Applied model versions, newest first")
def list_model_versions(
    conn: ConnDep,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="versions below this")]
    = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ModelVersionPage:
    rows = model_store.get_page(conn, before=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [ModelVersionSummary(version=int(r["version"]), applied_by=r["applied_by"],
                                 applied_at=r["applied_at"], source=r["source"],
                                 changes=r["changes"]) for r in rows]
    return ModelVersionPage(items=items,
                            next_before=items[-1].version if more and items else None)


@router.get("/model/versions/{version}", response_model=ModelRead, responses=problems(404),
            summary="One applied model version, whole")
def get_model_version(
    conn: ConnDep, version: Annotated[int, Path(ge=1, le=2**62)]) -> ModelRead:
    row = model_store.get(conn, version=version)
    if row is None:
        raise NotFoundError(f"model version {version} not found")
    return _read(row)
