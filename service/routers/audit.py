"""The audit log: every write through the API and every token change, newest first.

An admin reads every entry; other tokens read the entries about their teams' objects
(token administration is no team's: admins only).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from dqpulse.services import audit
from service.deps import ScopeDep

router = APIRouter(prefix="/audit", tags=["audit"])

MAX_LIMIT = 500
ACTIONS = ("incident.acknowledge", "incident.resolve", "incident.feedback", "silence.create",
           "silence.delete", "lineage.upsert", "lineage.run", "token.create", "token.expire",
           "token.revoke")


class AuditEntryRead(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="the token's name (anonymous in open mode; cli)")
    token_id: int | None
    role: str
    action: str
    target: str = Field(description="incident:<id>, silence:<id>, edge:<a>-><b>, token:<name>")
    team: str | None
    detail: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditEntryRead]
    next_cursor: str | None


@router.get("", response_model=AuditPage,
            summary="Audit log, newest first (admin: all; others: their teams' entries)")
def list_audit(
    scope: ScopeDep,
    action: Annotated[str | None, Query(pattern=f"^({'|'.join(ACTIONS)})?$",
                                        description=" | ".join(ACTIONS))] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page",
                                        pattern=r"^([1-9][0-9]{0,17})?$")] = None,
) -> AuditPage:
    rows = audit.get_page(scope.conn, scope.principal, before_id=int(cursor) if cursor else None,
                          limit=limit + 1, action=action or None)
    page = rows[:limit]
    return AuditPage(items=[AuditEntryRead(**r) for r in page],
                     next_cursor=str(page[-1]["id"]) if len(rows) > limit else None)
