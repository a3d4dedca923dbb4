"""Where an incident started and what it hits: upstream suspects, downstream impact, and
the fields/metrics that drove it.

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
                    "lead_seconds": (opened - other_opened).total_seconds(),
                })
    suspects.sort(key=lambda s: (-s["lead_seconds"], s["depth"]))
    if not suspects:
        suspects.append({"dataset": dataset, "depth": 0, "path": [dataset],
                         "incident_id": incident["id"], "kind": incident["kind"],
                         "opened_at": opened.isoformat(), "lead_seconds": 0.0})
    impacted = [{"dataset": r.dataset, "depth": r.depth, "path": [dataset, *r.via]}
                for r in graph.walk(dataset, "downstream", depth)]
    return {"incident_id": incident["id"], "dataset": dataset, "suspects": suspects,
            "impacted": impacted, "fields": field_attribution(alerts)}
