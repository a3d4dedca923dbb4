"""One incident per break: a downstream dataset's alerts join the upstream root's incident.

When datasets linked by lineage alert within a window of each other, the incident of the
dataset farthest upstream is the *root*; the alerts of the datasets below it are recorded
on the root's incident (alert rows keep their own dataset) and listed in its
``details["impacts"]`` (dataset, owner, lineage distance, kinds, alerts, first window,
segment), instead of opening incidents of their own. "Within a window" is counted in
event time: the downstream alert's window starts no more than ``slack_windows`` windows
outside the root incident's alerted windows (first window start .. last window end), so
the order in which workers finalize the datasets does not matter:

* the upstream incident exists (active or already resolved): the alerts join it, and a
  dataset's first joining sends an ``impact`` notification to the channels told about the
  root and the channels that match the impacted dataset;
* the downstream incident came first (its dataset finalized sooner): opening the root
  merges it, it resolves with ``details["merged_into"]`` and becomes an impact (with the
  same ``impact`` notification on the root); datasets that had joined it as impacts (it
  was a nearer root) move to the root with it, their alerts stay on the merged incident
  (``merged_incident_id``), and incidents merged into it earlier are re-pointed to the
  root (``merged_into`` always names the live incident).

Datasets finalized concurrently by several workers (each in its own transaction) decide
one at a time: :func:`lock_break` takes a lock per dataset of the lineage around the
alerting dataset (itself, its upstream and its downstream), held until the finalize
transaction commits, before any incident row is read. Two linked datasets lock each
other's name, so a root and its downstream alerting at the same moment never both open an
incident without seeing the other's. The root incident's row is also locked
(``FOR UPDATE``) while a dataset joins or merges, so nothing (an acknowledgement, a
resolution) overwrites its impacts.

The caller passes the lineage around the dataset (``Related``): this layer does not read
the graph itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dqpulse.alerts import outbox
from dqpulse.alerts.anomalies import ClassifiedAnomaly
from dqpulse.alerts.routing import channels_for_incident, silence_for
from dqpulse.jsonsafe import json_safe
from dqpulse.spec import DatasetSpec, NotificationSpec
from dqpulse.store import incidents as incident_store
from dqpulse.store import outbox as outbox_store
from dqpulse.store import silences as silence_store

SYSTEM_ACTOR = "dqpulse"
_MAX_IMPACTS = 100
_RECENT = 20  # incidents per related dataset looked at


@dataclass(frozen=True)
class Related:
    """Datasets linked to one dataset by lineage, with their distance (1: adjacent)."""

    upstream: Mapping[str, int] = field(default_factory=dict)
    downstream: Mapping[str, int] = field(default_factory=dict)
    owners: Mapping[str, str | None] = field(default_factory=dict)
    slack_windows: float = 1.0


def lock_break(conn: Connection, related: Related, *, dataset: str) -> int:
    """Serialize this window's incident decisions with those of the datasets linked to
    ``dataset`` by lineage (until the caller's transaction ends); returns the locks taken
    (none without lineage)."""
    names = {dataset, *related.upstream, *related.downstream}
    return incident_store.lock_datasets(conn, names=names) if len(names) > 1 else 0


def _covers(row: Mapping[str, Any], start: float, end: float, slack: float) -> bool:
    first = row.get("first_window_start")
    if first is None or (row.get("details") or {}).get("merged_into") is not None:
        return False
    last = row.get("last_window_end") or first
    return float(first) - slack <= end and start <= float(last) + slack


def find_root(conn: Connection, related: Related, *, dataset: DatasetSpec,
              window_start: float, window_end: float) -> tuple[dict[str, Any], int] | None:
    """The upstream incident (and its distance) this window's alerts belong to: the one
    farthest upstream whose alerted windows are within the slack, earliest first."""
    slack = related.slack_windows * dataset.window
    best: tuple[tuple[int, float, int], dict[str, Any], int] | None = None
    for name, distance in related.upstream.items():
        for row in incident_store.get_page(conn, dataset=name, limit=_RECENT):
            if not _covers(row, window_start, window_end, slack):
                continue
            key = (-distance, float(row["first_window_start"]), int(row["id"]))
            if best is None or key < best[0]:
                best = (key, row, distance)
    if best is None:
        return None
    # locked until commit: datasets finalized concurrently (other workers, a score
    # worker) join one at a time, none overwrites another's impact
    return incident_store.get_or_raise(conn, incident_id=int(best[1]["id"]),
                                       for_update=True), best[2]


def _impact_entry(previous: Mapping[str, Any] | None, *, dataset: str, owner: str | None,
                  distance: int, kinds: Sequence[str], alerts: int, score: float,
                  window_start: float, window_end: float, segment: Any,
                  incident_id: int | None = None) -> dict[str, Any]:
    entry = dict(previous or {"dataset": dataset, "owner": owner, "distance": distance,
                              "first_window_start": window_start, "alerts": 0, "kinds": [],
                              "score": 0.0, "segment": segment})
    entry["kinds"] = sorted(set(entry["kinds"]) | set(kinds))
    entry["alerts"] = int(entry["alerts"]) + alerts
    entry["score"] = max(float(entry["score"]), score)
    entry["first_window_start"] = min(float(entry["first_window_start"]), window_start)
    entry["last_window_end"] = max(float(entry.get("last_window_end") or window_end),
                                   window_end)
    if entry.get("segment") is None:
        entry["segment"] = segment
    if incident_id is not None:
        entry["merged_incident_id"] = incident_id
    return entry


def _add_impact(conn: Connection, root: Mapping[str, Any], entry: dict[str, Any],
                alerts: int) -> bool:
    """Store ``entry`` in the root's impacts; True when the dataset is new there."""
    details = dict(root.get("details") or {})
    impacts = [dict(i) for i in details.get("impacts") or []]
    new = all(i["dataset"] != entry["dataset"] for i in impacts)
    impacts = [i for i in impacts if i["dataset"] != entry["dataset"]] + [entry]
    details["impacts"] = sorted(impacts, key=lambda i: (i["distance"], i["dataset"]))[
        :_MAX_IMPACTS]
    incident_store.update(conn, incident_id=int(root["id"]), details=json_safe(details),
                          alert_count=int(root["alert_count"]) + alerts)
    if new:  # the dataset now finds (lists, counts) this incident as one that hits it
        incident_store.create_impact(conn, incident_id=int(root["id"]),
                                     dataset=str(entry["dataset"]))
    return new


@dataclass
class Announced:
    """Impact notifications queued and suppressed (channels) by one call."""

    queued: int = 0
    suppressed: int = 0

    def add(self, other: Announced) -> Announced:
        self.queued += other.queued
        self.suppressed += other.suppressed
        return self


def join_root(conn: Connection, root: dict[str, Any], distance: int, *,
              dataset: DatasetSpec, members: Sequence[ClassifiedAnomaly],
              window_start: float, window_end: float,
              notifications: Sequence[NotificationSpec], public_url: str,
              now: datetime) -> Announced:
    """Record ``members`` (alerts of ``dataset``) on the root incident as an impact;
    returns the impact notifications queued and suppressed by silences."""
    root_id = int(root["id"])
    top = max(members, key=lambda i: i.anomaly.score)
    record_alerts(conn, root_id, members, now)
    previous = next((i for i in (root.get("details") or {}).get("impacts") or []
                     if i["dataset"] == dataset.name), None)
    entry = _impact_entry(previous, dataset=dataset.name, owner=dataset.owner,
                          distance=distance, kinds=sorted({i.kind for i in members}),
                          alerts=len(members), score=float(top.anomaly.score),
                          window_start=window_start, window_end=window_end,
                          segment=(top.anomaly.explanation or {}).get("segment"))
    if previous is not None and previous.get("notified", True):
        _add_impact(conn, root, entry, len(members))  # announced already: nothing to send
        return Announced()
    # first joining, or joined while silenced: announce unless (still) silenced
    silence = _impact_silence(conn, entry, now)
    entry["notified"] = silence is None
    _add_impact(conn, root, entry, len(members))
    if previous is None:
        _audit_impact(conn, root_id, entry, now)
    elif silence is not None:
        return Announced()  # still silenced: suppressed (and audited) when it joined
    return _announce(conn, root_id, entry, silence=silence, notifications=notifications,
                     public_url=public_url, now=now)


def _impact_silence(conn: Connection, entry: Mapping[str, Any], now: datetime) -> int | None:
    """Id of an active silence of the impacted dataset (its name, owner, the impact's
    kinds), exactly as it would silence the dataset's own incident; else None."""
    found = silence_store.get_active_for(conn, dataset=str(entry["dataset"]),
                                         owner=entry.get("owner"), at=now)
    return silence_for(found, entry["kinds"])


def _audit_impact(conn: Connection, root_id: int, entry: Mapping[str, Any],
                  now: datetime) -> None:
    incident_store.create_event(
        conn, incident_id=root_id, action="impact", actor=SYSTEM_ACTOR,
        comment=f"{entry['dataset']} (owner {entry.get('owner') or 'unassigned'}) impacted: "
                f"{', '.join(entry['kinds'])}", at=now)


def _announce(conn: Connection, root_id: int, entry: Mapping[str, Any], *,
              silence: int | None, notifications: Sequence[NotificationSpec],
              public_url: str, now: datetime) -> Announced:
    """Tell the channels about an impacted dataset (an ``impact`` message): the channels
    whose routing matches the impacted dataset (its name, owner, the impact's kinds) and
    the channels already told about the root. Silences apply per audience, as they would
    without the root: one of the impacted dataset (``silence``) suppresses the message
    everywhere; one of the root's dataset suppresses it to the root's audience only."""
    fresh = incident_store.get_or_raise(conn, incident_id=root_id)
    told = outbox_store.notified_channels(conn, incident_id=root_id)
    theirs = channels_for_incident(notifications, {
        **fresh, "dataset": entry["dataset"], "owner": entry.get("owner"),
        "details": {"kinds": list(entry["kinds"])}})
    root_silence = silence_for(
        silence_store.get_active_for(conn, dataset=str(fresh["dataset"]),
                                     owner=fresh.get("owner"), at=now),
        (fresh.get("details") or {}).get("kinds") or [fresh["kind"]])
    wanted = [n.name for n in notifications if n.name in told or n.name in theirs]
    if silence is not None:
        send, muted, by = [], wanted, silence
    elif root_silence is not None:
        send = [c for c in wanted if c in theirs]
        muted, by = [c for c in wanted if c not in theirs], root_silence
    else:
        send, muted, by = wanted, [], None
    if muted:
        incident_store.create_event(
            conn, incident_id=root_id, action="silenced", actor=SYSTEM_ACTOR,
            comment=f"impact notification of {entry['dataset']} to {len(muted)} channel(s) "
                    f"suppressed by silence #{by}", at=now)
    queued = outbox.enqueue(conn, incident=fresh, event="impact", channels=send,
                            public_url=public_url, now=now,
                            actor=SYSTEM_ACTOR) if send else 0
    return Announced(queued=queued, suppressed=len(muted))


def merge_downstream(conn: Connection, root_id: int, related: Related, *,
                     dataset: DatasetSpec, notifications: Sequence[NotificationSpec],
                     public_url: str, now: datetime) -> tuple[list[int], Announced]:
    """Incidents of downstream datasets that opened first, within the slack of the root:
    resolved as merged into the root and listed as its impacts; returns their ids and the
    impact notifications queued and suppressed."""
    merged: list[int] = []
    announced = Announced()
    slack = related.slack_windows * dataset.window
    for name, distance in sorted(related.downstream.items(), key=lambda kv: kv[1]):
        for listed in incident_store.get_page(conn, dataset=name, limit=_RECENT):
            root = incident_store.get_or_raise(conn, incident_id=root_id, for_update=True)
            if not _covers(listed, float(root["first_window_start"]),
                           float(root["last_window_end"]), slack):
                continue
            row = incident_store.get_or_raise(conn, incident_id=int(listed["id"]),
                                              for_update=True)  # its dataset may finalize now
            if (row.get("details") or {}).get("merged_into") is not None:
                continue
            details = row.get("details") or {}
            entry = _impact_entry(
                None, dataset=name, owner=row.get("owner"), distance=distance,
                kinds=details.get("kinds") or [row["kind"]], alerts=int(row["alert_count"]),
                score=float(row.get("score") or 0.0),
                window_start=float(row["first_window_start"]),
                window_end=float(row.get("last_window_end") or row["first_window_start"]),
                segment=(details.get("explanation") or {}).get("segment"),
                incident_id=int(row["id"]))
            carried = [entry] + [  # what had joined the merged incident joins the root
                {**i, "distance": related.downstream.get(i["dataset"],
                                                         distance + int(i["distance"])),
                 "merged_incident_id": i.get("merged_incident_id") or int(row["id"])}
                for i in details.get("impacts") or []]
            for item in carried:
                fresh = incident_store.get_or_raise(conn, incident_id=root_id, for_update=True)
                silence = _impact_silence(conn, item, now)
                if _add_impact(conn, fresh, {**item, "notified": silence is None}, 0):
                    _audit_impact(conn, root_id, item, now)
                    announced.add(_announce(conn, root_id, item, silence=silence,
                                            notifications=notifications,
                                            public_url=public_url, now=now))
            _close_merged(conn, row, root_id, notifications=notifications,
                          public_url=public_url, now=now)
            for item in details.get("impacts") or []:
                if item.get("merged_incident_id") is not None:
                    _follow_merge(conn, int(item["merged_incident_id"]), int(row["id"]),
                                  root_id, now)
            merged.append(int(row["id"]))
    return merged, announced


def _follow_merge(conn: Connection, incident_id: int, via: int, root_id: int,
                  now: datetime) -> None:
    """An incident merged earlier into ``via``, which is now merged into ``root_id``, points
    at the root too: ``merged_into`` always names the live incident (root cause, links),
    never a chain of resolved ones."""
    row = incident_store.get(conn, incident_id=incident_id, for_update=True)
    if row is None or (row.get("details") or {}).get("merged_into") in (None, root_id):
        return
    incident_store.update(conn, incident_id=incident_id, details={
        **(row.get("details") or {}), "merged_into": root_id})
    incident_store.create_event(
        conn, incident_id=incident_id, action="merged", actor=SYSTEM_ACTOR,
        comment=f"merged into incident #{root_id} with incident #{via} (its upstream root)",
        at=now)


def _close_merged(conn: Connection, row: Mapping[str, Any], root_id: int, *,
                  notifications: Sequence[NotificationSpec], public_url: str,
                  now: datetime) -> None:
    comment = f"merged into incident #{root_id} (its upstream root) as an impact"
    values: dict[str, Any] = {"details": {**(row.get("details") or {}), "merged_into": root_id}}
    active = row["status"] != "resolved"
    if active:
        values.update(status="resolved", resolved_at=now, flapping=False)
    incident_store.update(conn, incident_id=int(row["id"]), **values)
    incident_store.create_event(conn, incident_id=int(row["id"]), action="merged",
                                actor=SYSTEM_ACTOR, comment=comment, at=now)
    if active:
        told = outbox_store.notified_channels(conn, incident_id=int(row["id"]))
        fresh = incident_store.get_or_raise(conn, incident_id=int(row["id"]))
        outbox.enqueue(conn, incident=fresh, event="resolved",
                       channels=[n.name for n in notifications if n.name in told],
                       public_url=public_url, now=now, actor=SYSTEM_ACTOR, comment=comment)


def record_alerts(conn: Connection, incident_id: int, members: Sequence[ClassifiedAnomaly],
                  now: datetime) -> None:
    """Store ``members`` as alert rows of incident ``incident_id`` (its own alerts, or a
    downstream dataset's alerts joining a root as an impact)."""
    incident_store.create_alerts(conn, rows=[{
        "incident_id": incident_id, "dataset": i.anomaly.dataset, "kind": i.kind,
        "metric": i.anomaly.metric, "field": i.anomaly.field or "",
        "window_start": i.anomaly.window_start, "severity": i.severity,
        "score": float(i.anomaly.score), "explanation": json_safe(i.anomaly.explanation or {}),
        "created_at": now,
    } for i in members])
