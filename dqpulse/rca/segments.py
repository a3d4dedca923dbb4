"""Which slice of the data carries an alert: dimension values ranked Adtributor-style.

Adtributor (Bhagwan et al., NSDI 2014) ranks the values of each dimension by
*explanatory power* (the share of the total change a value accounts for) and *surprise*
(how far its share of the measure moved from its expected share, a Jensen-Shannon term),
and prefers the dimension whose few values explain most of the change most surprisingly.

The measure follows the alerted metric (``measure_for``): a null count for completeness
and not-null rules, rule violations for other validity rules, a mean (sum over values)
for numeric distribution metrics, the record count otherwise. For a ratio measure
``A / B`` (nulls per record, sum per value) the expected numerator of a value is its
current ``B`` times its own reference ratio (the dataset's where the value is new), so a
value's excess is what it adds beyond its usual behaviour and the excesses of all values
(``(other)`` included) sum to the whole change; for counts the expectation is the
value's reference count. A value's reference ratio is shrunk towards the dataset's by
``PRIOR`` records (``(A_ref + PRIOR * overall) / (B_ref + PRIOR)``): with few records a
value's own ratio is mostly noise (a value with no null in 20 reference records is not
"never null"), and that noise would otherwise look like excess spread over many values.

Dimensions are ranked as Adtributor does with its succinctness principle made explicit:
those whose named values (each explaining at least ``EEP``) together explain ``EP`` of
the change first, then the fewest named values (a change carried by one producer beats
the same change read as five key prefixes, each a bit above its share), then the summed
surprise of the named values. Reference = the per-window average of the previous windows'
segment states (``dqpulse.metrics.window_state.SEGMENT_WINDOWS``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dqpulse.metrics.segments import OTHER_VALUE, SegmentState

EEP = 0.1   # a value explains at least this share of the change to be named (Adtributor T_EEP)
EP = 0.67   # a dimension's named values together explain at least this share (T_EP)
PRIOR = 20.0  # records of the dataset-wide reference rate mixed into a value's own rate
_TOP_VALUES = 5


@dataclass(frozen=True, slots=True)
class Measure:
    """What is compared: ``numerator / denominator`` columns (denominator None: a count)."""

    numerator: list[str]
    denominator: str | None
    label: str  # e.g. "null increase in customer.segment" once the direction is known
    noun: str


def measure_for(metric: str, field: str, state: SegmentState) -> Measure:
    """The segment measure that follows ``metric`` on ``field``."""
    path, _, rule = field.rpartition(":") if metric.startswith("validity.") else (field, "", "")
    columns = set(state.columns)
    if metric.startswith("validity.") and rule not in ("not_null", "type") \
            and f"viol:{path}" in columns:
        return Measure([f"viol:{path}"], "count", path, "validity violations")
    if metric.startswith(("completeness.", "validity.")) and f"null:{path}" in columns:
        return Measure([f"null:{path}"], "count", path, "null")
    if metric.startswith("distribution.") and f"sum:{path}" in columns:
        return Measure([f"sum:{path}"], f"num:{path}", path, "mean")
    if metric == "quality.completeness":
        nulls = [c for c in state.columns if c.startswith("null:")]
        if nulls:
            return Measure(nulls, "count", "all declared fields", "null")
    if metric == "quality.validity":
        broken = [c for c in state.columns if c.startswith("viol:")]
        if broken:
            return Measure(broken, "count", "all declared fields", "validity violations")
    return Measure(["count"], None, "records", "volume")


def _rows(state: SegmentState, dimension: str, measure: Measure) -> dict[str, tuple[float, float]]:
    """value -> (numerator, denominator) in ``state`` for ``dimension``."""
    table = state.tables.get(dimension)
    if table is None:
        return {}
    cols = [state.columns.index(c) for c in measure.numerator]
    den = None if measure.denominator is None else state.columns.index(measure.denominator)
    return {value: (float(row[cols].sum()), 1.0 if den is None else float(row[den]))
            for value, row in table.rows().items()}


def _js_term(p: float, q: float) -> float:
    """Adtributor's surprise of one value: expected share ``p`` -> observed share ``q``."""
    total = 0.0
    m = (p + q) / 2
    for x in (p, q):
        if x > 0 and m > 0:
            total += 0.5 * x * math.log(x / m)
    return total


