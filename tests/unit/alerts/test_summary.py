"""Schema alerts name their fields and types; an incident's summary keeps what opened it."""

from __future__ import annotations

import numpy as np
import polars as pl

from dqpulse.alerts import incidents as inc
from dqpulse.alerts.anomalies import Anomaly, summarize
from dqpulse.metrics import FinalizeContext, WindowState, finalize_window
from dqpulse.records import ColumnBatch
from dqpulse.store import incidents as incident_store

from .conftest import anomaly, at, dataset, window


def _schema(index: int, metric: str, change: dict, score: float = 1.0) -> Anomaly:
    start, end = window(index)
    return Anomaly("orders", "schema", metric, "", start, end, score, None,
                   {"observed": 1.0, "schema_change": change})


def _run(engine, index: int, anomalies: list[Anomaly]) -> inc.WindowOutcome:
    start, end = window(index)
    with engine.begin() as conn:
        return inc.process_window(conn, dataset=dataset(), window_start=start,
                                  window_end=end, anomalies=anomalies, notifications=[],
                                  public_url="", now=at(index))


def test_new_field_is_named_with_its_types_in_the_points_and_the_summary():
    spec = dataset()

    def window_of(rows: list[dict]) -> WindowState:
        frame = pl.DataFrame(rows)
        types = {c: ("integer" if frame[c].dtype == pl.Int64 else "string")
                 for c in frame.columns}
        state = WindowState.zero(spec)
        state.update(ColumnBatch(frame=frame, types=types,
                                 sizes=np.full(len(rows), 10, dtype=np.int64),
                                 timestamps=np.zeros(len(rows)),
                                 event_times=np.zeros(len(rows))))
        return state

    ctx = FinalizeContext(0, 60, 60, None, None)
    first = finalize_window(spec, window_of([{"id": 1}, {"id": 2}]), ctx, None)
    second = finalize_window(spec, window_of([{"id": 3, "promo_code": "X"},
                                              {"id": 4, "promo_code": None}]), ctx,
                             first.baseline)
    [new] = [p for p in second.points if p.metric == "schema.new_fields"]
    assert new.extra["fields"] == {"promo_code": "string|null"}
    alert = _schema(1, "schema.new_fields", new.extra)
    assert summarize("orders", alert) == "orders: new field promo_code: string|null"


def test_summary_keeps_the_opening_alert_and_lists_later_ones_below(engine):
    opened = _run(engine, 0, [_schema(0, "schema.new_fields",
                                      {"fields": {"promo_code": "string|null"}}, 0.95)])
    incident_id = opened.opened[0]
    _run(engine, 1, [_schema(1, "schema.removed_fields", {"fields": {"legacy_id": "integer"}}),
                     anomaly(1, metric="completeness.null_ratio", field="email", score=0.99)])
    _run(engine, 2, [_schema(2, "schema.removed_fields", {"fields": {"legacy_id": "integer",
                                                                    "x": "string"}})])
    with engine.connect() as conn:
        row = incident_store.get_or_raise(conn, incident_id=incident_id)
    assert row["summary"].splitlines() == [
        "orders: new field promo_code: string|null",
        "- removed fields legacy_id (was integer), x (was string)",
        "- completeness.null_ratio of email dropped to 12 (expected 950 .. 1,050)",
    ]
    assert (row["metric"], row["score"]) == ("schema.new_fields", 1.0)
