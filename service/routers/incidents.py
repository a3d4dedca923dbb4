"""Incidents: list with filters and cursor pagination, detail, acknowledge, resolve, feedback.

Thin wiring over :mod:`dqpulse.alerts.incidents` and :mod:`dqpulse.services.incidents` (the same
functions the workers use).
Notification channels come from the applied model (``app.state.model``, read from the
database). Channel URLs and secrets are never part of a response.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from dqpulse.access import ANONYMOUS_ADMIN, Principal
from dqpulse.alerts import actions
from dqpulse.alerts.anomalies import KINDS
from dqpulse.alerts.incidents import STATUSES
from dqpulse.services import audit
from dqpulse.services import incidents as incident_service
from dqpulse.spec import NotificationSpec
from dqpulse.store import incidents as incident_store
from dqpulse.store import outbox as outbox_store
from service.auth import require
from service.deps import ConnDep, Scope, ScopeDep, SettingsDep
from service.errors import problems
from service.params import NO_NUL, IdPath, TimeQuery, epoch

router = APIRouter(prefix="/incidents", tags=["incidents"])

MAX_LIMIT = 500
# an empty value is no filter (as an absent one)
_STATUS_LIST = f"^(({'|'.join(STATUSES)})(,({'|'.join(STATUSES)}))*)?$"
# the cursor is the id of the last incident on the previous page (opaque to clients)
CURSOR_PATTERN = r"^([1-9][0-9]{0,17})?$"
WRITE = problems(400, 403, 404, 409, 413)


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
    role: Literal["root", "impact"] = Field(
        default="root",
        description="in a list: 'impact' when the incident is listed because the dataset "
                    "asked for (without 'dataset': one of the token's teams' datasets) is "
                    "one of its impacts, i.e. an upstream break that hits it; 'root' when "
                    "it is the incident of its own dataset")
    impacted: list[str] = Field(
        default_factory=list,
        description="the downstream datasets that joined this incident as impacts (one "
                    "incident per break; within the token's teams)")


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


class SampleRead(BaseModel):
    partition: int
    offset: int | None
    record: dict[str, Any]
    redacted: list[str] = Field(default_factory=list)


class SampleSetRead(BaseModel):
    metric: str
    field: str
    window_start: float
    records: list[SampleRead]


_MAX_SAMPLE_SETS = 20


def _samples(alerts: list[dict[str, Any]]) -> list[SampleSetRead]:
    """The failing samples of each alerted series, from its first alert that has any."""
    out: dict[tuple[str, str], SampleSetRead] = {}
    for alert in sorted(alerts, key=lambda a: a["window_start"]):
        found = (alert.get("explanation") or {}).get("samples")
        key = (alert["metric"], alert["field"])
        if found and key not in out and len(out) < _MAX_SAMPLE_SETS:
            out[key] = SampleSetRead(metric=key[0], field=key[1],
                                     window_start=alert["window_start"],
                                     records=[SampleRead(**s) for s in found])
    return list(out.values())


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
    samples: list[SampleSetRead] = Field(
        default_factory=list,
        description="failing records of the alerted series (first alerted window of each), "
                    "with partition and offset; redacted fields are named, never shown")


_ACTOR_NOTE = ("a name for the audit note only: the actor recorded is the token's "
               "identity (deprecated)")


class IncidentActionCreate(BaseModel):
    actor: str | None = Field(default=None, max_length=200, pattern=NO_NUL,
                              description=_ACTOR_NOTE)
    comment: str | None = Field(default=None, max_length=10_000, pattern=NO_NUL)


class FeedbackCreate(BaseModel):
    verdict: Literal["false_positive", "confirmed"]
    comment: str | None = Field(default=None, max_length=10_000, pattern=NO_NUL)
    actor: str | None = Field(default=None, max_length=200, pattern=NO_NUL,
                              description=_ACTOR_NOTE)


class TaughtSeriesRead(BaseModel):
    metric: str
    field: str = Field(description="the field ('' for a dataset-level metric)")


class FeedbackRead(BaseModel):
    incident: IncidentDetailRead
    dataset: str
    metric: str | None
    field: str | None
    verdict: str
    window_starts: list[float]
    series_taught: int = Field(
        0, description="how many series' detectors the verdict was handed to")
    adoptions_undone: list[TaughtSeriesRead] = Field(
        default_factory=list,
        description="series where a `confirmed` verdict took back a shift the detector had "
                    "already adopted as the new normal: they alert again until their level "
                    "before it is back")


def notifications_of(request: Request) -> list[NotificationSpec]:
    return list(request.app.state.model.spec().notifications)


def _audit(conn: ConnDep, scope: Scope, action: str, incident: dict[str, Any],
           body: IncidentActionCreate | FeedbackCreate) -> None:
    detail: dict[str, Any] = {"comment": body.comment, "claimed_actor": body.actor}
    if isinstance(body, FeedbackCreate):
        detail["verdict"] = body.verdict
    audit.record(conn, scope.principal, action=action, target=f"incident:{incident['id']}",
                 team=scope.team_of(str(incident["dataset"])), detail=detail)


def _actor(principal: Principal, body: IncidentActionCreate | FeedbackCreate) -> str:
    """The incident event's actor: the token's name. In open mode nothing is authenticated,
    so the name the client gives (the console's "Your name") is all there is."""
    if principal is ANONYMOUS_ADMIN and body.actor:
        return body.actor
    return principal.name


_DERIVED = ("since", "role", "impacted")


def _common(row: dict[str, Any], impacted: list[str], role: str = "root") -> dict[str, Any]:
    """The IncidentRead fields of a stored row (``since`` is its first alerted window)."""
    values = {k: row[k] for k in IncidentRead.model_fields if k not in _DERIVED}
    values.update(since=row.get("first_window_start"), role=role, impacted=impacted)
    return values


def _visible(scope: Scope, names: list[str]) -> list[str]:
    return names if scope.principal.is_admin else [n for n in names if scope.sees(n)]


def _detail(conn: ConnDep, incident_id: int, scope: Scope) -> IncidentDetailRead:
    row = incident_store.get_or_raise(conn, incident_id=incident_id)
    details = row.get("details") or {}
    explanation = details.get("explanation") or {}
    alerts = incident_store.get_alerts(conn, incident_id=incident_id)
    if not scope.principal.is_admin:  # an impacted team reads the root's alerts and its own
        alerts = [a for a in alerts if a["dataset"] == row["dataset"] or scope.sees(a["dataset"])]
    impacted = _visible(scope, incident_store.get_impacted(conn, incident_id=incident_id))

    def number(key: str) -> float | None:
        value = explanation.get(key)
        return float(value) if isinstance(value, int | float) else None

    return IncidentDetailRead(
        **_common(row, impacted),
        owner=row.get("owner"), dedup_key=row["dedup_key"],
        acknowledged_at=row["acknowledged_at"], last_alert_at=row["last_alert_at"],
        alert_count=row["alert_count"], reopen_count=row["reopen_count"],
        healthy_windows=row["healthy_windows"], flapping=bool(row["flapping"]),
        feedback=row["feedback"], kinds=list(details.get("kinds") or [row["kind"]]),
        expected_low=number("expected_low"),
        expected_high=number("expected_high"), observed=number("observed"),
        alerts=[AlertRead(**{k: a[k] for k in AlertRead.model_fields}) for a in alerts],
        samples=_samples([a for a in alerts if scope.sees(a["dataset"])]),
        events=[IncidentEventRead(**{k: e[k] for k in IncidentEventRead.model_fields})
                for e in incident_store.get_events(conn, incident_id=incident_id)],
        deliveries=[DeliveryRead(**{k: d[k] for k in DeliveryRead.model_fields})
                    for d in outbox_store.get_all(conn, incident_id=incident_id)],
    )


@router.get("", response_model=IncidentPage,
            summary="List incidents, newest first (the token's teams' incidents)")
def list_incidents(
    conn: ConnDep,
    scope: ScopeDep,
    dataset: Annotated[str | None, Query(description="Only this dataset", max_length=200,
                                         pattern=NO_NUL)] = None,
    status: Annotated[str | None, Query(
        description="open | acknowledged | resolved; comma-separated for several",
        pattern=_STATUS_LIST)] = None,
    kind: Annotated[str | None, Query(description=" | ".join(KINDS),
                                      pattern=f"^({'|'.join(KINDS)})?$")] = None,
    since: TimeQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page",
                                        pattern=CURSOR_PATTERN)] = None,
    impacts: Annotated[bool, Query(
        description="Also the incidents of upstream datasets that 'dataset' (without it: "
                    "the token's teams' datasets) is an impact of, with role 'impact'; "
                    "false: only the datasets' own incidents")] = True,
) -> IncidentPage:
    since_s = epoch(since)
    visible = scope.datasets()
    rows = incident_store.get_page(
        conn, dataset=dataset or None, statuses=status.split(",") if status else (),
        kind=kind or None, datasets=visible, with_impacts=impacts,
        since=datetime.fromtimestamp(since_s, UTC) if since_s is not None else None,
        before_id=int(cursor) if cursor else None, limit=limit + 1)
    page = rows[:limit]
    next_cursor = str(page[-1]["id"]) if len(rows) > limit else None
    impacted = incident_store.get_impacted_all(conn, incident_ids=[r["id"] for r in page])

    def role(row: dict[str, Any]) -> str:
        own = row["dataset"] == dataset if dataset else (
            visible is None or row["dataset"] in visible)
        return "root" if own else "impact"

    return IncidentPage(items=[
        IncidentRead(**_common(r, _visible(scope, impacted.get(r["id"], [])), role(r)))
        for r in page], next_cursor=next_cursor)


