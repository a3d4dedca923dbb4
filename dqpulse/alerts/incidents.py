"""Anomalies -> alerts -> incidents: grouping, dedup, lifecycle, silences, audit trail.

Everything here runs inside the caller's transaction (the window-finalize transaction for
:func:`process_window`, the request transaction for the API calls), so an incident change,
its alerts, its audit rows and its notification outbox rows commit together or not at all.

Grouping and dedup
    Every anomaly becomes one alert row. Alerts of one dataset are grouped by *root group*:
    ``freshness`` and ``volume`` share the group ``flow`` (a stopped producer shows both),
    every other kind is its own group, and ``completeness``/``validity`` alerts join an
    active ``schema`` incident of the dataset (or a schema alert of the same window): a
    contract change breaks them together. The incident's dedup key is
    ``dqpulse:<dataset>:<group>``; at most one incident per key is active (open or
    acknowledged) at a time. A field's distinct count that only follows the window's record
    count (same direction, moved no more than 1.25x as far) joins the ``flow`` group too:
    twice the traffic brings more distinct values, a silent topic none.

Lifecycle
    ``open -> acknowledged -> resolved`` (``open -> resolved`` too). An incident resolves
    automatically after ``auto_resolve_windows`` consecutive windows without an alert of its
    group. An alert for a key whose incident resolved less than ``reopen_grace_windows``
    windows ago reopens that incident instead of opening a new one. An incident that
    reopens ``flap_reopens`` times within ``flap_window_windows`` windows is *flapping*: it
    then needs ``flap_hold_factor`` times as many healthy windows to resolve, so it stops
    bouncing (and notifying) until it is really stable. A higher severity escalates it.
    Every one of these durations is counted in windows of event time (window starts and
    ends), never against the wall clock: a worker catching up hundreds of windows in
    seconds, or the demo's fast clock, opens, reopens and flaps exactly like a live run of
    the same stream. A reopen is counted from the end of the window that resolved the
    incident (resolved by hand: its last alerted window).

Severity
    The first of: ``DatasetSpec.severity[field]``, ``[metric]``, ``[kind]``; the field's
    ``FieldSpec.severity``; the severity the detector or rule attached to the anomaly; the
    score (``>= 0.98`` critical, ``>= 0.9`` warning, else info). An incident's severity is
    the highest of its alerts.

Notifications
    opened, reopened and escalated go to every channel whose ``match`` the incident
    satisfies; acknowledged and resolved go to the channels already told about the
    incident. While a silence (dataset/owner/kind, start..end) covers every kind of a
    group's alerts, alerts are recorded and incidents change, but nothing is queued; once
    the silence ends, the next alert announces the incident ("opened") to channels that
    never heard of it. Resolutions are always sent to channels that heard of the incident.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dqpulse.alerts import outbox
from dqpulse.alerts.anomalies import (
    SEVERITY_RANK,
    Anomaly,
    ClassifiedAnomaly,
    dedup_key,
    group_anomalies,
    max_severity,
    summarize,
)
from dqpulse.alerts.closing import channels_told, close
from dqpulse.alerts.impacts import (
    Announced,
    Related,
    find_root,
    join_root,
    lock_break,
    merge_downstream,
    record_alerts,
)
from dqpulse.alerts.routing import channels_for_incident, silence_for
from dqpulse.alerts.summary import with_later
from dqpulse.jsonsafe import json_safe
from dqpulse.spec import DatasetSpec, NotificationSpec
from dqpulse.store import incidents as incident_store
from dqpulse.store import silences as silence_store
from dqpulse.utc import as_utc_or_now

STATUSES = ("open", "acknowledged", "resolved")
SYSTEM_ACTOR = "dqpulse"

_MAX_TRACKED_METRICS = 50


@dataclass(frozen=True)
class IncidentOptions:
    """Lifecycle knobs; window counts scale with the dataset's window length."""

    auto_resolve_windows: int = 3
    reopen_grace_windows: int = 10
    flap_reopens: int = 3
    flap_window_windows: int = 30
    flap_hold_factor: int = 4
    notify_escalations: bool = True

    def __post_init__(self) -> None:
        for name in ("auto_resolve_windows", "flap_reopens", "flap_window_windows",
                     "flap_hold_factor"):
            if getattr(self, name) < 1:
                raise ValueError(f"IncidentOptions.{name} must be at least 1")
        if self.reopen_grace_windows < 0:
            raise ValueError("IncidentOptions.reopen_grace_windows must not be negative")


