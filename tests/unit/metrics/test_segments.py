"""Segment states: bounded memory, exact totals, merge/bytes, and the attribution on top."""

from __future__ import annotations

import gc
import random
import tracemalloc

import numpy as np
import polars as pl
import pytest

from dqpulse.metrics.segments import (
    KEY_PREFIX,
    OTHER_VALUE,
    PARTITION,
    SegmentState,
    capacity_of,
)
from dqpulse.rca.segments import attribute
from dqpulse.records import ColumnBatch
from dqpulse.spec import DatasetSpec, parse_spec

SPEC = parse_spec("""
datasets:
  - name: orders
    topic: orders
    dimensions: [producer, country, app_version, kafka.key_prefix]
    segments: {budget_kib: 256}
    fields:
      customer.segment: {type: string, allowed: [smb, ent]}
      amount: {type: number, min: 0}
""").datasets[0]


def _batch(rows: dict[str, list[object]], keys: list[str] | None = None,
           partition: int = 0) -> ColumnBatch:
    frame = pl.DataFrame(rows)
    types = {"producer": "string", "country": "string", "app_version": "string",
             "customer.segment": "string", "amount": "number"}
    n = frame.height
    return ColumnBatch(frame=frame, types={k: v for k, v in types.items() if k in rows},
                       sizes=np.ones(n, dtype=np.int64), timestamps=np.zeros(n),
                       partition=partition,
                       key_prefixes=None if keys is None else pl.Series(keys, dtype=pl.String))


def _distinct_batch(start: int, n: int) -> ColumnBatch:
    ids = range(start, start + n)
    return _batch({"producer": [f"producer-{i}" for i in ids],
                   "country": [f"country-{i}" for i in ids],
                   "app_version": [f"v{i}" for i in ids],
                   "customer.segment": ["smb"] * n, "amount": [1.0] * n},
                  keys=[f"k{i}" for i in ids])


def test_memory_stays_under_the_budget_with_100k_distinct_values_per_dimension():
    batches = [_distinct_batch(start, 20_000) for start in range(0, 100_000, 20_000)]
    heavy = _batch({"producer": ["checkout-v2"] * 5000, "country": ["DE"] * 5000,
                    "app_version": ["9.9"] * 5000, "customer.segment": [None] * 5000,
                    "amount": [2.0] * 5000}, keys=["hot"] * 5000)
    budget = SPEC.segments.budget_kib * 1024
    gc.collect()
    tracemalloc.start()
    try:
        state = SegmentState(SPEC)
        for index, batch in enumerate(batches):
            state.update(batch)
            if index == 2:
                state.update(heavy)
        gc.collect()
        retained, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert state.nbytes() <= budget, (state.nbytes(), budget)
    assert retained <= budget, (retained, budget)
    for name in ("producer", "country", "app_version", KEY_PREFIX):
        table = state.tables[name]
        assert len(table.values) == capacity_of(SPEC) < 100_000
        assert table.totals()[0] == 105_000  # nothing lost: the tail is in "other"
        assert table.rows()[OTHER_VALUE][0] > 0
    producer = state.tables["producer"]
    # the heavy hitter keeps its own exact row among 100k singletons
    row = producer.rows()["checkout-v2"]
    assert row[state.column("count")] == 5000
    assert row[state.column("null:customer.segment")] == 5000
    assert row[state.column("sum:amount")] == 10_000.0


def test_merge_and_bytes_keep_every_statistic():
    rng = random.Random(3)
    rows = {"producer": [rng.choice(["a", "b", "c"]) for _ in range(300)],
            "country": [rng.choice(["DE", None]) for _ in range(300)],
            "customer.segment": [rng.choice(["smb", "ent", "bad", None]) for _ in range(300)],
            "amount": [rng.choice([-1.0, 2.0, None]) for _ in range(300)]}
    whole = SegmentState(SPEC)
    whole.update(_batch(rows, partition=1))
    left, right = SegmentState(SPEC), SegmentState(SPEC)
    left.update(_batch({k: v[:120] for k, v in rows.items()}, partition=1))
    right.update(_batch({k: v[120:] for k, v in rows.items()}, partition=1))
    merged = SegmentState.from_bytes(SPEC, left.merge(right).to_bytes())
    for name in ("producer", "country", PARTITION, "app_version"):
        want = {k: list(v) for k, v in whole.tables[name].rows().items()}
        got = {k: list(v) for k, v in merged.tables[name].rows().items()}
        assert got == want, name
    producer_a = whole.tables["producer"].rows()["a"]
    picked = [i for i, p in enumerate(rows["producer"]) if p == "a"]
    assert producer_a[whole.column("null:customer.segment")] == sum(
        rows["customer.segment"][i] is None for i in picked)
    assert producer_a[whole.column("viol:customer.segment")] == sum(
        rows["customer.segment"][i] == "bad" for i in picked)
    assert producer_a[whole.column("viol:amount")] == sum(
        rows["amount"][i] == -1.0 for i in picked)
    assert whole.tables["country"].rows().keys() >= {"DE", "(null)"}
    assert whole.tables["app_version"].rows().keys() == {"(null)"}  # field absent
    assert list(whole.tables[PARTITION].rows()) == ["1"]