@router.get("/{incident_id}", response_model=IncidentDetailRead, responses=problems(404),
            summary="One incident with its alerts, audit trail and notification deliveries")
def get_incident(incident_id: IdPath, conn: ConnDep, scope: ScopeDep) -> IncidentDetailRead:
    scope.incident_to_read(incident_id)
    return _detail(conn, incident_id, scope)


@router.post("/{incident_id}/acknowledge", response_model=IncidentDetailRead, responses=WRITE,
             dependencies=[require("editor", "acknowledging an incident")],
             summary="Acknowledge an open incident (409 otherwise)")
def acknowledge_incident(incident_id: IdPath, conn: ConnDep, scope: ScopeDep,
                         request: Request, settings: SettingsDep,
                         body: IncidentActionCreate | None = None) -> IncidentDetailRead:
    body = body or IncidentActionCreate()
    incident = scope.incident(incident_id)
    actions.acknowledge(conn, incident_id=incident_id, actor=_actor(scope.principal, body),
                        comment=body.comment, notifications=notifications_of(request),
                        public_url=settings.public_url)
    _audit(conn, scope, "incident.acknowledge", incident, body)
    return _detail(conn, incident_id, scope)


@router.post("/{incident_id}/resolve", response_model=IncidentDetailRead, responses=WRITE,
             dependencies=[require("editor", "resolving an incident")],
             summary="Resolve an open or acknowledged incident (409 if resolved)")