@dataclass
class WindowOutcome:
    """What :func:`process_window` changed (ids of incidents per transition)."""

    alerts: int = 0
    opened: list[int] = dc_field(default_factory=list)
    reopened: list[int] = dc_field(default_factory=list)
    updated: list[int] = dc_field(default_factory=list)
    escalated: list[int] = dc_field(default_factory=list)
    resolved: list[int] = dc_field(default_factory=list)
    impacts: list[int] = dc_field(default_factory=list)  # root incidents joined
    merged: list[int] = dc_field(default_factory=list)  # downstream incidents merged
    notifications: int = 0
    suppressed: int = 0
    open_incidents: int = 0

    def count(self, announced: Announced) -> None:
        self.notifications += announced.queued
        self.suppressed += announced.suppressed


def _details(previous: Mapping[str, Any] | None, top: Anomaly, kinds: Iterable[str],
             metrics: Iterable[tuple[str, str]], replace_top: bool) -> dict[str, Any]:
    details = dict(previous or {})
    if replace_top or "explanation" not in details:
        details["explanation"] = json_safe(top.explanation or {})
        details["window_start"] = top.window_start
        details["window_end"] = top.window_end
    details["kinds"] = sorted(set(details.get("kinds") or []) | set(kinds))
    known = [list(m) for m in details.get("metrics") or []]
    for metric, field_name in metrics:
        if [metric, field_name] not in known and len(known) < _MAX_TRACKED_METRICS:
            known.append([metric, field_name])
    details["metrics"] = known
    return details


def process_window(
    conn: Connection,
    *,
    dataset: DatasetSpec,
    window_start: float,
    window_end: float,
    anomalies: list[Anomaly],
    notifications: list[NotificationSpec],
    public_url: str,
    now: datetime | None = None,
    options: IncidentOptions | None = None,
    related: Related | None = None,
) -> WindowOutcome:
    """Record the window's anomalies as alerts and move the dataset's incidents along.

    Call once per finalized window (also windows without anomalies: they count as healthy),
    inside the transaction that finalizes the window. With ``related`` (the dataset's
    lineage), a group without an active incident joins an upstream root incident as an
    impact, and an incident that opens merges earlier downstream ones
    (``dqpulse.alerts.impacts``: one incident per break).
    """
    now = as_utc_or_now(now)
    options = options or IncidentOptions()
    result = WindowOutcome()
    if related is not None:  # before any incident row: see dqpulse.alerts.impacts
        lock_break(conn, related, dataset=dataset.name)
    silences = silence_store.get_active_for(conn, dataset=dataset.name, owner=dataset.owner,
                                            at=now)
    active = {row["dedup_key"]: row
              for row in incident_store.get_all_active(conn, dataset=dataset.name)}

    touched: set[str] = set()
    for group, members in group_anomalies(dataset, anomalies, set(active)).items():
        key = dedup_key(dataset.name, group)
        root = None if key in active or related is None else find_root(
            conn, related, dataset=dataset, window_start=window_start, window_end=window_end)
        if root is not None:
            result.count(join_root(
                conn, *root, dataset=dataset, members=members, window_start=window_start,
                window_end=window_end, notifications=notifications, public_url=public_url,
                now=now))
            result.impacts.append(int(root[0]["id"]))
            result.alerts += len(members)
            continue
        touched.add(key)
        _apply_group(conn, dataset=dataset, key=key, members=members, active=active.get(key),
                     window_start=window_start, window_end=window_end,
                     notifications=notifications, public_url=public_url, now=now,
                     options=options, silences=silences, result=result)
    for key, row in active.items():
        if key not in touched:
            _healthy_window(conn, row, window_start=window_start, window_end=window_end,
                            notifications=notifications, public_url=public_url, now=now,
                            options=options, result=result)
    for incident_id in result.opened + result.reopened if related is not None else []:
        merged, announced = merge_downstream(
            conn, incident_id, related or Related(), dataset=dataset,
            notifications=notifications, public_url=public_url, now=now)
        result.merged += merged
        result.count(announced)
    result.open_incidents = incident_store.count_active(conn, dataset=dataset.name)
    return result


