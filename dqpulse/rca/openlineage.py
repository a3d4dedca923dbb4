"""OpenLineage run events in: lineage nodes and edges, and the run's state.

Every event type is read (``START``, ``RUNNING``, ``COMPLETE``, ``ABORT``, ``FAIL``,
``OTHER``; an event without one counts as ``OTHER``). A dataset becomes a lineage node
named by :func:`node_name`: a Kafka topic of a declared dataset is that dataset, a bare
name of a declared dataset is that dataset, and anything else keeps its namespace
(``postgres://db:5432/public.orders``), so two tables of one name in two systems stay two
nodes. A job is a node too (``job:<namespace>/<name>``, see :data:`JOB_PREFIX`); its runs
are stored so that a ``FAIL`` or ``ABORT`` of an upstream job near an incident's onset is a
root-cause suspect (:mod:`dqpulse.rca.jobs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dqpulse.errors import ValidationError
from dqpulse.rca.lineage import Edge

EVENT_TYPES = ("START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER")
FAILED_TYPES = frozenset({"FAIL", "ABORT"})
JOB_PREFIX = "job:"


@dataclass(frozen=True, slots=True)
class RunReport:
    """One received run event: which job, which run, what state, when, on which nodes."""

    job: str
    run_id: str
    event_type: str
    event_time: float
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    edges: tuple[Edge, ...]


def node_name(namespace: str, name: str, topics: Mapping[str, str],
              datasets: frozenset[str] | set[str] = frozenset()) -> str:
    """The lineage node of an OpenLineage dataset.

    >>> node_name("kafka://broker:9092", "orders-raw", {"orders-raw": "orders_raw"})
    'orders_raw'
    >>> node_name("postgres://db:5432", "public.orders", {}, {"orders"})
    'postgres://db:5432/public.orders'
    >>> node_name("", "orders", {}, {"orders"})
    'orders'
    """
    kafka = namespace.startswith("kafka://") or not namespace
    if kafka and name in topics:
        return topics[name]
    if not namespace and name in datasets:
        return name
    return f"{namespace.rstrip('/')}/{name}" if namespace else name


def job_node(namespace: str, name: str) -> str:
    return f"{JOB_PREFIX}{namespace}/{name}" if namespace else f"{JOB_PREFIX}{name}"


def _event_time(value: Any, received_at: float) -> float:
    if value is None or value == "":
        return received_at
    if not isinstance(value, str):
        raise ValidationError("OpenLineage event: 'eventTime' must be an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            f"OpenLineage event: 'eventTime' is not ISO-8601: {value[:60]!r}") from None
    if moment.tzinfo is None:
        raise ValidationError("OpenLineage event: 'eventTime' needs a time zone offset")
    return moment.timestamp()


def _nodes(event: Mapping[str, Any], key: str, topics: Mapping[str, str],
           datasets: frozenset[str] | set[str]) -> list[str]:
    items = event.get(key) or []
    if not isinstance(items, list):
        raise ValidationError(f"OpenLineage event: '{key}' must be a list")
    out: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ValidationError(f"OpenLineage event: '{key}[{index}].name' is required")
        namespace = item.get("namespace") or ""
        if not isinstance(namespace, str):
            raise ValidationError(f"OpenLineage event: '{key}[{index}].namespace' must be "
                                  "a string")
        node = node_name(namespace, item["name"], topics, datasets)
        if node not in out:
            out.append(node)
    return out


def read_run_event(event: Mapping[str, Any], topics: Mapping[str, str], *,
                   datasets: frozenset[str] | set[str] = frozenset(),
                   received_at: float) -> RunReport:
    """The run, nodes and edges of one OpenLineage run event; ValidationError names the
    bad field."""
    if not isinstance(event, Mapping):
        raise ValidationError("OpenLineage event: expected a JSON object")
    job = event.get("job")
    if not isinstance(job, Mapping) or not isinstance(job.get("name"), str):
        raise ValidationError("OpenLineage event: 'job.name' is required and must be a string")
    job_name = f"{job.get('namespace') or ''}/{job['name']}".lstrip("/")
    event_type = event.get("eventType") or "OTHER"
    if event_type not in EVENT_TYPES:
        raise ValidationError(f"OpenLineage event: 'eventType' must be one of "
                              f"{', '.join(EVENT_TYPES)}, got {str(event_type)[:40]!r}")
    run = event.get("run") or {}
    run_id = run.get("runId", "") if isinstance(run, Mapping) else None
    if not isinstance(run_id, str):
        raise ValidationError("OpenLineage event: 'run.runId' must be a string")
    inputs = _nodes(event, "inputs", topics, datasets)
    outputs = _nodes(event, "outputs", topics, datasets)
    edges = tuple(Edge(i, o, job_name, "openlineage") for i in inputs for o in outputs if i != o)
    return RunReport(job=job_name, run_id=run_id, event_type=str(event_type),
                     event_time=_event_time(event.get("eventTime"), received_at),
                     inputs=tuple(inputs), outputs=tuple(outputs), edges=edges)
