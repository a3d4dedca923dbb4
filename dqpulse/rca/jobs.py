"""Upstream job failures as root-cause suspects.

A job that writes the incident's dataset, or any dataset upstream of it, and reported a
``FAIL`` or ``ABORT`` run event within ``slack`` of the incident's onset is a suspect: a
failed load explains a volume drop or stale data downstream better than any metric. The
job's outputs are the union over all of its stored events (a failing job often reports
its datasets only in ``START``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from dqpulse.rca.lineage import LineageGraph
from dqpulse.rca.openlineage import FAILED_TYPES


def onset_of(incident: Mapping[str, Any]) -> float:
    """Event time the incident's data went wrong: its first alerted window, else when it
    opened."""
    first = incident.get("first_window_start")
    if first is not None:
        return float(first)
    opened: datetime = incident["opened_at"]
    return opened.timestamp()


def job_failure_suspects(incident: Mapping[str, Any], graph: LineageGraph,
                         runs: Iterable[Mapping[str, Any]], *, depth: int = 5,
                         slack: timedelta = timedelta(minutes=30)) -> list[dict[str, Any]]:
    """Suspects ``{kind: "job_failure", job, run_id, event_type, ...}``, nearest first."""
    dataset = str(incident["dataset"])
    distance = {dataset: 0}
    paths: dict[str, list[str]] = {dataset: [dataset]}
    for reached in graph.walk(dataset, "upstream", depth):
        distance[reached.dataset] = reached.depth
        paths[reached.dataset] = [*reversed(reached.via), dataset]
    runs = list(runs)
    outputs: dict[str, set[str]] = {}
    for run in runs:
        outputs.setdefault(str(run["job"]), set()).update(run.get("outputs") or [])
    onset = onset_of(incident)
    window = slack.total_seconds()
    suspects: list[dict[str, Any]] = []
    for run in runs:
        if run["event_type"] not in FAILED_TYPES:
            continue
        at = float(run["event_time"])
        if not onset - window <= at <= onset + window:
            continue
        hit = sorted((distance[o], o) for o in outputs.get(str(run["job"]), ()) if o in distance)
        if not hit:
            continue
        hops, wrote = hit[0]
        suspects.append({
            "kind": "job_failure", "dataset": wrote, "job": run["job"],
            "run_id": run["run_id"], "event_type": run["event_type"],
            "depth": hops + 1, "path": [f"job:{run['job']}", *paths[wrote]],
            "incident_id": None,
            "opened_at": datetime.fromtimestamp(at, UTC).isoformat(),
            "lead_seconds": onset - at,
        })
    suspects.sort(key=lambda s: (s["depth"], -s["lead_seconds"]))
    return suspects


def with_job_failures(suspects: Sequence[dict[str, Any]],
                      failures: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Job failures first (a named cause), then the other suspects; the incident's own
    dataset as the fallback suspect is dropped when a job failure explains it."""
    if not failures:
        return list(suspects)
    return [*failures, *(s for s in suspects if s.get("depth") != 0)]
