"""Incident flows: a human verdict (recorded, then taught to the detectors) and the root
cause of an incident."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from dqpulse.alerts import actions
from dqpulse.errors import ConflictError, NotFoundError
from dqpulse.finalize.watch import AUTOENCODER_METRIC
from dqpulse.rca import attribution
from dqpulse.rca.jobs import job_failure_suspects, onset_of, with_job_failures
from dqpulse.rca.lineage import LineageGraph
from dqpulse.rca.openlineage import FAILED_TYPES
from dqpulse.services.lineage import lineage_graph
from dqpulse.spec import DatasetSpec, NotificationSpec
from dqpulse.store import datasets as dataset_store
from dqpulse.store import detector_states
from dqpulse.store import incidents as incident_store
from dqpulse.store import metrics as metric_store
from dqpulse.store import openlineage as openlineage_store
from dqpulse.store.db import finalize_lock, wait_advisory_lock

# how long a verdict waits for a finalize pass of its dataset (normally well under 1 s)
VERDICT_LOCK_WAIT_S = 30.0


@dataclass(frozen=True)
class Taught:
    """What a verdict did to the detectors: the series whose states it changed, and those
    of them where it took back an adoption of a shift as the new normal (``(metric,
    field)`` each: they alert again until their old level is back)."""

    series: int = 0
    adoptions_undone: tuple[tuple[str, str], ...] = ()


def feedback(conn: Connection, *, incident_id: int, verdict: str, comment: str | None,
             actor: str, notifications: Sequence[NotificationSpec] = (),
             public_url: str = "", lock_wait_s: float = VERDICT_LOCK_WAIT_S,
             ) -> tuple[actions.FeedbackTarget, Taught]:
    """A human verdict on an incident: recorded (a false positive resolves it) and handed
    to the detectors of the alerted series, in the caller's transaction.

    It first waits for a finalize pass of the incident's dataset in progress (its lock,
    taken for the rest of the transaction): a pass writes the detector states it read
    before the verdict's, which it would otherwise overwrite, and locks the detector
    states before the incident that the verdict locks first (a deadlock). A pass that
    holds the lock past ``lock_wait_s`` is a :class:`ConflictError` (409, try again)."""
    found = incident_store.get_or_raise(conn, incident_id=incident_id)
    if not wait_advisory_lock(conn, finalize_lock(found["dataset"]), lock_wait_s):
        raise ConflictError(
            f"incident {incident_id}: a finalize pass of dataset {found['dataset']!r} has "
            f"held its detectors for {lock_wait_s:g}s (it is catching up on many windows); "
            "nothing was recorded, try again in a minute")
    target = actions.add_feedback(conn, incident_id=incident_id, verdict=verdict,
                                  comment=comment, actor=actor, notifications=notifications,
                                  public_url=public_url)
    return target, teach_detectors(conn, target)


def teach_detectors(conn: Connection, target: actions.FeedbackTarget) -> Taught:
    """Hand a verdict to the detectors of the series its incident alerted on (nothing
    when the dataset is no longer declared)."""
    spec = dataset_store.get(conn, name=target.dataset)
    if spec is None or not target.alerts:
        return Taught()
    return teach_series(conn, spec, alerts=target.alerts, verdict=target.verdict)


def teach_series(conn: Connection, spec: DatasetSpec, *,
                 alerts: Sequence[tuple[str, str, float]], verdict: str) -> Taught:
    """Hand a human verdict on alerts ``(metric, field, window_start)`` to the detectors of
    those series."""
    # Imported on the first verdict, as before this module existed: the detector stack
    # (River, SciPy) costs the API process ~1.3 s and ~75 MiB at start-up otherwise.
    from dqpulse.detectors.scoring import SeriesScorer, series_key

    scorer = SeriesScorer(spec)
    saved = detector_states.get_all(conn, dataset=spec.name)
    changed: dict[str, bytes] = {}
    undone: dict[str, tuple[str, str]] = {}
    for metric, field, window_start in alerts:
        key = series_key(metric, field)
        rows = metric_store.get_points(conn, dataset=spec.name, metric=metric, field=field,
                                       start=window_start, end=window_start + 1e-6, limit=1)
        value = rows[0]["value"] if rows else None
        state = changed.get(key, saved.get(key))
        changed[key], took_back = scorer.teach(metric, field, window_start, value,
                                               verdict, state)  # type: ignore[arg-type]
        if took_back:
            undone[key] = (metric, field)
    detector_states.save_all(conn, dataset=spec.name, states=changed, known=set(saved))
    return Taught(series=len(changed), adoptions_undone=tuple(undone.values()))


def root_cause(conn: Connection, *, incident_id: int, depth: int = 5) -> dict[str, Any]:
    """Upstream suspects, downstream impact, the fields that drove the incident and the
    dataset autoencoder's view of its first window."""
    incident = incident_store.get(conn, incident_id=incident_id)
    if incident is None:
        raise NotFoundError(f"incident {incident_id} does not exist")
    merged_into = (incident.get("details") or {}).get("merged_into")
    if merged_into is not None:  # merged into its upstream root: that incident's cause
        root = incident_store.get(conn, incident_id=int(merged_into))
        incident = root if root is not None else incident
    alerts = incident_store.get_alerts(conn, incident_id=int(incident["id"]), limit=10_000)
    merged = {int(i["merged_incident_id"]) for i in (incident.get("details") or {}).get(
        "impacts") or [] if i.get("merged_incident_id") is not None}
    for merged_id in sorted(merged):  # alerts that stayed on incidents merged into this one
        alerts += incident_store.get_alerts(conn, incident_id=merged_id, limit=1_000)
    graph = lineage_graph(conn)
    upstream = [r.dataset for r in graph.walk(incident["dataset"], "upstream", depth)]
    others = {name: incident_store.get_page(conn, dataset=name, limit=200)
              for name in upstream}
    owners = {spec.name: spec.owner for spec in dataset_store.get_all(conn)}
    body = attribution.root_cause(incident, alerts, graph, others, depth=depth, owners=owners)
    body["suspects"] = with_job_failures(body["suspects"],
                                         _job_failures(conn, incident, graph, depth))
    body["autoencoder"] = _autoencoder_attribution(conn, incident, alerts)
    return body


