"""Uniqueness: the share of records whose ``key`` repeats an earlier key of the window.

``uniqueness.duplicate_ratio = 1 - distinct keys / records with a key``. Keys are kept
exactly, as 64-bit hashes (integer keys as themselves, strings by polars' hash with a
fixed seed: stable for one polars version; a collision is ~n^2/2^65 likely), until a
window holds ``EXACT_LIMIT`` distinct keys; past that the distinct count comes from an
HLL sketch (relative standard error 1.04/sqrt(2^14) ~ 0.8% of the distinct count) and
``extra["exact"]`` is false.
"""

from __future__ import annotations

import datasketches as ds
import numpy as np
import numpy.typing as npt
import polars as pl

from dqpulse.metrics import sketches
from dqpulse.metrics.base import FamilyState, register_family
from dqpulse.metrics.codec import pack, unpack
from dqpulse.records import ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec

EXACT_LIMIT = 200_000
_HLL_LG_K = 14


def key_hashes(column: pl.Series, type_name: str) -> npt.NDArray[np.uint64]:
    values = column.drop_nulls()
    if type_name == "integer":
        return np.asarray(values.to_numpy(), dtype=np.int64).view(np.uint64)
    if type_name in ("number", "timestamp"):
        return np.asarray(values.to_numpy(), dtype=np.float64).view(np.uint64)
    return np.asarray(values.cast(pl.String).hash(seed=0).to_numpy(), dtype=np.uint64)


def _sorted_unique(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """``np.unique`` by sort + neighbour compare: for 64-bit integers NumPy 2.4's
    ``np.unique`` is ~14x slower (200 ms vs 14 ms for 300,000 keys, measured here)."""
    if values.size < 2:
        return values.copy()
    ordered = np.sort(values)
    keep = np.empty(ordered.size, dtype=np.bool_)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _merge_sorted(a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64]
                  ) -> npt.NDArray[np.uint64]:
    """The sorted union of two sorted unique arrays, in linear time: NumPy's stable sort
    of 64-bit integers is Timsort, which merges the two runs instead of sorting again."""
    if not a.size:
        return b.copy()
    if not b.size:
        return a
    merged = np.concatenate([a, b])
    merged.sort(kind="stable")
    keep = np.empty(merged.size, dtype=np.bool_)
    keep[0] = True
    np.not_equal(merged[1:], merged[:-1], out=keep[1:])
    return merged[keep]


@register_family
class UniquenessState(FamilyState):
    family = "uniqueness"

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        self.keyed = 0
        self.keys = np.zeros(0, dtype=np.uint64)  # sorted, unique (exact mode)
        self._pending: list[npt.NDArray[np.uint64]] = []
        self._pending_size = 0
        self.hll: ds.hll_sketch | None = None  # estimate mode

    def _compact(self) -> None:
        if self._pending:
            new = _sorted_unique(np.concatenate(self._pending))  # sorts only the new
            self._pending = []
            self._pending_size = 0
            self.keys = _merge_sorted(self.keys, new)
        if self.hll is None and self.keys.size > EXACT_LIMIT:
            self.hll = ds.hll_sketch(_HLL_LG_K, ds.tgt_hll_type.HLL_8)
            sketches.hll_feed(self.hll, self.keys.tolist())
            self.keys = np.zeros(0, dtype=np.uint64)

    def _add_hashes(self, hashes: npt.NDArray[np.uint64]) -> None:
        if self.hll is not None:
            sketches.hll_feed(self.hll, _sorted_unique(hashes).tolist())
            return
        self._pending.append(hashes)
        self._pending_size += int(hashes.size)
        if self._pending_size > max(self.keys.size, 500_000):
            self._compact()

    def update(self, batch: ColumnBatch) -> None:
        key = self.spec.key
        if key is None or key not in batch.types or batch.types[key] == "null":
            return
        hashes = key_hashes(batch.frame.get_column(key), batch.types[key])
        self.keyed += int(hashes.size)
        self._add_hashes(hashes)

    def merge(self, other: UniquenessState) -> UniquenessState:
        self.keyed += other.keyed
        other._compact()
        if other.hll is not None:
            self._compact()
            if self.hll is None:
                self.hll = ds.hll_sketch(_HLL_LG_K, ds.tgt_hll_type.HLL_8)
                sketches.hll_feed(self.hll, self.keys.tolist())
                self.keys = np.zeros(0, dtype=np.uint64)
            union = ds.hll_union(_HLL_LG_K)
            union.update(self.hll)
            union.update(other.hll)
            self.hll = union.get_result(ds.tgt_hll_type.HLL_8)
        elif self.hll is not None:
            sketches.hll_feed(self.hll, other.keys.tolist())
        else:
            self._compact()
            self.keys = _merge_sorted(self.keys, other.keys)
        self._compact()
        return self

    def distinct(self) -> tuple[float, bool]:
        self._compact()
        if self.hll is not None:
            return self.hll.get_estimate(), False
        return float(self.keys.size), True

    def to_bytes(self) -> bytes:
        self._compact()
        blobs = [self.keys.astype("<u8").tobytes()]
        if self.hll is not None:
            blobs.append(bytes(self.hll.serialize_compact()))
        return pack({"keyed": self.keyed}, blobs)

    @classmethod
    def from_bytes(cls, spec: DatasetSpec, data: bytes) -> UniquenessState:
        header, blobs = unpack(data)
        state = cls(spec)
        state.keyed = header["keyed"]
        state.keys = np.frombuffer(blobs[0], dtype="<u8").astype(np.uint64)
        if len(blobs) > 1:
            state.hll = ds.hll_sketch.deserialize(blobs[1])
        return state

    def duplicate_ratio(self) -> float | None:
        if not self.keyed:
            return None
        distinct, _ = self.distinct()
        return max(0.0, 1.0 - min(distinct, self.keyed) / self.keyed)

    def points(self) -> list[MetricPoint]:
        if self.spec.key is None:
            return []
        _, exact = self.distinct()
        return [MetricPoint("uniqueness.duplicate_ratio", self.duplicate_ratio(), self.spec.key,
                            extra={"exact": exact, "keyed_records": self.keyed})]