def _healthy_window(conn: Connection, row: Mapping[str, Any], *, window_start: float,
                    window_end: float, notifications: Sequence[NotificationSpec],
                    public_url: str, now: datetime,
                    options: IncidentOptions, result: WindowOutcome) -> None:
    """An active incident without alerts in this window: one healthy window more, and
    resolved once there are enough of them (more while it is flapping)."""
    if row.get("last_window_end") is not None and window_start < row["last_window_end"]:
        return  # not after the incident's last alerted window: says nothing new
    healthy = int(row["healthy_windows"]) + 1
    needed = options.auto_resolve_windows * (options.flap_hold_factor
                                             if row["flapping"] else 1)
    incident_store.update(conn, incident_id=row["id"], healthy_windows=healthy)
    if healthy >= needed:
        result.notifications += close(
            conn, row, actor=SYSTEM_ACTOR,
            comment=f"auto-resolved after {healthy} healthy windows",
            notifications=notifications, public_url=public_url, now=now,
            window_end=window_end)
        result.resolved.append(int(row["id"]))


def _apply_group(conn: Connection, *, dataset: DatasetSpec, key: str,
                 members: list[ClassifiedAnomaly],
                 active: dict[str, Any] | None, window_start: float, window_end: float,
                 notifications: Sequence[NotificationSpec], public_url: str, now: datetime,
                 options: IncidentOptions, silences: Sequence[Mapping[str, Any]],
                 result: WindowOutcome) -> None:
    """One root group's alerts of the window: open, reopen or update its incident."""
    top_item = max(members, key=lambda i: (SEVERITY_RANK.get(i.severity, 0), i.anomaly.score))
    kinds = sorted({i.kind for i in members})
    group = _GroupAlerts(
        members=members, top_item=top_item, severity=max_severity(i.severity for i in members),
        kinds=kinds, metrics=[(i.anomaly.metric, i.anomaly.field) for i in members],
        silenced_by=silence_for(silences, kinds),
        best_score=max(i.anomaly.score for i in members))
    if active is None:
        _open_or_reopen(conn, dataset=dataset, key=key, group=group, window_start=window_start,
                        window_end=window_end, notifications=notifications,
                        public_url=public_url, now=now, options=options, result=result)
    else:
        _update_active(conn, dataset=dataset, active=active, group=group,
                       window_start=window_start, window_end=window_end,
                       notifications=notifications, public_url=public_url, now=now,
                       options=options, result=result)


@dataclass(frozen=True)
class _GroupAlerts:
    """One root group's alerts in a window, and what they add up to."""

    members: list[ClassifiedAnomaly]
    top_item: ClassifiedAnomaly
    severity: str
    kinds: list[str]
    metrics: list[tuple[str, str]]
    silenced_by: int | None
    best_score: float


