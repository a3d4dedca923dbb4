"""Failing samples: every sample is the record at its offset (one gather per batch must
not misalign rows), bounded per series, redacted paths never stored."""

from __future__ import annotations

import random

import numpy as np
import orjson

from dqpulse.aggregate import PartitionAggregator
from dqpulse.metrics.samples import SampleBoard
from dqpulse.metrics.window_state import WindowState
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


def _partition_batches(rng: random.Random, partition: int) -> list[PartitionBatch]:
    batches, offset = [], 0
    for _ in range(6):
        values = []
        for _ in range(rng.choice([2, 30, 150])):
            record: dict[str, object] = {"ts": rng.uniform(0, 180), "id": rng.randrange(40)}
            record["amount"] = rng.choice([None, -1, 5.5, 10, "x"])
            record["status"] = rng.choice(["ok", "bad", None])
            values.append(orjson.dumps(record))
        n = len(values)
        batches.append(PartitionBatch("t", partition, values, np.full(n, 1000, dtype=np.int64),
                                      np.arange(offset, offset + n, dtype=np.int64)))
        offset += n
    return batches


def _merged_samples(batches: dict[int, list[PartitionBatch]], order: list[int],
                    board: SampleBoard | None) -> tuple[dict[float, object], int]:
    """Each partition's batches, interleaved in ``order``; the windows merged as a
    finalizer merges them; and how many samples the partials held."""
    aggregators = {p: PartitionAggregator(SPEC, p, samples_board=board) for p in batches}
    for step, p in enumerate(order):
        aggregators[p].add(batches[p][step // len(batches)], 200.0)
    partials: dict[float, list[WindowState]] = {}
    held = 0
    for aggregator in aggregators.values():
        for start, state in aggregator._windows.items():
            partials.setdefault(start, []).append(state)
            held += sum(map(len, state.families["samples"].samples.values()))
    merged: dict[float, object] = {}
    for start, states in partials.items():
        combined = WindowState.zero(SPEC)
        for state in states:
            combined.merge(state)
        merged[start] = combined.families["samples"].samples
    return merged, held


def test_a_shared_board_changes_no_merged_sample_and_keeps_fewer():
    # Partitions of one data set in one process skip a series once a lower partition
    # holds its full set: the merge (first by partition and offset) must come out the
    # same as without the board, in any interleaving of the partitions' batches.
    for seed in range(12):
        rng = random.Random(seed)
        batches = {p: _partition_batches(rng, p) for p in range(4)}
        order = [p for _ in range(6) for p in rng.sample(range(4), 4)]
        alone, held_alone = _merged_samples(batches, order, None)
        shared, held_shared = _merged_samples(batches, order, SampleBoard())
        assert shared == alone, seed
        assert held_shared <= held_alone
    assert held_shared < held_alone  # the last seed's partitions did skip some


def test_a_restored_partition_tells_the_board_what_it_holds():
    rng = random.Random(3)
    [first] = _partition_batches(rng, 0)[:1]
    alone = PartitionAggregator(SPEC, 0)
    alone.add(first, 200.0)
    board = SampleBoard()
    restored = PartitionAggregator.restore(SPEC, 0, alone.snapshot(), samples_board=board)
    full = [key for key, items in
            restored._windows[min(restored._windows)].families["samples"].samples.items()
            if len(items) == (2 if key.startswith("type:") else 3)]
    assert full
    assert all(board.covered(min(restored._windows), key, 1) for key in full)
