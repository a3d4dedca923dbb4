"""Silences and maintenance windows: list, create, read, delete.

A silence matches incidents by dataset, owner and kind (an empty matcher matches all);
while it is active, alerts are recorded but no notification is queued.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from dqpulse.alerts.anomalies import KINDS
from dqpulse.errors import ValidationError
from dqpulse.spec import parse_duration
from dqpulse.store import silences as silence_store
from service.deps import ConnDep

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


class SilenceCreate(BaseModel):
    dataset: str | None = Field(default=None, max_length=200)
    owner: str | None = Field(default=None, max_length=200)
    kind: str | None = Field(default=None, description=" | ".join(KINDS))
    starts_at: datetime | None = Field(default=None, description="default: now")
    ends_at: datetime | None = Field(default=None, description="or give 'duration'")
    duration: str | None = Field(default=None, description="e.g. '2h', instead of ends_at")
    comment: str | None = Field(default=None, max_length=10_000)
    created_by: str | None = Field(default=None, max_length=200)


def _read(row: dict[str, Any], now: datetime) -> SilenceRead:
    return SilenceRead(**row, active=row["starts_at"] <= now < row["ends_at"])


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValidationError(f"body field {name!r}: needs a timezone (e.g. 'Z')")
    return value.astimezone(UTC)


@router.get("", response_model=list[SilenceRead], summary="Silences, newest first")
def list_silences(
    conn: ConnDep,
    include_expired: Annotated[bool, Query(description="Also silences that have ended")]
    = False,
) -> list[SilenceRead]:
    now = datetime.now(UTC)
    return [_read(r, now) for r in silence_store.get_all(conn, include_expired=include_expired,
                                                         now=now)]


@router.post("", response_model=SilenceRead, status_code=201,
             summary="Create a silence or maintenance window")
def create_silence(body: SilenceCreate, conn: ConnDep) -> SilenceRead:
    now = datetime.now(UTC)
    if body.kind is not None and body.kind not in KINDS:
        raise ValidationError(f"body field 'kind': must be one of {', '.join(KINDS)}, "
                              f"got {body.kind!r}")
    starts_at = _aware(body.starts_at, "starts_at") if body.starts_at else now
    if (body.ends_at is None) == (body.duration is None):
        raise ValidationError("body fields 'ends_at' and 'duration': give exactly one")
    if body.duration is not None:
        try:
            seconds = parse_duration(body.duration)
        except ValueError as exc:
            raise ValidationError(f"body field 'duration': {exc}") from None
        ends_at = starts_at + timedelta(seconds=seconds)
    else:
        assert body.ends_at is not None
        ends_at = _aware(body.ends_at, "ends_at")
    if ends_at <= starts_at:
        raise ValidationError("body field 'ends_at': must be after starts_at")
    if ends_at <= now:
        raise ValidationError("body field 'ends_at': must be in the future")
    row = silence_store.create(conn, dataset=body.dataset or None, owner=body.owner or None,
                               kind=body.kind, starts_at=starts_at, ends_at=ends_at,
                               comment=body.comment, created_by=body.created_by or "api")
    return _read(row, now)


@router.get("/{silence_id}", response_model=SilenceRead, summary="One silence")
def get_silence(silence_id: int, conn: ConnDep) -> SilenceRead:
    return _read(silence_store.get_or_raise(conn, silence_id=silence_id), datetime.now(UTC))


@router.delete("/{silence_id}", status_code=204, response_class=Response,
               summary="Delete a silence (notifications resume at once)")
def delete_silence(silence_id: int, conn: ConnDep) -> Response:
    silence_store.delete(conn, silence_id=silence_id)
    return Response(status_code=204)