def _open_or_reopen(conn: Connection, *, dataset: DatasetSpec, key: str, group: _GroupAlerts,
                    window_start: float, window_end: float,
                    notifications: Sequence[NotificationSpec], public_url: str, now: datetime,
                    options: IncidentOptions, result: WindowOutcome) -> None:
    """No active incident for the group: reopen one resolved within the grace period, or
    open a new one; then record the alerts and announce it."""
    members, top_item, top = group.members, group.top_item, group.top_item.anomaly
    severity, kinds, metrics = group.severity, group.kinds, group.metrics
    silenced_by, best_score = group.silenced_by, group.best_score
    previous = incident_store.get_last_resolved(conn, dataset=dataset.name, dedup_key=key)
    if previous is not None and not _within_grace(previous, window_start, dataset, options):
        previous = None
    if previous is not None:
        incident_id = _reopen(conn, previous, dataset=dataset, top_item=top_item,
                              severity=severity, kinds=kinds, metrics=metrics,
                              count=len(members), best_score=best_score,
                              window_start=window_start, window_end=window_end, now=now,
                              options=options)
        event = "reopened"
        result.reopened.append(incident_id)
    else:
        incident_id = incident_store.create(
            conn, dataset=dataset.name, kind=top_item.kind, metric=top.metric,
            field=top.field, severity=severity, status="open", dedup_key=key,
            opened_at=now, last_alert_at=now, healthy_windows=0, reopen_count=0,
            alert_count=len(members), summary=summarize(dataset.name, top),
            score=best_score, owner=dataset.owner,
            details=_details(None, top, kinds, metrics, replace_top=True),
            first_window_start=window_start, last_window_end=window_end, event_seq=0,
            flapping=False)
        incident_store.create_event(conn, incident_id=incident_id, action="opened",
                                    actor=SYSTEM_ACTOR,
                                    comment=summarize(dataset.name, top), at=now)
        event = "opened"
        result.opened.append(incident_id)
    record_alerts(conn, incident_id, members, now)
    row = incident_store.get_or_raise(conn, incident_id=incident_id)
    channels = channels_for_incident(notifications, row)
    if event == "reopened":
        channels += [c for c in channels_told(conn, row, notifications) if c not in channels]
    _announce(conn, row, event=event, channels=channels, silenced_by=silenced_by,
              public_url=public_url, now=now, result=result)
    result.alerts += len(members)


def _update_active(conn: Connection, *, dataset: DatasetSpec, active: dict[str, Any],
                   group: _GroupAlerts, window_start: float, window_end: float,
                   notifications: Sequence[NotificationSpec], public_url: str, now: datetime,
                   options: IncidentOptions, result: WindowOutcome) -> None:
    """The group's incident is active: add the alerts, escalate on a higher severity, and
    tell channels that have not heard of it yet."""
    members, top = group.members, group.top_item.anomaly
    severity, kinds, metrics = group.severity, group.kinds, group.metrics
    silenced_by, best_score = group.silenced_by, group.best_score
    incident_id = int(active["id"])
    # what opened the incident stays its metric, field, explanation and summary's first
    # line; later alerts are listed below it (dqpulse.alerts.summary)
    summary, details = with_later({**active, "details": _details(
        active.get("details"), top, kinds, metrics, replace_top=False)}, dataset.name,
        [i.anomaly for i in members])
    values: dict[str, Any] = {
        "healthy_windows": 0, "last_alert_at": now, "summary": summary, "details": details,
        "last_window_end": max(window_end, active.get("last_window_end") or window_end),
        "alert_count": int(active["alert_count"]) + len(members),
        "score": max(best_score, float(active.get("score") or 0.0)),
    }
    old_severity = str(active["severity"])
    escalated = SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(old_severity, 0)
    if escalated:
        values["severity"] = severity
    incident_store.update(conn, incident_id=incident_id, **values)
    record_alerts(conn, incident_id, members, now)
    result.alerts += len(members)
    row = incident_store.get_or_raise(conn, incident_id=incident_id)
    if escalated:
        incident_store.create_event(conn, incident_id=incident_id, action="escalated",
                                    actor=SYSTEM_ACTOR, comment=f"{old_severity} -> {severity}",
                                    at=now)
        result.escalated.append(incident_id)
        if options.notify_escalations:
            _announce(conn, row, event="escalated",
                      channels=channels_for_incident(notifications, row),
                      silenced_by=silenced_by, public_url=public_url, now=now, result=result,
                      previous_severity=old_severity)
            return
    result.updated.append(incident_id)
    if silenced_by is None:
        # announce to channels that have not heard of it (a silence ended, a channel was added)
        told = set(channels_told(conn, row, notifications))
        missing = [c for c in channels_for_incident(notifications, row) if c not in told]
        if missing:
            result.notifications += outbox.enqueue(conn, incident=row, event="opened",
                                                   channels=missing, public_url=public_url,
                                                   now=now, actor=SYSTEM_ACTOR)


