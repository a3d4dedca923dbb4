"""OpenLineage out: a finalized window's results as a run event with the
``dataQualityMetrics`` and ``dataQualityAssertions`` input dataset facets.

Three steps, so the finalize transaction does only a tiny one: :func:`window_stub` (which
window of which dataset: stored in the emission outbox in the finalize transaction),
:func:`report_of` (plain JSON from the window's points and the series the detectors
flagged, as stored in Postgres; built by the background sender) and :func:`run_event`
(the openlineage-python client's ``RunEvent`` of a report). The run id is derived from
the dataset and the window, so a resent event is the same run to the receiver.

The event: job ``<job_namespace>/dqpulse.<dataset>``, ``eventType`` COMPLETE,
``eventTime`` the window's end, one input dataset (``<dataset_namespace>``, the topic)
with ``dataQualityMetrics`` (rows, bytes, per column null/distinct counts, count, min,
max, sum, quantiles) and ``dataQualityAssertions`` (one per declared validity rule, the
schema contract, and one per series the detectors flagged in the window).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from dqpulse.records import MetricPoint
from dqpulse.spec import DatasetSpec, OpenLineageEmitSpec
from dqpulse.utc import iso

if TYPE_CHECKING:
    from openlineage.client.event_v2 import RunEvent

PRODUCER = "https://github.com/dqpulse/dqpulse"
_QUANTILES = {"p01": "0.01", "p05": "0.05", "p25": "0.25", "p50": "0.5", "p75": "0.75",
              "p95": "0.95", "p99": "0.99"}
_COLUMN_METRICS = {"distribution.min": "min", "distribution.max": "max",
                   "distribution.distinct_count": "distinctCount"}


def _columns(points: Sequence[MetricPoint], records: int) -> dict[str, dict[str, Any]]:
    columns: dict[str, dict[str, Any]] = {}
    means: dict[str, float] = {}
    for point in points:
        if not point.field or point.value is None:
            continue
        metric = point.metric
        if metric == "completeness.null_ratio":
            nulls = round(point.value * records)
            column = columns.setdefault(point.field, {})
            column["nullCount"], column["count"] = nulls, records - nulls
        elif metric in _COLUMN_METRICS:
            value = point.value
            key = _COLUMN_METRICS[metric]
            columns.setdefault(point.field, {})[key] = int(value) if key == "distinctCount" \
                else value
        elif metric == "distribution.mean":
            means[point.field] = point.value
        elif metric.startswith("distribution.") and metric[13:] in _QUANTILES:
            column = columns.setdefault(point.field, {})
            column.setdefault("quantiles", {})[_QUANTILES[metric[13:]]] = point.value
    for path, mean in means.items():
        column = columns.setdefault(path, {})
        if "count" in column:
            column["sum"] = mean * column["count"]
    return columns


def _assertions(contract: bool, points: Sequence[MetricPoint],
                anomalous: Iterable[tuple[str, str, float | None]],
                violations: dict[str, Any] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for point in points:
        if point.metric == "validity.violation_ratio" and point.value is not None:
            extra = point.extra
            if violations is not None:  # stored points: scoring replaced their details
                path, _, rule = point.field.rpartition(":")
                extra = {"path": path, "rule": rule,
                         "violations": violations.get(point.field)}
            out.append({"assertion": str(extra.get("rule")), "column": str(extra.get("path")),
                        "success": not extra.get("violations"),
                        "name": f"dqpulse.validity.{point.field}",
                        "actual": str(extra.get("violations")), "expected": "0"})
        elif point.metric == "schema.contract_violations" and contract:
            out.append({"assertion": "schema_contract", "success": not point.value,
                        "name": "dqpulse.schema.contract",
                        "actual": str(int(point.value or 0)), "expected": "0"})
    for metric, field, score in anomalous:
        out.append({"assertion": "anomaly", "column": field or None, "success": False,
                    "name": f"dqpulse.anomaly.{metric}",
                    "actual": None if score is None else f"{score:.4f}",
                    "description": f"the detectors flagged {metric} in this window"})
    return out


def window_stub(spec: DatasetSpec, *, window_start: float, window_end: float,
                points: Sequence[MetricPoint]) -> dict[str, Any]:
    """Which window to emit: what the finalize transaction stores (a small row), with the
    one thing the stored points may lose: each validity rule's violation count (scoring
    replaces a stored point's details with its detector's explanation)."""
    violations = {p.field: int(p.extra.get("violations") or 0)  # type: ignore[call-overload]
                  for p in points if p.metric == "validity.violation_ratio"}
    return {"dataset": spec.name, "topic": spec.topic, "window_start": window_start,
            "window_end": window_end, "contract": bool(spec.fields),
            "violations": violations}


def is_report(event: dict[str, Any]) -> bool:
    """A built report (rows queued before stubs were, or by :func:`window_report`)."""
    return "columns" in event


def report_of(stub: dict[str, Any], points: Sequence[MetricPoint],
              anomalous: Iterable[tuple[str, str, float | None]] = ()) -> dict[str, Any]:
    """What the event of one finalized window says, as JSON (no client objects): from
    its stub, its metric points and the (metric, field, score) the detectors flagged."""
    by_name = {p.metric: p.value for p in points if not p.field}
    records = int(by_name.get("volume.records") or 0)
    size = by_name.get("volume.bytes")
    return {"dataset": stub["dataset"], "topic": stub["topic"],
            "window_start": stub["window_start"], "window_end": stub["window_end"],
            "row_count": records, "bytes": None if size is None else int(size),
            "columns": _columns(points, records),
            "assertions": _assertions(bool(stub.get("contract", True)), points, anomalous,
                                      stub.get("violations"))}


def window_report(spec: DatasetSpec, *, window_start: float, window_end: float,
                  points: Sequence[MetricPoint],
                  anomalous: Iterable[tuple[str, str, float | None]] = ()) -> dict[str, Any]:
    """The report of a window whose points are at hand."""
    stub = window_stub(spec, window_start=window_start, window_end=window_end, points=points)
    return report_of({**stub, "violations": None}, points, anomalous)


def run_id(dataset: str, window_start: float) -> str:
    """The same UUID for the same window on every attempt.

    >>> run_id("orders", 60.0) == run_id("orders", 60.0) != run_id("orders", 120.0)
    True
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dqpulse:{dataset}:{window_start!r}"))