def _dimension(dimension: str, now: dict[str, tuple[float, float]],
               ref: dict[str, tuple[float, float]], measure: Measure) -> dict[str, Any] | None:
    ratio_measure = measure.denominator is not None
    ref_a = sum(a for a, _ in ref.values())
    ref_b = sum(b for _, b in ref.values())
    overall = ref_a / ref_b if ratio_measure and ref_b else 0.0
    actual: dict[str, float] = {}
    expected: dict[str, float] = {}
    for value, (a, b) in now.items():
        if ratio_measure:
            ra, rb = ref.get(value, (0.0, 0.0))
            rate = (ra + PRIOR * overall) / (rb + PRIOR)
            expected[value] = b * rate
        else:
            expected[value] = ref.get(value, (0.0, 0.0))[0]
        actual[value] = a
    if not ratio_measure:  # values that disappeared are part of a volume change
        for value, (a, _) in ref.items():
            if value not in now:
                expected[value], actual[value] = a, 0.0
    change = sum(actual.values()) - sum(expected.values())
    if len(actual) < 2 or abs(change) < 1e-9:
        return None
    sum_a, sum_f = sum(actual.values()) or 1.0, sum(expected.values()) or 1.0
    values: list[dict[str, Any]] = []
    for value in actual:
        values.append({
            "value": value, "share": (actual[value] - expected[value]) / change,
            "surprise": _js_term(expected[value] / sum_f, actual[value] / sum_a),
            "current": _per(now.get(value), ratio_measure),
            "reference": _per(ref.get(value), ratio_measure),
            "records": now.get(value, (0.0, 0.0))[1] if ratio_measure else actual[value],
        })
    values.sort(key=lambda v: (-v["share"], v["value"]))
    named, explained, surprise = [], 0.0, 0.0
    for item in sorted(values, key=lambda v: (-v["surprise"], -v["share"])):
        if item["share"] < EEP:
            continue
        named.append(item)
        explained += item["share"]
        surprise += item["surprise"]
        if explained >= EP:
            break
    named.sort(key=lambda v: (-v["share"], v["value"]))
    return {"dimension": dimension, "explains": explained, "surprise": surprise,
            "explanatory": explained >= EP, "change": change,
            "named": [v["value"] for v in named], "values": values[:_TOP_VALUES]}


def _per(pair: tuple[float, float] | None, ratio_measure: bool) -> float | None:
    if pair is None:
        return None
    if not ratio_measure:
        return pair[0]
    return pair[0] / pair[1] if pair[1] else None


def attribute(metric: str, field: str, current: SegmentState | None,
              reference: SegmentState | None) -> dict[str, Any] | None:
    """The dimension values that carry a change of ``metric`` on ``field`` from the
    reference window(s) to the current one, best first; None without a reference or a
    change."""
    if current is None or reference is None:
        return None
    measure = measure_for(metric, field, current)
    ranked = []
    for dimension in current.tables:
        result = _dimension(dimension, _rows(current, dimension, measure),
                            _rows(reference, dimension, measure), measure)
        if result is not None:
            ranked.append(result)
    if not ranked:
        return None
    ranked.sort(key=lambda d: (not d["explanatory"], len(d["named"]),
                               -round(d["surprise"], 12),
                               -d["explains"], d["dimension"]))
    best = ranked[0]
    top_value = next((v for v in best["values"] if v["value"] in best["named"]),
                     best["values"][0])
    direction = "increase" if best["change"] > 0 else "decrease"
    return {
        "metric": metric, "field": field, "measure": measure.noun,
        "dimension": best["dimension"], "value": top_value["value"],
        "share": round(float(np.clip(top_value["share"], -9.99, 9.99)), 4),
        "text": _sentence(measure, direction, best["dimension"], top_value),
        "dimensions": [_public(d) for d in ranked],
    }


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {"dimension": entry["dimension"], "explains": round(entry["explains"], 4),
            "surprise": round(entry["surprise"], 6), "explanatory": entry["explanatory"],
            "values": [{k: (round(v, 6) if isinstance(v, float) else v)
                        for k, v in item.items()} for item in entry["values"]]}


def _sentence(measure: Measure, direction: str, dimension: str, top: dict[str, Any]) -> str:
    share = max(0.0, min(1.0, float(top["share"])))
    where = f"{dimension}={top['value']}" if top["value"] != OTHER_VALUE \
        else f"values of {dimension} outside its heavy hitters"
    if measure.noun == "volume":
        what = f"volume {direction}"
    elif measure.noun == "mean":
        what = f"{direction} of the mean of {measure.label}"
    else:
        what = f"{measure.noun} {direction} in {measure.label}"
    return f"{share:.0%} of the {what} comes from {where}"