def resolve_incident(incident_id: IdPath, conn: ConnDep, scope: ScopeDep, request: Request,
                     settings: SettingsDep,
                     body: IncidentActionCreate | None = None) -> IncidentDetailRead:
    body = body or IncidentActionCreate()
    incident = scope.incident(incident_id)
    actions.resolve(conn, incident_id=incident_id, actor=_actor(scope.principal, body),
                    comment=body.comment, notifications=notifications_of(request),
                    public_url=settings.public_url)
    _audit(conn, scope, "incident.resolve", incident, body)
    return _detail(conn, incident_id, scope)


@router.post("/{incident_id}/feedback", response_model=FeedbackRead, responses=WRITE,
             dependencies=[require("editor", "giving feedback on an incident")],
             summary="Mark an incident a false positive (resolves it) or confirm it")
def incident_feedback(incident_id: IdPath, body: FeedbackCreate, conn: ConnDep,
                      scope: ScopeDep, request: Request, settings: SettingsDep) -> FeedbackRead:
    incident = scope.incident(incident_id)
    target, taught = incident_service.feedback(
        conn, incident_id=incident_id, verdict=body.verdict, comment=body.comment,
        actor=_actor(scope.principal, body), notifications=notifications_of(request),
        public_url=settings.public_url)
    _audit(conn, scope, "incident.feedback", incident, body)
    return FeedbackRead(incident=_detail(conn, incident_id, scope), dataset=target.dataset,
                        metric=target.metric, field=target.field, verdict=target.verdict,
                        window_starts=target.window_starts, series_taught=taught.series,
                        adoptions_undone=[TaughtSeriesRead(metric=metric, field=field)
                                          for metric, field in taught.adoptions_undone])
