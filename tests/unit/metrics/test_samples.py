"""Failing samples: every sample is the record at its offset (one gather per batch must
not misalign rows), bounded per series, redacted paths never stored."""

from __future__ import annotations

import random

import numpy as np
import orjson

from dqpulse.aggregate import PartitionAggregator
from dqpulse.records import PartitionBatch
from dqpulse.spec import parse_spec

SPEC = parse_spec("""
datasets:
  - name: d
    topic: t
    event_time: ts
    key: id
    window: 60s
    samples: {per_window: 3, redact: [secret]}
    fields:
      amount: {type: number, min: 0}
      status: {type: string, allowed: [ok, failed]}
      secret: {type: string}
""").datasets[0]


def test_samples_are_the_records_at_their_offsets_and_bounded():
    rng = random.Random(4)
    agg = PartitionAggregator(SPEC, 2)
    sent: dict[int, dict[str, object]] = {}
    offset = 0
    for _ in range(8):
        values = []
        for _ in range(rng.choice([3, 40, 200])):
            record: dict[str, object] = {"ts": 30 + rng.random(), "id": rng.randrange(50)}
            if rng.random() < 0.8:
                record["amount"] = rng.choice([None, -1, 5.5, 10])
            if rng.random() < 0.9:
                record["status"] = rng.choice(["ok", "bad", None])
            if rng.random() < 0.5:
                record["secret"] = "s" * rng.randrange(1, 5)
            sent[offset + len(values)] = record
            values.append(orjson.dumps(record))
        n = len(values)
        agg.add(PartitionBatch("t", 2, values, np.full(n, 1000, dtype=np.int64),
                               np.arange(offset, offset + n, dtype=np.int64)), 200.0)
        offset += n
    samples = agg._windows[0.0].families["samples"].samples
    assert {"validity:amount:min", "validity:status:allowed", "completeness:amount",
            "completeness:status", "type:amount:number", "uniqueness"} <= set(samples)
    for key, items in samples.items():
        assert 0 < len(items) <= 3, key
        for item in items:
            assert item["partition"] == 2
            original = sent[item["offset"]]
            assert "secret" not in item["record"]
            for path, value in item["record"].items():
                assert original.get(path) == value, (key, path)
            if key == "validity:amount:min":
                assert item["record"]["amount"] < 0
            if key.startswith("completeness:"):
                assert original.get(key.split(":")[1]) is None
    assert samples["completeness:secret"][0]["redacted"] == ["secret"]
