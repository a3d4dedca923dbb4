"""Failing samples on the real stack: Kafka -> ingest -> finalize; samples carry the
partition and offset of the offending record, are bounded per window, never include a
redacted field, and are shown on the incident by the API."""

from __future__ import annotations

import json
import math
import time

import pytest
from fastapi.testclient import TestClient

from dqpulse.alerts import incidents as inc
from dqpulse.alerts.anomalies import Anomaly
from dqpulse.config import Settings
from dqpulse.finalize import finalize_ready
from dqpulse.finalize.finalize import FinalizedWindow
from dqpulse.finalize.scoring import _enriched
from dqpulse.ingest import IngestWorker
from dqpulse.spec import parse_spec
from dqpulse.store import datasets as dataset_store
from dqpulse.store.db import make_engine
from tests.integration.helpers import WorkerThread, json_bytes, produce, wait_until
from workers.ingest import make_source

pytestmark = pytest.mark.integration
PER_WINDOW = 3


def _spec(topic: str) -> str:
    return f"""
datasets:
  - name: payments
    topic: {topic}
    event_time: ts
    window: 10s
    lateness: 0s
    key: order_id
    fields:
      amount: {{type: number, min: 0}}
      email: {{type: string, pattern: "^[^@]+@[^@]+$"}}
      note: {{type: string, required: true}}
      seq: {{type: integer}}
    samples:
      per_window: {PER_WINDOW}
      redact: [email, card]
"""


def _record(i: int, base: float) -> dict:
    return {"ts": base + (i // 200) * 10 + (i % 200) * 0.04,
            "seq": i,
            # every 50th repeats the key of two records before (same partition)
            "order_id": i if i % 50 else i - 2,
            "amount": -float(i) if i % 10 == 3 else float(i),
            "email": f"secret-{i}-at-example.com" if i % 5 == 1 else f"u{i}@example.com",
            "card": {"number": f"4111-0000-{i:04d}", "holder": "X"},
            "note": None if i % 7 == 0 else "ok"}


def test_samples_point_at_offending_records_bounded_and_never_redacted(
        fresh_db, make_topic, kafka_bootstrap):
    topic = make_topic("samples", partitions=2)
    base = math.floor(time.time() / 10) * 10 - 60
    produce(kafka_bootstrap, topic, [(i % 2, json_bytes(_record(i, base))) for i in range(600)])
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.5, worker_metrics_port=0, auth="open")
    spec = parse_spec(_spec(topic))
    dataset = spec.datasets[0]
    engine = make_engine(fresh_db)
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=spec)
    windows: dict[float, FinalizedWindow] = {}

    def keep(_conn: object, _dataset: object, window: FinalizedWindow) -> None:
        windows[window.window_start] = window

    source, _ = make_source(settings)
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, hooks=[keep])

    def three_windows() -> bool:
        finalize_ready(engine, dataset, hooks=[keep])
        return all(base + 10 * k in windows for k in range(3))

    with WorkerThread(worker):
        wait_until(three_windows, 90, message="three finalized windows")

    produced = {i: _record(i, base) for i in range(600)}
    for k in range(3):
        samples = windows[base + 10 * k].samples
        assert samples, f"window {k} has no samples"
        text = json.dumps(list(samples.values()))
        assert "@" not in text.replace("^[^@]+@[^@]+$", "")  # no email value, valid or not
        assert "4111" not in text and "holder" not in text  # nothing under card
        for (metric, field), found in samples.items():
            assert 1 <= len(found) <= PER_WINDOW * (4 if metric == "schema.type_changes"
                                                    else 1), (metric, field)
            for sample in found:
                assert not {"email", "card.number", "card.holder"} & set(sample["record"])
                index = sample["record"]["seq"]
                assert sample["partition"] == index % 2
                assert sample["offset"] == index // 2  # the record's own Kafka offset
        amount = samples[("validity.violation_ratio", "amount:min")]
        assert all(s["record"]["amount"] < 0 for s in amount)
        assert all(produced[s["record"]["seq"]]["amount"] < 0 for s in amount)
        emails = samples[("validity.violation_ratio", "email:pattern")]
        assert all(s["redacted"] == ["email"] for s in emails)
        assert all(s["record"]["seq"] % 5 == 1 for s in emails)
        notes = samples[("completeness.required_violations", "note")]
        assert all(s["record"]["note"] is None for s in notes)
        duplicates = samples[("uniqueness.duplicate_ratio", "order_id")]
        assert {s["record"]["order_id"] % 50 for s in duplicates} == {48}

    # the incident shows them through the API (the scoring hook puts them on the alert)
    window = windows[base]
    explanation = _enriched({"observed": 0.1}, window, "validity.violation_ratio",
                            "amount:min", {})
    anomaly = Anomaly(dataset="payments", kind="validity", metric="validity.violation_ratio",
                      field="amount:min", window_start=base, window_end=base + 10, score=1.0,
                      explanation=explanation)
    with engine.begin() as conn:
        opened = inc.process_window(conn, dataset=dataset, window_start=base,
                                    window_end=base + 10, anomalies=[anomaly],
                                    notifications=[], public_url="").opened
    from service.app import create_app

    api = TestClient(create_app(settings, engine=engine, spec=spec))
    body = api.get(f"/api/v1/incidents/{opened[0]}").json()
    [shown] = body["samples"]
    assert (shown["metric"], shown["field"]) == ("validity.violation_ratio", "amount:min")
    assert shown["records"] == [{**s, "redacted": []}
                                for s in window.samples[("validity.violation_ratio",
                                                         "amount:min")]]
    assert "email" not in json.dumps(body["samples"])
    engine.dispose()
