"""Silences and maintenance windows: list, create, read, delete.

A silence matches incidents by dataset, owner and kind (an empty matcher matches all);
while it is active, alerts are recorded but no notification is queued.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from dqpulse.alerts.anomalies import KINDS
from dqpulse.errors import ForbiddenError, NotFoundError, ValidationError
from dqpulse.services import audit
from dqpulse.spec import parse_duration
from dqpulse.store import silences as silence_store
from service.auth import require
from service.deps import ConnDep, Scope, ScopeDep
from service.errors import problems
from service.params import NO_NUL, IdPath, IsoTime

router = APIRouter(prefix="/silences", tags=["silences"])


class SilenceRead(BaseModel):
    id: int
    dataset: str | None
    owner: str | None
    kind: str | None
    starts_at: datetime
    ends_at: datetime
    comment: str | None
    created_by: str
    created_at: datetime
    active: bool


class _SilenceFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    owner: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    kind: str | None = Field(default=None, description=" | ".join(KINDS),
                             pattern=f"^({'|'.join(KINDS)})$")
    starts_at: IsoTime | None = Field(default=None, description="default: now")
    comment: str | None = Field(default=None, max_length=10_000, pattern=NO_NUL)
    created_by: str | None = Field(
        default=None, max_length=200, pattern=NO_NUL,
        description="a name for the audit note only: created_by is the token's identity "
                    "(deprecated)")


class SilenceCreateUntil(_SilenceFields):
    """A silence until ``ends_at``."""

    ends_at: IsoTime


class SilenceCreateFor(_SilenceFields):
    """A silence for ``duration`` from ``starts_at``."""

    duration: str = Field(description="e.g. '2h', '30m', '1d' (at most 366 days)",
                          pattern=r"^[1-9][0-9]{0,5}(s|m|h|d)$")


SilenceCreate = SilenceCreateUntil | SilenceCreateFor
MAX_DURATION = timedelta(days=366)


def _read(row: dict[str, Any], now: datetime) -> SilenceRead:
    return SilenceRead(**row, active=row["starts_at"] <= now < row["ends_at"])


def _sees(scope: Scope, row: dict[str, Any]) -> bool:
    """Admins see every silence; others those scoped to their datasets or teams."""
    principal = scope.principal
    if principal.is_admin:
        return True
    if row["dataset"] is None and row["owner"] is None:
        return False
    return ((row["dataset"] is None or scope.sees(row["dataset"]))
            and (row["owner"] is None or row["owner"] in principal.teams))


def _visible_or_404(scope: Scope, silence_id: int) -> dict[str, Any]:
    row = silence_store.get(scope.conn, silence_id=silence_id)
    if row is None or not _sees(scope, row):
        raise NotFoundError(f"silence {silence_id} does not exist")
    return row


def _check_create_scope(scope: Scope, body: SilenceCreateUntil | SilenceCreateFor) -> None:
    principal = scope.principal
    if principal.is_admin:
        return
    if not body.dataset and not body.owner:
        raise ForbiddenError("a silence of every dataset needs the admin role: give a "
                             "dataset or an owner of this token's teams")
    if body.dataset:
        scope.dataset(body.dataset)
    if body.owner and body.owner not in principal.teams:
        raise ForbiddenError(f"owner {body.owner!r} is not one of this token's teams")


def _window(body: SilenceCreateUntil | SilenceCreateFor, now: datetime
            ) -> tuple[datetime, datetime]:
    starts_at = body.starts_at.astimezone(UTC) if body.starts_at else now
    if isinstance(body, SilenceCreateFor):
        try:
            ends_at = starts_at + timedelta(seconds=parse_duration(body.duration))
        except OverflowError:
            raise ValidationError("body field 'duration': ends after year 9999") from None
        if ends_at - starts_at > MAX_DURATION:
            raise ValidationError("body field 'duration': at most 366 days")
    else:
        ends_at = body.ends_at.astimezone(UTC)
    if ends_at <= starts_at:
        raise ValidationError("body field 'ends_at': must be after starts_at")
    if ends_at <= now:
        raise ValidationError("body field 'ends_at': must be in the future")
    return starts_at, ends_at


@router.get("", response_model=list[SilenceRead],
            summary="Silences, newest first (those of the token's teams)")
def list_silences(
    conn: ConnDep,
    scope: ScopeDep,
    include_expired: Annotated[bool, Query(description="Also silences that have ended")]
    = False,
) -> list[SilenceRead]:
    now = datetime.now(UTC)
    rows = silence_store.get_all(conn, include_expired=include_expired, now=now)
    return [_read(r, now) for r in rows if _sees(scope, r)]


@router.post("", response_model=SilenceRead, status_code=201,
             responses=problems(400, 403, 404, 413),
             dependencies=[require("editor", "creating a silence")],
             summary="Create a silence or maintenance window (give ends_at or duration)")
def create_silence(body: SilenceCreate, conn: ConnDep, scope: ScopeDep) -> SilenceRead:
    now = datetime.now(UTC)
    _check_create_scope(scope, body)
    starts_at, ends_at = _window(body, now)
    row = silence_store.create(conn, dataset=body.dataset or None, owner=body.owner or None,
                               kind=body.kind, starts_at=starts_at, ends_at=ends_at,
                               comment=body.comment, created_by=scope.principal.name)
    audit.record(conn, scope.principal, action="silence.create", target=f"silence:{row['id']}",
                 team=body.owner or scope.team_of(body.dataset),
                 detail={"dataset": body.dataset, "owner": body.owner, "kind": body.kind,
                         "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(),
                         "comment": body.comment, "claimed_actor": body.created_by})
    return _read(row, now)


@router.get("/{silence_id}", response_model=SilenceRead, summary="One silence",
            responses=problems(404))
def get_silence(silence_id: IdPath, scope: ScopeDep) -> SilenceRead:
    return _read(_visible_or_404(scope, silence_id), datetime.now(UTC))


@router.delete("/{silence_id}", status_code=204, response_class=Response,
               responses=problems(403, 404),
               dependencies=[require("editor", "deleting a silence")],
               summary="Delete a silence (notifications resume at once)")
def delete_silence(silence_id: IdPath, conn: ConnDep, scope: ScopeDep) -> Response:
    row = _visible_or_404(scope, silence_id)
    silence_store.delete(conn, silence_id=silence_id)
    audit.record(conn, scope.principal, action="silence.delete", target=f"silence:{silence_id}",
                 team=row["owner"] or scope.team_of(row["dataset"]))
    return Response(status_code=204)
