"""Where an incident started and what it hits: upstream suspects, downstream impact, and
the fields/metrics that drove it.

The root and its ranked alternatives: every dataset with alerts in the incident (its own
and its impacts, ``dqpulse.alerts.impacts``) and every upstream suspect is a candidate;
candidates rank by how many of the other candidates they reach downstream (the one that
explains the others' alerts comes first), then by onset (first alerted window), then by
score. Each carries its evidence: onset, lineage distance from the incident's dataset
(upstream positive, downstream negative), score, owner and its segment attribution
(``dqpulse.rca.segments``: the dimension value that carries its change).

Suspects are upstream datasets (by lineage) with incidents that were active when this one
opened, ranked by how early their incident opened and how close they are; if none, the
incident's own dataset is the suspect. Field attribution ranks the incident's alerts by
score per (metric, field): the fields that broke first and hardest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from dqpulse.rca.lineage import LineageGraph


def field_attribution(alerts: Sequence[Mapping[str, Any]], top: int = 10) -> list[dict[str, Any]]:
    by_series: dict[tuple[str, str], dict[str, Any]] = {}
    for alert in alerts:
        key = (str(alert["metric"]), str(alert.get("field") or ""))
        entry = by_series.setdefault(key, {"metric": key[0], "field": key[1] or None,
                                           "alerts": 0, "max_score": 0.0,
                                           "first_window": alert["window_start"]})
        entry["alerts"] += 1
        entry["max_score"] = max(entry["max_score"], float(alert["score"]))
        entry["first_window"] = min(entry["first_window"], alert["window_start"])
    ranked = sorted(by_series.values(),
                    key=lambda e: (e["first_window"], -e["max_score"], -e["alerts"]))
    total = sum(e["max_score"] for e in ranked) or 1.0
    for entry in ranked:
        entry["share"] = round(entry["max_score"] / total, 4)
    return ranked[:top]


def root_cause(
    incident: Mapping[str, Any],
    alerts: Sequence[Mapping[str, Any]],
    graph: LineageGraph,
    incidents_by_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    depth: int = 5,
    slack: timedelta = timedelta(minutes=30),
    owners: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """``{suspects, impacted, fields}`` for one incident."""
    dataset = str(incident["dataset"])
    opened: datetime = incident["opened_at"]
    suspects: list[dict[str, Any]] = []
    for reached in graph.walk(dataset, "upstream", depth):
        for other in incidents_by_dataset.get(reached.dataset, []):
            other_opened: datetime = other["opened_at"]
            resolved = other.get("resolved_at")
            active_then = other_opened <= opened + slack and (
                resolved is None or resolved >= opened - slack)
            if active_then:
                suspects.append({
                    "dataset": reached.dataset, "depth": reached.depth,
                    "path": [*reversed(reached.via), dataset],
                    "incident_id": other["id"], "kind": other["kind"],
                    "opened_at": other_opened.isoformat(),
                    "first_window_start": other.get("first_window_start"),
                    "lead_seconds": (opened - other_opened).total_seconds(),
                })
    suspects.sort(key=lambda s: (-s["lead_seconds"], s["depth"]))
    if not suspects:
        suspects.append({"dataset": dataset, "depth": 0, "path": [dataset],
                         "incident_id": incident["id"], "kind": incident["kind"],
                         "opened_at": opened.isoformat(), "lead_seconds": 0.0})
    impacted = [{"dataset": r.dataset, "depth": r.depth, "path": [dataset, *r.via]}
                for r in graph.walk(dataset, "downstream", depth)]
    alternatives = rank_candidates(incident, alerts, graph, suspects, owners or {},
                                   depth=depth)
    impacts = [{**i, "owner": i.get("owner") or (owners or {}).get(i["dataset"])}
               for i in (incident.get("details") or {}).get("impacts") or []]
    return {"incident_id": incident["id"], "dataset": dataset, "suspects": suspects,
            "impacted": impacted, "fields": field_attribution(alerts),
            "root": alternatives[0] if alternatives else None,
            "alternatives": alternatives, "impacts": impacts,
            "segments": segment_attribution(alerts)}


def segment_attribution(alerts: Sequence[Mapping[str, Any]],
                        top: int = 10) -> list[dict[str, Any]]:
    """The segment attributions of the incident's alerts: per (dataset, metric, field)
    the first window's, most concentrated first."""
    first: dict[tuple[str, str, str], dict[str, Any]] = {}
    for alert in sorted(alerts, key=lambda a: (a["window_start"], -float(a["score"]))):
        segment = (alert.get("explanation") or {}).get("segment")
        key = (str(alert.get("dataset") or ""), str(alert["metric"]),
               str(alert.get("field") or ""))
        if segment and key not in first:
            first[key] = {"dataset": key[0], "window_start": alert["window_start"],
                          **{k: segment.get(k) for k in ("metric", "field", "measure",
                                                         "dimension", "value", "share",
                                                         "text")}}
    return sorted(first.values(), key=lambda s: -float(s["share"] or 0.0))[:top]


def _candidate(name: str, rows: Sequence[Mapping[str, Any]], distance: int,
               owner: str | None, incident_id: Any) -> dict[str, Any]:
    first = min(rows, key=lambda a: (a["window_start"], -float(a["score"])))
    best = max(rows, key=lambda a: float(a["score"]))
    segment = ((first.get("explanation") or {}).get("segment")
               or (best.get("explanation") or {}).get("segment"))
    return {"dataset": name, "incident_id": incident_id, "owner": owner,
            "onset": float(first["window_start"]), "lineage_distance": distance,
            "score": float(best["score"]), "metric": first["metric"],
            "field": first.get("field") or None,
            "segment": None if not segment else {k: segment.get(k) for k in (
                "dimension", "value", "share", "text")}}


def rank_candidates(incident: Mapping[str, Any], alerts: Sequence[Mapping[str, Any]],
                    graph: LineageGraph, suspects: Sequence[Mapping[str, Any]],
                    owners: Mapping[str, str | None], *, depth: int = 5
                    ) -> list[dict[str, Any]]:
    """The candidate roots of the incident, best first, with their evidence."""
    dataset = str(incident["dataset"])
    up = {r.dataset: r.depth for r in graph.walk(dataset, "upstream", depth)}
    down = {r.dataset: -r.depth for r in graph.walk(dataset, "downstream", depth)}
    by_dataset: dict[str, list[Mapping[str, Any]]] = {}
    for alert in alerts:
        by_dataset.setdefault(str(alert.get("dataset") or dataset), []).append(alert)
    candidates = {name: _candidate(name, rows, 0 if name == dataset else
                                   up.get(name, down.get(name, 0)), owners.get(name),
                                   incident["id"])
                  for name, rows in by_dataset.items()}
    for suspect in suspects:
        name = str(suspect["dataset"])
        if name not in candidates and name != dataset:
            candidates[name] = {
                "dataset": name, "incident_id": suspect["incident_id"],
                "owner": owners.get(name), "onset": suspect.get("first_window_start"),
                "lineage_distance": int(suspect["depth"]), "score": None,
                "metric": None, "field": None, "segment": None}
    names = set(candidates)
    for name, entry in candidates.items():
        reach = {r.dataset for r in graph.walk(name, "downstream", depth)}
        entry["explains"] = sorted((reach & names) - {name})
    ranked = sorted(candidates.values(), key=lambda c: (
        -len(c["explains"]), float("inf") if c["onset"] is None else c["onset"],
        -(c["score"] or 0.0), c["dataset"]))
    for rank, entry in enumerate(ranked, start=1):
        entry["rank"] = rank
    return ranked
