"""The OpenLineage outbox row is a small stub written in the finalize transaction; the
sender builds the same report from what Postgres stores (SQLite through the real
migrations here; the loopback receiver and the client's models: the integration test)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from dqpulse.finalize import FinalizedWindow
from dqpulse.finalize.openlineage import OpenLineageOutboxHook
from dqpulse.rca.openlineage_out import is_report, window_report
from dqpulse.records import MetricPoint
from dqpulse.services.openlineage_emit import EmitOptions, build_report, emit_due
from dqpulse.spec import parse_spec
from dqpulse.store import metrics as metric_store
from dqpulse.store import openlineage as openlineage_store
from dqpulse.store.tables import openlineage_outbox

SPEC = parse_spec("""
datasets:
  - name: orders
    topic: orders-topic
    window: 1m
    fields:
      amount: {type: number, min: 0}
""").datasets[0]
START = 1_700_000_040.0


def _points() -> list[MetricPoint]:
    return [
        MetricPoint("volume.records", 100.0),
        MetricPoint("volume.bytes", 5000.0),
        MetricPoint("completeness.null_ratio", 0.1, field="amount"),
        MetricPoint("distribution.min", -1.0, field="amount"),
        MetricPoint("distribution.mean", 2.5, field="amount"),
        MetricPoint("distribution.p50", 3.0, field="amount"),
        MetricPoint("schema.contract_violations", 0.0),
        MetricPoint("validity.violation_ratio", 5 / 90, field="amount:min",
                    extra={"path": "amount", "rule": "min", "violations": 5, "checked": 90}),
    ]


def test_the_sender_builds_from_the_store_what_the_finalize_transaction_would_have(engine):
    points = _points()
    window = FinalizedWindow("orders", START, START + 60, points)
    with engine.begin() as conn:
        metric_store.create_window(conn, dataset="orders", window_start=START,
                                   window_end=START + 60, points=points)
        OpenLineageOutboxHook()(conn, SPEC, window)
        OpenLineageOutboxHook()(conn, SPEC, window)  # finalized again: still one row
        # scoring replaces the stored details of the series it scores
        metric_store.update_scores(conn, dataset="orders", window_start=START, scores=[
            ("validity.violation_ratio", "amount:min", 7.5, True, {"detector": "robust_z"}),
            ("completeness.null_ratio", "amount", 0.2, False, None)])
    with engine.connect() as conn:
        [row] = conn.execute(select(openlineage_outbox)).mappings().all()
        [(_, _, score)] = openlineage_store.get_anomalous(conn, dataset="orders",
                                                          window_start=START)
    assert not is_report(row["event"]) and len(str(row["event"])) < 300
    built = build_report(engine, row["event"])
    want = window_report(SPEC, window_start=START, window_end=START + 60, points=points,
                         anomalous=[("validity.violation_ratio", "amount:min", score)])
    assert built == want
    assert built["row_count"] == 100 and built["columns"]["amount"]["nullCount"] == 10
    rule = next(a for a in built["assertions"] if a["name"] == "dqpulse.validity.amount:min")
    assert (rule["success"], rule["actual"], rule["column"]) == (False, "5", "amount")
    assert any(a["assertion"] == "anomaly" for a in built["assertions"])
    # a row queued by an older version holds its report already: sent as it is
    assert build_report(engine, want) is want


def test_a_row_whose_report_cannot_be_built_is_set_aside_and_the_others_are_sent(engine):
    """A bug met by one row (here a stub without its window) used to stop every later row
    at each pass; now it is tried alone, then dead, and the rest are sent in order."""
    points = _points()
    with engine.begin() as conn:
        conn.execute(insert(openlineage_outbox).values(  # the oldest row
            dataset="orders", window_start=START + 30, event={"dataset": "orders"},
            status="pending", attempts=0))
        for start in (START, START + 60):
            metric_store.create_window(conn, dataset="orders", window_start=start,
                                       window_end=start + 60, points=points)
            OpenLineageOutboxHook()(conn, SPEC, FinalizedWindow("orders", start,
                                                                start + 60, points))
    sent: list[float] = []
    options = EmitOptions(base_backoff_s=0.1, max_backoff_s=0.1, max_rejections=2)
    now = datetime.now(UTC) + timedelta(hours=1)
    first = emit_due(engine, lambda report: sent.append(report["window_start"]),
                     options=options, now=now)
    assert (first.delivered, first.rejected, first.dead, first.failed) == (2, 1, 0, 0)
    assert sent == [START, START + 60]
    second = emit_due(engine, sent.append, options=options, now=now + timedelta(minutes=1))
    assert (second.claimed, second.rejected, second.dead) == (1, 1, 1)
    with engine.connect() as conn:
        dead = conn.execute(select(openlineage_outbox).where(
            openlineage_outbox.c.status == "dead")).mappings().one()
    assert dead["window_start"] == START + 30 and dead["attempts"] == 2
    assert dead["last_error"].startswith("cannot build the report: KeyError")