@pytest.mark.parametrize("seed", range(5))
def test_attribution_names_the_value_that_carries_a_null_increase(seed):
    rng = random.Random(seed)
    producers = [f"svc-{i:02d}" for i in range(24)]
    bad = rng.choice(producers)

    def window(broken: str | None) -> SegmentState:
        n = 2400
        producer = [rng.choice(producers) for _ in range(n)]
        segment = [None if rng.random() < 0.01 or p == broken else "smb" for p in producer]
        state = SegmentState(SPEC)
        state.update(_batch({"producer": producer,
                             "country": [rng.choice(["DE", "FR", "US"]) for _ in range(n)],
                             "customer.segment": segment, "amount": [1.0] * n},
                            keys=[f"c{rng.randrange(30)}" for _ in range(n)]))
        return state

    reference = window(None).merge(window(None)).scaled(0.5)
    found = attribute("completeness.null_ratio", "customer.segment", window(bad), reference)
    assert found is not None
    assert (found["dimension"], found["value"]) == ("producer", bad)
    assert found["share"] > 0.7
    assert found["text"].startswith(f"{min(found['share'], 1.0):.0%} of the null increase in "
                                    "customer.segment comes from producer=")
    # the same change read through the not-null rule and the completeness score
    rule = attribute("validity.violation_ratio", "customer.segment:not_null", window(bad),
                     reference)
    assert rule is not None and rule["value"] == bad
    assert attribute("completeness.null_ratio", "customer.segment", window(bad), None) is None


def test_the_key_prefix_is_a_dimension_only_when_declared():
    plain = SPEC.model_copy(update={"dimensions": ["producer", "kafka.partition"]})
    state = SegmentState(plain)
    state.update(_batch({"producer": ["a", "b", "a"]}, keys=["x", "y", "z"], partition=2))
    assert list(state.tables) == ["producer", PARTITION]  # kafka.partition: always, once
    assert state.tables["producer"].rows()["a"][0] == 2
    assert list(state.tables[PARTITION].rows()) == ["2"]
    # a state written while the key prefix was declared merges into one without it
    keyed = SegmentState(SPEC)
    keyed.update(_batch({"producer": ["a"]}, keys=["x"]))
    merged = SegmentState.from_bytes(plain, keyed.to_bytes()).merge(keyed)
    assert KEY_PREFIX not in merged.tables
    assert merged.tables["producer"].rows()["a"][0] == 2
    for bad in (["kafka.offset"], ["kafka.key_prefix", "kafka.key_prefix"]):
        with pytest.raises(ValueError):
            DatasetSpec(name="x", topic="x", dimensions=bad)


def test_many_distinct_combinations_sum_per_dimension_like_few():
    rng = random.Random(5)
    n = 12_000  # more combinations of values than the numpy path takes
    rows = {"producer": [f"p{rng.randrange(9000)}" for _ in range(n)],
            "country": [rng.choice(["DE", "FR", None]) for _ in range(n)],
            "customer.segment": [rng.choice(["smb", "bad", None]) for _ in range(n)],
            "amount": [rng.choice([-1.0, 2.5, None]) for _ in range(n)]}
    whole = SegmentState(SPEC)
    whole.update(_batch(rows))
    pieces = SegmentState(SPEC)
    for at in range(0, n, 1000):  # 1000 records: at most 1000 combinations each
        pieces.update(_batch({k: v[at:at + 1000] for k, v in rows.items()}))
    for name in ("country", PARTITION):
        want = {k: list(v) for k, v in pieces.tables[name].rows().items()}
        assert {k: list(v) for k, v in whole.tables[name].rows().items()} == want
    country = whole.tables["country"].rows()
    assert country["(null)"][0] == rows["country"].count(None)
    assert whole.tables["producer"].totals()[0] == n


def test_partition_only_totals_match_the_grouped_query():
    """Without declared dimensions a batch's partition row comes from the shared column
    aggregates (no polars query of its own); it must equal what the grouped query sums."""
    text = """
datasets:
  - name: orders
    topic: orders
    {dims}
    fields:
      producer: {{type: string}}
      customer.segment: {{type: string, allowed: [smb, ent], pattern: "^[a-z]+$"}}
      amount: {{type: number, min: 0, max: 100}}
      missing: {{type: number}}
"""
    bare = parse_spec(text.format(dims="")).datasets[0]
    grouped = parse_spec(text.format(dims="dimensions: [producer]")).datasets[0]
    rng = random.Random(5)
    rows = {"producer": [rng.choice(["a", "b", None]) for _ in range(500)],
            "customer.segment": [rng.choice(["smb", "ent", "XX", "other", None])
                                 for _ in range(500)],
            "amount": [rng.choice([None, -1.5, 50.25, 120.0, 3.0]) for _ in range(500)]}
    fast, slow = SegmentState(bare), SegmentState(grouped)
    assert list(fast.tables) == [PARTITION]
    for start in range(0, 500, 125):
        part = _batch({k: v[start:start + 125] for k, v in rows.items()}, partition=3)
        fast.update(part)
        slow.update(part)
    assert fast.columns == slow.columns
    got, want = fast.tables[PARTITION].rows()["3"], slow.tables[PARTITION].rows()["3"]
    assert got[0] == 500
    assert "viol:customer.segment" in fast.columns and "null:missing" in fast.columns
    np.testing.assert_allclose(got, want, rtol=1e-12)
