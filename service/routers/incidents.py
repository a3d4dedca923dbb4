"""Incidents: list with filters and cursor pagination, detail, acknowledge, resolve, feedback.

Thin wiring over :mod:`dqpulse.alerts.incidents` and :mod:`dqpulse.services.incidents` (the same
functions the workers use).
Notification channels come from the applied model (``app.state.model``, read from the
database). Channel URLs and secrets are never part of a response.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from dqpulse.alerts import actions, anomalies
from dqpulse.alerts import incidents as lifecycle
from dqpulse.errors import ValidationError
from dqpulse.services import incidents as incident_service
from dqpulse.spec import NotificationSpec
from dqpulse.store import incidents as incident_store
from dqpulse.store import outbox as outbox_store
from service.deps import ConnDep, SettingsDep
from service.routers.datasets import parse_time

router = APIRouter(prefix="/incidents", tags=["incidents"])

MAX_LIMIT = 500
_CURSOR_PREFIX = "v1:"


class IncidentRead(BaseModel):
    id: int
    dataset: str
    kind: str
    metric: str | None
    field: str | None
    severity: str
    status: str
    opened_at: datetime
    resolved_at: datetime | None
    summary: str
    score: float | None
    since: float | None = Field(default=None,
                                description="start of the first alerted window (epoch s)")


class IncidentPage(BaseModel):
    items: list[IncidentRead]
    next_cursor: str | None


class AlertRead(BaseModel):
    id: int
    kind: str
    metric: str
    field: str
    window_start: float
    severity: str
    score: float
    explanation: dict[str, Any] | None
    created_at: datetime


class IncidentEventRead(BaseModel):
    id: int
    action: str
    actor: str
    comment: str | None
    at: datetime


class DeliveryRead(BaseModel):
    id: int
    channel: str
    event: str
    idempotency_key: str
    status: str = Field(description="pending | delivered | dead")
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class IncidentDetailRead(IncidentRead):
    owner: str | None
    dedup_key: str
    acknowledged_at: datetime | None
    last_alert_at: datetime
    alert_count: int
    reopen_count: int
    healthy_windows: int
    flapping: bool
    feedback: str | None
    kinds: list[str]
    expected_low: float | None
    expected_high: float | None
    observed: float | None
    alerts: list[AlertRead]
    events: list[IncidentEventRead]
    deliveries: list[DeliveryRead]


class IncidentActionCreate(BaseModel):
    actor: str | None = Field(default=None, max_length=200)
    comment: str | None = Field(default=None, max_length=10_000)


class FeedbackCreate(BaseModel):
    verdict: str = Field(description="false_positive | confirmed")
    comment: str | None = Field(default=None, max_length=10_000)
    actor: str | None = Field(default=None, max_length=200)


class FeedbackRead(BaseModel):
    incident: IncidentDetailRead
    dataset: str
    metric: str | None
    field: str | None
    verdict: str
    window_starts: list[float]


def notifications_of(request: Request) -> list[NotificationSpec]:
    return list(request.app.state.model.spec().notifications)


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith(_CURSOR_PREFIX):
            raise ValueError(raw)
        value = int(raw[len(_CURSOR_PREFIX):])
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ValidationError(f"query parameter 'cursor': not a cursor from this API: "
                              f"{cursor!r}") from None
    if value < 1:
        raise ValidationError(f"query parameter 'cursor': not a cursor from this API: "
                              f"{cursor!r}")
    return value


def _choices(value: str | None, parameter: str, allowed: Sequence[str]) -> list[str]:
    if value is None or value == "":
        return []
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in allowed]
    if unknown or not chosen:
        raise ValidationError(f"query parameter {parameter!r}: must be one of "
                              f"{', '.join(allowed)} (comma-separated), got {value!r}")
    return chosen


def _common(row: dict[str, Any]) -> dict[str, Any]:
    """The IncidentRead fields of a stored row (``since`` is its first alerted window)."""
    values = {k: row[k] for k in IncidentRead.model_fields if k != "since"}
    values["since"] = row.get("first_window_start")
    return values


def _read(row: dict[str, Any]) -> IncidentRead:
    return IncidentRead(**_common(row))


def _detail(conn: ConnDep, incident_id: int) -> IncidentDetailRead:
    row = incident_store.get_or_raise(conn, incident_id=incident_id)
    details = row.get("details") or {}
    explanation = details.get("explanation") or {}

    def number(key: str) -> float | None:
        value = explanation.get(key)
        return float(value) if isinstance(value, int | float) else None

    return IncidentDetailRead(
        **_common(row),
        owner=row.get("owner"), dedup_key=row["dedup_key"],
        acknowledged_at=row["acknowledged_at"], last_alert_at=row["last_alert_at"],
        alert_count=row["alert_count"], reopen_count=row["reopen_count"],
        healthy_windows=row["healthy_windows"], flapping=bool(row["flapping"]),
        feedback=row["feedback"], kinds=list(details.get("kinds") or [row["kind"]]),
        expected_low=number("expected_low"),
        expected_high=number("expected_high"), observed=number("observed"),
        alerts=[AlertRead(**{k: a[k] for k in AlertRead.model_fields})
                for a in incident_store.get_alerts(conn, incident_id=incident_id)],
        events=[IncidentEventRead(**{k: e[k] for k in IncidentEventRead.model_fields})
                for e in incident_store.get_events(conn, incident_id=incident_id)],
        deliveries=[DeliveryRead(**{k: d[k] for k in DeliveryRead.model_fields})
                    for d in outbox_store.get_all(conn, incident_id=incident_id)],
    )


@router.get("", response_model=IncidentPage, summary="List incidents, newest first")
def list_incidents(
    conn: ConnDep,
    dataset: Annotated[str | None, Query(description="Only this dataset")] = None,
    status: Annotated[str | None, Query(
        description="open | acknowledged | resolved; comma-separated for several")] = None,
    kind: Annotated[str | None, Query(description="freshness | volume | completeness | ...")]
    = None,
    since: Annotated[str | None, Query(
        description="Only incidents opened at or after this time (epoch s or ISO-8601)")]
    = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")]
    = None,
) -> IncidentPage:
    statuses = _choices(status, "status", lifecycle.STATUSES)
    kinds = _choices(kind, "kind", anomalies.KINDS)
    if len(kinds) > 1:
        raise ValidationError("query parameter 'kind': give one kind")
    since_s = parse_time(since, "since")
    before_id = decode_cursor(cursor) if cursor else None
    rows = incident_store.get_page(
        conn, dataset=dataset or None, statuses=statuses, kind=kinds[0] if kinds else None,
        since=datetime.fromtimestamp(since_s, UTC) if since_s is not None else None,
        before_id=before_id, limit=limit + 1)
    page = rows[:limit]
    next_cursor = encode_cursor(int(page[-1]["id"])) if len(rows) > limit else None
    return IncidentPage(items=[_read(r) for r in page], next_cursor=next_cursor)


@router.get("/{incident_id}", response_model=IncidentDetailRead,
            summary="One incident with its alerts, audit trail and notification deliveries")
def get_incident(incident_id: int, conn: ConnDep) -> IncidentDetailRead:
    return _detail(conn, incident_id)


@router.post("/{incident_id}/acknowledge", response_model=IncidentDetailRead,
             summary="Acknowledge an open incident (409 otherwise)")
def acknowledge_incident(incident_id: int, conn: ConnDep, request: Request,
                         settings: SettingsDep,
                         body: IncidentActionCreate | None = None) -> IncidentDetailRead:
    body = body or IncidentActionCreate()
    actions.acknowledge(conn, incident_id=incident_id, actor=body.actor or "api",
                        comment=body.comment, notifications=notifications_of(request),
                        public_url=settings.public_url)
    return _detail(conn, incident_id)


@router.post("/{incident_id}/resolve", response_model=IncidentDetailRead,
             summary="Resolve an open or acknowledged incident (409 if resolved)")
def resolve_incident(incident_id: int, conn: ConnDep, request: Request, settings: SettingsDep,
                     body: IncidentActionCreate | None = None) -> IncidentDetailRead:
    body = body or IncidentActionCreate()
    actions.resolve(conn, incident_id=incident_id, actor=body.actor or "api",
                    comment=body.comment, notifications=notifications_of(request),
                    public_url=settings.public_url)
    return _detail(conn, incident_id)


@router.post("/{incident_id}/feedback", response_model=FeedbackRead,
             summary="Mark an incident a false positive (resolves it) or confirm it")
def incident_feedback(incident_id: int, body: FeedbackCreate, conn: ConnDep, request: Request,
                      settings: SettingsDep) -> FeedbackRead:
    target = incident_service.feedback(conn, incident_id=incident_id, verdict=body.verdict,
                                       comment=body.comment, actor=body.actor or "api",
                                       notifications=notifications_of(request),
                                       public_url=settings.public_url)
    return FeedbackRead(incident=_detail(conn, incident_id), dataset=target.dataset,
                        metric=target.metric, field=target.field, verdict=target.verdict,
                        window_starts=target.window_starts)