def run_event(report: dict[str, Any], emit: OpenLineageEmitSpec) -> RunEvent:
    """The client's ``RunEvent`` for a stored window report (its validators check it)."""
    # imported here: openlineage-python is an optional dependency (the ``lineage`` extra),
    # needed only where events are sent
    from openlineage.client.event_v2 import InputDataset, Job, Run, RunEvent, RunState
    from openlineage.client.generated.data_quality_assertions_dataset import (
        Assertion,
        DataQualityAssertionsDatasetFacet,
    )
    from openlineage.client.generated.data_quality_metrics_input_dataset import (
        ColumnMetrics,
        DataQualityMetricsInputDatasetFacet,
    )

    columns = {path: ColumnMetrics(**metrics) for path, metrics in report["columns"].items()}
    metrics = DataQualityMetricsInputDatasetFacet(
        columnMetrics=columns, rowCount=report["row_count"], bytes=report["bytes"])
    assertions = DataQualityAssertionsDatasetFacet(
        assertions=[Assertion(**item) for item in report["assertions"]])
    dataset = InputDataset(namespace=emit.dataset_namespace, name=report["topic"],
                           inputFacets={"dataQualityMetrics": metrics,
                                        "dataQualityAssertions": assertions})
    return RunEvent(eventType=RunState.COMPLETE, eventTime=iso(report["window_end"]),
                    run=Run(runId=run_id(report["dataset"], report["window_start"])),
                    job=Job(namespace=emit.job_namespace, name=f"dqpulse.{report['dataset']}"),
                    producer=PRODUCER, inputs=[dataset])
