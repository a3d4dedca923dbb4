"""What an anomaly is as an incident: its kind, root group, dedup key, severity, summary.

Pure functions over :class:`Anomaly` and the dataset's declarations; the lifecycle in
:mod:`dqpulse.alerts.incidents` applies them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from dqpulse.records import SHARE_OF
from dqpulse.spec import DatasetSpec

KINDS = ("freshness", "volume", "completeness", "distribution", "schema", "validity",
         "uniqueness", "ml_data")
SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}
_QUALITY_KIND = {"completeness": "completeness", "timeliness": "freshness",
                 "freshness": "freshness", "validity": "validity", "consistency": "schema",
                 "uniqueness": "uniqueness", "volume": "volume",
                 "distribution": "distribution", "schema": "schema", "ml_data": "ml_data"}
_FAMILY_ALIAS = {"ml": "ml_data", "rules": "validity", "rule": "validity",
                 "contract": "schema", "sla": "freshness"}
_ROOT_GROUP = {"freshness": "flow", "volume": "flow"}

def kind_of_metric(metric: str) -> str:
    """The incident kind of a metric name ``<family>.<name>``.

    ``quality.<dimension>`` maps to the dimension's kind (timeliness -> freshness,
    consistency -> schema); an unknown family is a rule violation, ``validity``.

    >>> kind_of_metric("volume.records"), kind_of_metric("completeness.null_ratio")
    ('volume', 'completeness')
    >>> kind_of_metric("quality.timeliness"), kind_of_metric("something.else")
    ('freshness', 'validity')
    """
    family, _, name = metric.partition(".")
    if family == "quality":
        return _QUALITY_KIND.get(name, "validity")
    if family in KINDS:
        return family
    return _FAMILY_ALIAS.get(family, "validity")


def group_of(kind: str) -> str:
    """The root group of a kind: alerts of one group on one dataset share an incident."""
    return _ROOT_GROUP.get(kind, kind)


def dedup_key(dataset: str, group: str) -> str:
    return f"dqpulse:{dataset}:{group}"


def severity_from_score(score: float) -> str:
    """Severity when nothing configures one: >= 0.98 critical, >= 0.9 warning, else info.

    >>> severity_from_score(0.99), severity_from_score(0.95), severity_from_score(0.5)
    ('critical', 'warning', 'info')
    """
    if score >= 0.98:
        return "critical"
    if score >= 0.9:
        return "warning"
    return "info"


@dataclass(frozen=True)
class Anomaly:
    """One anomalous metric point, as detectors and rules report it."""

    dataset: str
    kind: str
    metric: str
    field: str
    window_start: float
    window_end: float
    score: float
    severity: str | None = None
    explanation: dict[str, Any] = dc_field(default_factory=dict)


def severity_of(dataset: DatasetSpec, anomaly: Anomaly, kind: str | None = None) -> str:
    """The severity of ``anomaly`` on ``dataset`` (see the module docstring for the order)."""
    kind = kind or kind_of(anomaly)
    for key in (anomaly.field, anomaly.metric, kind):
        if key and key in dataset.severity:
            return dataset.severity[key]
    field_spec = dataset.fields.get(anomaly.field) if anomaly.field else None
    if field_spec is not None and field_spec.severity is not None:
        return field_spec.severity
    if anomaly.severity in SEVERITY_RANK:
        return str(anomaly.severity)
    return severity_from_score(anomaly.score)


def kind_of(anomaly: Anomaly) -> str:
    """The anomaly's incident kind: its own when it is one, else its metric's."""
    return anomaly.kind if anomaly.kind in KINDS else kind_of_metric(anomaly.metric)


def max_severity(severities: Iterable[str]) -> str:
    return max(severities, key=lambda s: SEVERITY_RANK.get(s, 0))


def _number(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if float(value).is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.4g}"
    return str(value)


def _named(items: list[str], one: str, many: str, limit: int = 5) -> str:
    shown = ", ".join(items[:limit]) + (f" and {len(items) - limit} more"
                                         if len(items) > limit else "")
    return f"{one if len(items) == 1 else many} {shown}"


def describe_schema_change(metric: str, change: Any) -> str | None:
    """The fields and types of a schema change, from the point's ``schema_change``.

    >>> describe_schema_change("schema.new_fields", {"fields": {"promo_code": "string|null"}})
    'new field promo_code: string|null'
    >>> describe_schema_change("schema.type_changes",
    ...                        {"changes": {"amount": {"from": ["number"], "to": ["string"]}}})
    'type of amount changed: number -> string'
    """
    if not isinstance(change, dict):
        return None
    fields = change.get("fields") or {}
    if metric == "schema.new_fields" and fields:
        return _named([f"{p}: {t}" for p, t in sorted(fields.items())], "new field",
                      "new fields")
    if metric == "schema.removed_fields" and fields:
        return _named([f"{p} (was {t})" for p, t in sorted(fields.items())], "removed field",
                      "removed fields")
    changes = change.get("changes") or {}
    if metric == "schema.type_changes" and changes:
        return _named([f"{p} changed: {'|'.join(c['from'])} -> {'|'.join(c['to'])}"
                       for p, c in sorted(changes.items())], "type of", "types of")
    return None


def summarize(dataset: str, anomaly: Anomaly) -> str:
    """One sentence: what broke, observed vs expected.

    >>> a = Anomaly("orders", "volume", "volume.records", "", 0, 60, 0.99, None,
    ...             {"observed": 12, "expected_low": 950, "expected_high": 1050,
    ...              "direction": "down"})
    >>> summarize("orders", a)
    'orders: volume.records dropped to 12 (expected 950 .. 1,050)'

    A share of a field's values says how many values it is of:

    >>> a = Anomaly("orders", "distribution", "distribution.unseen_share", "country", 0, 60,
    ...             0.95, None, {"observed": 0.5, "expected_low": None, "expected_high": 0.2,
    ...                          "direction": "up", "values": 40})
    >>> summarize("orders", a)
    'orders: distribution.unseen_share of country rose to 0.5 of 40 values (expected <= 0.2)'

    and a statistic of a field's values how many it is over:

    >>> a = Anomaly("orders", "distribution", "distribution.mean", "amount", 0, 60, 0.95,
    ...             None, {"observed": 910.5, "expected_low": None, "expected_high": 700,
    ...                    "direction": "up", "values": 1})
    >>> summarize("orders", a)
    'orders: distribution.mean of amount rose to 910.5 over 1 value (expected <= 700)'
    """
    what = anomaly.metric + (f" of {anomaly.field}" if anomaly.field else "")
    exp = anomaly.explanation or {}
    change = describe_schema_change(anomaly.metric, exp.get("schema_change"))
    if change:
        return f"{dataset}: {change}"
    observed = exp.get("observed")
    if observed is None:
        return f"{dataset}: anomalous {what} (score {anomaly.score:.3f})"
    verb = {"down": "dropped to", "up": "rose to"}.get(str(exp.get("direction")), "is")
    low, high = _snapped(exp, "expected_low"), _snapped(exp, "expected_high")
    parts = []
    if low is None and high is not None:
        parts.append(f"expected <= {_number(high)}")
    elif high is None and low is not None:
        parts.append(f"expected >= {_number(low)}")
    elif low is not None:
        parts.append(f"expected {_number(low)} .. {_number(high)}")
    parts += grounds_text(exp)
    detail = f" ({'; '.join(parts)})" if parts else ""
    values = exp.get(SHARE_OF)  # a share of a field's values, or a statistic's: how many
    of = ""
    if isinstance(values, int | float):
        share = anomaly.metric.endswith(("_share", "_ratio"))
        of = f" {'of' if share else 'over'} {_number(values)} value{'' if values == 1 else 's'}"
    return f"{dataset}: {what} {verb} {_number(observed)}{of}{detail}"


def _snapped(explanation: Mapping[str, Any], key: str) -> Any:
    """A band edge, or the expected value when the edge is within a billionth of the
    values' size from it (a scale that collapsed on a constant series reads "<= 0", not
    "<= 2.86e-12").

    >>> _snapped({"expected": 0.0, "observed": 35.6, "expected_high": 2.86e-12}, "expected_high")
    0.0
    >>> _snapped({"expected": 0.0, "observed": 35.6, "expected_high": 0.5}, "expected_high")
    0.5
    """
    edge = explanation.get(key)
    values = (edge, explanation.get("expected"), explanation.get("observed"))
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        return edge
    edge, expected, observed = (float(v) for v in values)  # type: ignore[arg-type]
    size = max(abs(expected), abs(observed))
    return expected if abs(edge - expected) <= 1e-9 * size else edge


def grounds_text(explanation: Mapping[str, Any]) -> list[str]:
    """Phrases for what decided an alert beyond the window's own deviation (the
    explanation's ``evidence``), for the incident summary.

    >>> grounds_text({"evidence": ["persistence", "beyond_range"], "range_windows": 4032})
    ['held over several windows', 'beyond its range of the last 4,032 windows']
    >>> grounds_text({"evidence": ["point"]})
    []
    """
    evidence = explanation.get("evidence")
    if not isinstance(evidence, list):
        return []
    phrases = []
    for ground in evidence:
        if ground == "persistence":
            phrases.append("held over several windows")
        elif ground == "beyond_range":
            windows = explanation.get("range_windows")
            phrases.append(f"beyond its range of the last {windows:,} windows"
                           if isinstance(windows, int) else "beyond its recent range")
        elif ground == "held":
            phrases.append("kept on while it hovers about the threshold")
        elif ground == "follows_lone":
            phrases.append("raised two windows in a row")
        elif ground == "low_run" and isinstance(explanation.get("run_windows"), int):
            phrases.append(f"low for {explanation['run_windows']} windows in a row")
    return phrases


#: kinds that a contract change breaks together with the schema
CONTRACT_KINDS = frozenset({"completeness", "validity"})
#: metrics that move with the record count: a window's alert on one joins the flow group
#: when the window's record count alerted in the same direction about as far or further
#: (:func:`follows_flow`)
FLOW_FOLLOWERS = frozenset({"distribution.distinct_count"})
#: how much further than the record count a follower may move (a factor on observed /
#: expected): a field unique per record (emails) moves with the records, give or take noise
FLOW_TOLERANCE = 1.25


def _log_ratio(explanation: Mapping[str, Any]) -> float | None:
    """``log(observed / expected)`` of an explanation; ``-inf`` for an observed 0."""
    observed, expected = explanation.get("observed"), explanation.get("expected")
    if not (isinstance(observed, int | float) and isinstance(expected, int | float)
            and math.isfinite(observed) and math.isfinite(expected)
            and expected > 0.0 and observed >= 0.0):
        return None
    return -math.inf if observed == 0.0 else math.log(observed / expected)


def follows_flow(anomaly: Anomaly, records: Anomaly | None) -> bool:
    """Whether ``anomaly`` (on a metric of :data:`FLOW_FOLLOWERS`) is the record count's
    change seen through a field: the window's ``volume.records`` alerted in the same
    direction and moved about as far or less (relative to what each expected, within
    :data:`FLOW_TOLERANCE`). A field's distinct count follows the records that carry it
    (at most in proportion): twice the traffic brings more distinct emails, a silent topic
    none, and that is one flow incident, not a distribution incident beside it. A
    distinct count that moved further than the records did (a category explosion during
    a spike) stays its own incident.

    >>> spike = Anomaly("o", "volume", "volume.records", "", 0, 60, 0.99, None,
    ...                 {"observed": 2000, "expected": 800, "direction": "up"})
    >>> def distinct(observed):
    ...     return Anomaly("o", "distribution", "distribution.distinct_count", "email", 0, 60,
    ...                    0.95, None, {"observed": observed, "expected": 700,
    ...                                 "direction": "up"})
    >>> follows_flow(distinct(1500), spike), follows_flow(distinct(1800), spike)
    (True, True)
    >>> follows_flow(distinct(9000), spike)
    False
    """
    if records is None or anomaly.metric not in FLOW_FOLLOWERS:
        return False
    direction = anomaly.explanation.get("direction")
    if direction not in ("up", "down") or records.explanation.get("direction") != direction:
        return False
    moved, flow = _log_ratio(anomaly.explanation), _log_ratio(records.explanation)
    if moved is None or flow is None:
        return False
    slack = math.log(FLOW_TOLERANCE)
    return moved <= flow + slack if direction == "up" else moved >= flow - slack


@dataclass
class ClassifiedAnomaly:
    """An anomaly with the incident kind and severity it counts as on its dataset."""

    anomaly: Anomaly
    kind: str
    severity: str


def group_anomalies(dataset: DatasetSpec, anomalies: Iterable[Anomaly],
                    active_keys: set[str]) -> dict[str, list[ClassifiedAnomaly]]:
    """The window's anomalies by root group (see :mod:`dqpulse.alerts.incidents`).

    Completeness and validity alerts join the schema group while a contract change is
    under way (an active schema incident, or a schema alert in this window), and a field's
    distinct count joins the flow group when it only follows the window's record count
    (:func:`follows_flow`), unless their own group already has an active incident."""
    items = []
    for anomaly in anomalies:
        kind = kind_of(anomaly)
        items.append(ClassifiedAnomaly(anomaly, kind, severity_of(dataset, anomaly, kind)))
    schema_key = dedup_key(dataset.name, "schema")
    contract_change = schema_key in active_keys or any(i.kind == "schema" for i in items)
    records = next((i.anomaly for i in items if i.anomaly.metric == "volume.records"
                    and not i.anomaly.field), None)
    groups: dict[str, list[ClassifiedAnomaly]] = {}
    for item in items:
        group = group_of(item.kind)
        own_active = dedup_key(dataset.name, group) in active_keys
        if item.kind in CONTRACT_KINDS and contract_change and not own_active:
            group = "schema"
        elif not own_active and follows_flow(item.anomaly, records):
            group = "flow"
        groups.setdefault(group, []).append(item)
    return groups
