"""Every metric family on a produced stream of known content, through Kafka and Postgres.

Exact values where the metric is exact (counts, ratios, min/max/mean); sketch values
within the sketch's documented error bound (KLL k=200: rank error <= 1.65% at 99%
confidence; HLL: exact below a few hundred distinct values).
"""

from __future__ import annotations

import math
import time

import pytest
from sqlalchemy import select

from dqpulse.config import Settings
from dqpulse.finalize import finalize_ready
from dqpulse.ingest import IngestWorker
from dqpulse.spec import parse_spec
from dqpulse.store import schemas as schema_store
from dqpulse.store.db import make_engine
from dqpulse.store.tables import metric_points
from tests.integration.helpers import WorkerThread, json_bytes, produce, wait_until
from workers.ingest import make_source

pytestmark = pytest.mark.integration

N = 2000  # records in window A
M = 500   # records in window B


def _record_a(i: int, base: float) -> dict:
    return {
        "ts": base + 1 + (i % 50),
        "order_id": i if i < N - 100 else i - (N - 100),  # the last 100 repeat ids 0..99
        "amount": None if i % 20 == 0 else float(i),
        "country": ["DE", "FR", "US", "XX"][i % 4],
        "email": "bad" if i % 10 == 0 else f"u{i}@example.com",
        "is_fraud": i % 10 == 0,
        "gender": "M" if i % 2 == 0 else "F",
        "approved": (i % 4 == 0) if i % 2 == 0 else (i % 8 == 1),
        "customer": {"age": 20 + i % 50, "tier": "" if i % 5 == 0 else "gold"},
    }


def _record_b(i: int, base: float) -> dict:
    record = _record_a(i, base)
    record["ts"] = base + 60 + 1 + (i % 50)
    record["coupon"] = "C1"                       # a new field
    if i % 5 == 0:
        record["amount"] = str(record["amount"])  # a type change in 20% of records
    return record


def test_each_metric_family_yields_exact_values_or_values_within_sketch_bounds(
        fresh_db, make_topic, kafka_bootstrap):
    topic = make_topic("families", partitions=2)
    base = math.floor(time.time() / 60) * 60 - 600
    produce(kafka_bootstrap, topic,
            [(i % 2, json_bytes(_record_a(i, base))) for i in range(N)]
            + [(i % 2, json_bytes(_record_b(i, base))) for i in range(M)])
    spec = parse_spec(f"""
datasets:
  - name: shop
    topic: {topic}
    event_time: ts
    window: 1m
    lateness: 0s
    key: order_id
    label: is_fraud
    fairness: {{group: gender, outcome: approved}}
    fields:
      amount:  {{type: number, min: 10}}
      country: {{type: string, allowed: [DE, FR, US]}}
      email:   {{type: string, pattern: '^[^@]+@[^@]+$'}}
""")
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.5)
    engine = make_engine(fresh_db)
    source, _ = make_source(settings)
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, hooks=[])

    def points(window_start: float) -> dict[tuple[str, str], float | None]:
        with engine.connect() as conn:
            rows = conn.execute(select(metric_points).where(
                metric_points.c.dataset == "shop",
                metric_points.c.window_start == window_start)).mappings().all()
        return {(r["metric"], r["field"]): r["value"] for r in rows}

    with WorkerThread(worker):
        wait_until(lambda: finalize_ready(engine, spec.datasets[0]) is not None
                   and bool(points(base + 60)), 60, message="both windows finalized")
    a, b = points(base), points(base + 60)

    # volume
    assert a[("volume.records", "")] == N and b[("volume.records", "")] == M
    assert a[("volume.late_records", "")] == 0
    # completeness (nested paths included)
    assert a[("completeness.null_ratio", "amount")] == pytest.approx(100 / N)
    assert a[("completeness.null_ratio", "country")] == 0
    assert a[("completeness.empty_ratio", "customer.tier")] == pytest.approx(400 / N)
    # distribution: exact
    amounts = [float(i) for i in range(N) if i % 20 != 0]
    assert a[("distribution.min", "amount")] == min(amounts)
    assert a[("distribution.max", "amount")] == max(amounts)
    assert a[("distribution.mean", "amount")] == pytest.approx(sum(amounts) / len(amounts))
    assert a[("distribution.max", "customer.age")] == 69
    # distribution: KLL quantile within its rank error bound
    p50 = a[("distribution.p50", "amount")]
    rank = sum(1 for x in amounts if x <= p50) / len(amounts)
    assert abs(rank - 0.5) <= 0.0165
    # distribution: HLL distinct count (exact at this cardinality) and drift present
    assert a[("distribution.distinct_count", "country")] == pytest.approx(4, abs=0.01)
    assert ("distribution.psi", "amount") in b
    # validity: violation ratio per rule
    assert a[("validity.violation_ratio", "country:allowed")] == pytest.approx(0.25)
    assert a[("validity.violation_ratio", "email:pattern")] == pytest.approx(0.1)
    below_min = sum(1 for x in amounts if x < 10) / (N - 100)
    assert a[("validity.violation_ratio", "amount:min")] == pytest.approx(below_min)
    # uniqueness: 1 - distinct keys / keyed records
    assert a[("uniqueness.duplicate_ratio", "order_id")] == pytest.approx(100 / N)
    # ml_data: label balance and group fairness
    assert a[("ml_data.minority_ratio", "is_fraud")] == pytest.approx(200 / 1800)
    assert a[("ml_data.parity_difference", "gender")] == pytest.approx(0.25)
    assert a[("ml_data.disparate_impact", "gender")] == pytest.approx(0.5)
    # freshness: event lag = ingest time - event time, records are ~10 minutes old
    assert 300 < a[("freshness.event_lag_p95_seconds", "")] < 900
    # schema drift in window B: one new field, one type change; versions stored with diffs
    assert b[("schema.new_fields", "")] == 1
    assert b[("schema.type_changes", "")] == 1
    assert b[("schema.contract_violations", "")] > 0
    with engine.connect() as conn:
        versions = schema_store.get_all(conn, dataset="shop")
    assert [v["version"] for v in versions] == [1, 2]
    assert "coupon" in versions[1]["diff"]["added"]
    assert "amount" in versions[1]["diff"]["type_changed"]
    # quality scores are shares in [0, 1]
    for dimension in ("completeness", "validity", "uniqueness", "timeliness", "consistency"):
        assert 0 <= a[(f"quality.{dimension}", "")] <= 1
    engine.dispose()