def _job_failures(conn: Connection, incident: dict[str, Any], graph: LineageGraph,
                  depth: int, slack: timedelta = timedelta(minutes=30)) -> list[dict[str, Any]]:
    """Upstream jobs that reported FAIL or ABORT near the incident's onset (all of their
    stored events, for the datasets they write)."""
    onset = onset_of(incident)
    window = slack.total_seconds()
    failed = openlineage_store.get_failed_jobs(conn, start=onset - window, end=onset + window,
                                               types=sorted(FAILED_TYPES))
    if not failed:
        return []
    runs = openlineage_store.get_runs(conn, jobs=failed)
    return job_failure_suspects(incident, graph, runs, depth=depth, slack=slack)


def _autoencoder_attribution(conn: Connection, incident: dict[str, Any],
                             alerts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Which metrics the dataset autoencoder could not reconstruct in the incident's
    first window (score and per-feature error shares); None without its point."""
    starts = [a["window_start"] for a in alerts]
    if not starts:
        return None
    first = min(starts)
    rows = metric_store.get_points(conn, dataset=incident["dataset"],
                                   metric=AUTOENCODER_METRIC, start=first,
                                   end=first + 1e-6, limit=1)
    if not rows or not rows[0]["explanation"]:
        return None
    explanation = rows[0]["explanation"]
    return {"window_start": first, "score": rows[0]["score"],
            "top_feature": explanation.get("top_feature"),
            "features": explanation.get("features", [])}
