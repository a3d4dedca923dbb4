"""An incident's summary: what opened it first, the later alerts listed below it.

The first line is the opening alert's sentence (:func:`dqpulse.alerts.anomalies.summarize`)
and stays while the incident is active, however high a later alert scores; every other
series that alerts later gets one line ``- <sentence>`` (its newest), at most
``MAX_LATER`` of them, kept in ``details["later_alerts"]`` as ``[metric, field, text]``.

>>> from dqpulse.alerts.anomalies import Anomaly
>>> later = Anomaly("orders", "schema", "schema.removed_fields", "", 60, 120, 0.99, None,
...                 {"schema_change": {"fields": {"legacy_id": "integer"}}})
>>> row = {"metric": "schema.new_fields", "field": "",
...        "summary": "orders: new field promo_code: string|null", "details": {}}
>>> summary, details = with_later(row, "orders", [later])
>>> print(summary)
orders: new field promo_code: string|null
- removed field legacy_id (was integer)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dqpulse.alerts.anomalies import Anomaly, summarize

MAX_LATER = 10


def with_later(row: Mapping[str, Any], dataset: str,
               anomalies: Iterable[Anomaly]) -> tuple[str, dict[str, Any]]:
    """The summary and details of an active incident after ``anomalies`` joined it."""
    details = dict(row.get("details") or {})
    opener = str(row["summary"]).split("\n", 1)[0]
    opened_by = (str(row.get("metric") or ""), str(row.get("field") or ""))
    later = [list(item) for item in details.get("later_alerts") or []]
    for anomaly in anomalies:
        series = [anomaly.metric, anomaly.field or ""]
        if tuple(series) == opened_by:
            continue
        text = summarize(dataset, anomaly).removeprefix(f"{dataset}: ")
        known = next((item for item in later if item[:2] == series), None)
        if known is not None:
            known[2] = text
        elif len(later) < MAX_LATER:
            later.append([*series, text])
    details["later_alerts"] = later
    return "\n".join([opener, *(f"- {item[2]}" for item in later)]), details
