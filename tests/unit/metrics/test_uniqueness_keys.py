"""Uniqueness key sets: the sort-based dedup and linear merge equal np.unique's result."""

from __future__ import annotations

import numpy as np

from dqpulse.metrics.uniqueness import UniquenessState, _merge_sorted, _sorted_unique
from dqpulse.spec import DatasetSpec


def test_sorted_unique_and_merge_match_numpy() -> None:
    rng = np.random.default_rng(3)
    for size in (0, 1, 2, 17, 5000):
        a = rng.integers(0, 1000, size).astype(np.uint64)
        b = rng.integers(0, 1000, size // 2 + 1).astype(np.uint64)
        assert np.array_equal(_sorted_unique(a), np.unique(a))
        merged = _merge_sorted(_sorted_unique(a), _sorted_unique(b))
        assert np.array_equal(merged, np.unique(np.concatenate([a, b])))


def test_state_counts_distinct_keys_across_batches_and_merges() -> None:
    spec = DatasetSpec(name="d", topic="t", key="id")
    left, right = UniquenessState(spec), UniquenessState(spec)
    for start in range(0, 3000, 500):  # overlapping runs of keys
        left._add_hashes(np.arange(start, start + 700, dtype=np.uint64))
        left.keyed += 700
    right._add_hashes(np.arange(3000, 4000, dtype=np.uint64))
    right.keyed += 1000
    assert left.distinct() == (3200.0, True)
    restored = UniquenessState.from_bytes(spec, left.to_bytes())
    restored.merge(right)
    assert restored.distinct() == (4000.0, True)  # [0, 3200) | [3000, 4000)
    assert restored.keyed == 6 * 700 + 1000