def _reopen(conn: Connection, previous: Mapping[str, Any], *, dataset: DatasetSpec,
            top_item: ClassifiedAnomaly, severity: str, kinds: list[str],
            metrics: list[tuple[str, str]],
            count: int, best_score: float, window_start: float, window_end: float,
            now: datetime, options: IncidentOptions) -> int:
    incident_id = int(previous["id"])
    top = top_item.anomaly
    details = _details(previous.get("details"), top, kinds, metrics, replace_top=True)
    # event time: the window that reopened it, so a catch-up (hundreds of windows in seconds)
    # and a live run count the same reopens inside the flapping horizon
    horizon = window_start - options.flap_window_windows * dataset.window
    reopens = [t for t in details.get("reopened_windows") or [] if t >= horizon]
    reopens.append(window_start)
    details["reopened_windows"] = reopens
    details.pop("reopened_at", None)  # wall-clock list of older versions
    details.pop("resolved_window_end", None)
    flapping = bool(previous["flapping"]) or len(reopens) >= options.flap_reopens
    incident_store.update(
        conn, incident_id=incident_id, status="open", resolved_at=None, acknowledged_at=None,
        reopen_count=int(previous["reopen_count"]) + 1, healthy_windows=0, last_alert_at=now,
        last_window_end=window_end, alert_count=int(previous["alert_count"]) + count,
        severity=severity, score=best_score, metric=top.metric, field=top.field,
        summary=summarize(dataset.name, top), details=details, flapping=flapping)
    incident_store.create_event(conn, incident_id=incident_id, action="reopened",
                                actor=SYSTEM_ACTOR, comment=summarize(dataset.name, top), at=now)
    if flapping and not previous["flapping"]:
        incident_store.create_event(
            conn, incident_id=incident_id, action="flapping", actor=SYSTEM_ACTOR,
            comment=(f"reopened {len(reopens)} times within {options.flap_window_windows} "
                     f"windows; resolves only after "
                     f"{options.auto_resolve_windows * options.flap_hold_factor} healthy "
                     "windows"), at=now)
    return incident_id


def _within_grace(previous: Mapping[str, Any], window_start: float, dataset: DatasetSpec,
                  options: IncidentOptions) -> bool:
    """Whether an alert in the window starting at ``window_start`` comes within
    ``reopen_grace_windows`` of ``previous``'s resolution, counted in event time: the end
    of the window that resolved it (or, resolved by hand, of its last alerted window)."""
    details = previous.get("details") or {}
    resolved_end = details.get("resolved_window_end", previous.get("last_window_end"))
    if resolved_end is None:
        return False
    return window_start - float(resolved_end) < options.reopen_grace_windows * dataset.window


def _announce(conn: Connection, row: Mapping[str, Any], *, event: str, channels: list[str],
              silenced_by: int | None, public_url: str, now: datetime, result: WindowOutcome,
              previous_severity: str | None = None) -> None:
    if not channels:
        return
    if silenced_by is not None:
        incident_store.create_event(
            conn, incident_id=int(row["id"]), action="silenced", actor=SYSTEM_ACTOR,
            comment=f"{event} notification to {len(channels)} channel(s) suppressed by "
                    f"silence #{silenced_by}", at=now)
        result.suppressed += len(channels)
        return
    result.notifications += outbox.enqueue(conn, incident=row, event=event, channels=channels,
                                           public_url=public_url, now=now, actor=SYSTEM_ACTOR,
                                           previous_severity=previous_severity)
