"""Distribution per field: moments, quantiles, distinct counts, top values, string lengths.

Numeric fields (``integer``/``number``/``timestamp``): ``distribution.min/max/mean/std``
(exact; ``std`` is the sample standard deviation) and ``distribution.p01`` ... ``p99`` from
a KLL sketch. Categorical fields (``string``/``boolean``; integers are numeric):
``distribution.distinct_count`` (HLL, which ignores empty strings; booleans exact),
``distribution.top_k_share`` (the
combined share of the ``TOP_K`` most frequent values, which are listed with their shares in
``extra["items"]``), and for strings ``distribution.length_mean`` (characters). Float
fields get no distinct count. Error bounds: see ``dqpulse.metrics.sketches``.

Drift against earlier windows is computed from these sketches in ``dqpulse.metrics.drift``.
"""

from __future__ import annotations

import math
from typing import Any

import datasketches as ds
import numpy as np
import numpy.typing as npt
import polars as pl

from dqpulse.metrics import sketches
from dqpulse.metrics.base import FamilyState, register_family
from dqpulse.metrics.batchstats import ColumnStats, column_stats, value_counts
from dqpulse.metrics.codec import BlobTable, pack, unpack
from dqpulse.records import NUMERIC_TYPES, SHARE_OF, ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec

TOP_K = 10
QUANTILES = {
    "p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99,
}


_NAN = float("nan")

class FieldDistribution:
    """Sketches and moments of one field; numeric and categorical parts fill as types appear."""

    __slots__ = (
        "count", "mean", "m2", "minimum", "maximum", "kll",
        "categorical", "hll", "frequent", "length_sum", "strings", "true_count", "booleans",
    )

    def __init__(self) -> None:
        self.count = 0  # numeric values
        self.mean = 0.0
        self.m2 = 0.0
        self.minimum: float | None = None
        self.maximum: float | None = None
        self.kll: ds.kll_doubles_sketch | None = None
        self.categorical = 0  # values fed to the frequent-items sketch
        self.hll: ds.hll_sketch | None = None
        self.frequent: ds.frequent_strings_sketch | None = None
        self.length_sum = 0
        self.strings = 0
        self.true_count = 0
        self.booleans = 0

    # -- updates -------------------------------------------------------------------------
    def add_numbers(self, values: np.ndarray, stats: ColumnStats) -> None:
        n = int(values.size)
        if n == 0 or stats.mean is None:
            return
        variance = stats.variance or 0.0
        self._add_moments(n, float(stats.mean), float(variance) * n, stats.minimum, stats.maximum)
        if self.kll is None:
            self.kll = sketches.new_kll()
        self.kll.update(values)

    def _add_moments(self, n: int, mean: float, m2: float, low: float | None,
                     high: float | None) -> None:
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        if low is not None:
            self.minimum = low if self.minimum is None else min(self.minimum, low)
        if high is not None:
            self.maximum = high if self.maximum is None else max(self.maximum, high)

    def add_counts(self, items: list[Any], counts: list[int], hll_values: Any) -> None:
        """Categorical values of one batch: distinct items, their counts (largest first)."""
        if not items:
            return
        self.categorical += int(sum(counts))
        if self.frequent is None:
            self.frequent = sketches.new_frequent()
        update = self.frequent.update
        for item, count in zip(items[: sketches.TOP_ITEMS_PER_BATCH],
                               counts[: sketches.TOP_ITEMS_PER_BATCH], strict=True):
            update(item, count)
        if hll_values is not None:
            if self.hll is None:
                self.hll = sketches.new_hll()
            sketches.hll_feed(self.hll, hll_values)

    # -- merge / bytes ---------------------------------------------------------------------
    def merge(self, other: FieldDistribution) -> None:
        if other.count:
            self._add_moments(other.count, other.mean, other.m2, other.minimum, other.maximum)
        if other.kll is not None:
            if self.kll is None:
                self.kll = sketches.new_kll()
            self.kll.merge(other.kll)
        self.categorical += other.categorical
        if other.frequent is not None:
            if self.frequent is None:
                self.frequent = sketches.new_frequent()
            self.frequent.merge(other.frequent)
        if other.hll is not None:
            self.hll = other_copy(other.hll) if self.hll is None else sketches.hll_merge(
                self.hll, other.hll)
        self.length_sum += other.length_sum
        self.strings += other.strings
        self.true_count += other.true_count
        self.booleans += other.booleans

    def to_header(self, blobs: BlobTable) -> dict[str, Any]:
        return {
            "n": self.count, "mean": self.mean, "m2": self.m2,
            "min": self.minimum, "max": self.maximum,
            "kll": None if self.kll is None else blobs.add(sketches.kll_bytes(self.kll)),
            "cat": self.categorical,
            "hll": None if self.hll is None else blobs.add(sketches.hll_bytes(self.hll)),
            "fi": None if self.frequent is None else blobs.add(
                sketches.frequent_bytes(self.frequent)),
            "len": self.length_sum, "str": self.strings,
            "true": self.true_count, "bool": self.booleans,
        }

    @classmethod
    def from_header(cls, header: dict[str, Any], blobs: list[bytes]) -> FieldDistribution:
        state = cls()
        # JSON has no infinity: moments that overflowed (values past 1e154 square beyond
        # the float range) were written as null, and read back they are NaN (that window's
        # mean and spread are unknown, not a failure to merge it)
        state.count = header["n"]
        state.mean = _NAN if header["mean"] is None else header["mean"]
        state.m2 = _NAN if header["m2"] is None else header["m2"]
        state.minimum, state.maximum = header["min"], header["max"]
        if header["kll"] is not None:
            state.kll = sketches.kll_load(blobs[header["kll"]])
        state.categorical = header["cat"]
        if header["hll"] is not None:
            state.hll = sketches.hll_load(blobs[header["hll"]])
        if header["fi"] is not None:
            state.frequent = sketches.frequent_load(blobs[header["fi"]])
        state.length_sum, state.strings = header["len"], header["str"]
        state.true_count, state.booleans = header["true"], header["bool"]
        return state

    # -- results ---------------------------------------------------------------------------
    def std(self) -> float | None:
        if self.count < 2:
            return 0.0 if self.count == 1 else None
        return math.sqrt(max(self.m2, 0.0) / (self.count - 1))

    def distinct_count(self) -> tuple[float, dict[str, object]] | None:
        if self.hll is not None:
            return self.hll.get_estimate(), {
                "lower_bound": self.hll.get_lower_bound(2),
                "upper_bound": self.hll.get_upper_bound(2),
            }
        if self.booleans:
            distinct = int(self.true_count > 0) + int(self.true_count < self.booleans)
            return float(distinct), {"exact": True}
        return None

    def top_items(self) -> list[tuple[str, float]]:
        if self.frequent is None or not self.categorical:
            return []
        return [(item, estimate / self.categorical)
                for item, estimate in sketches.frequent_items(self.frequent)]

    def points(self, path: str) -> list[MetricPoint]:
        points: list[MetricPoint] = []
        if self.count:
            # how many values the watched statistics (mean, median) are over: the detectors
            # weigh their sampling error by it (the others are history only: no extra to
            # store for them)
            counted: dict[str, object] = {SHARE_OF: float(self.count)}
            points += [
                MetricPoint("distribution.min", self.minimum, path),
                MetricPoint("distribution.max", self.maximum, path),
                MetricPoint("distribution.mean", self.mean, path, extra=counted),
                MetricPoint("distribution.std", self.std(), path),
            ]
            if self.kll is not None:
                values = sketches.quantiles(self.kll, list(QUANTILES.values()))
                for name, value in zip(QUANTILES, values, strict=True):
                    points.append(MetricPoint(f"distribution.{name}", float(value), path,
                                              extra=dict(counted) if name == "p50" else {}))
        distinct = self.distinct_count()
        if distinct is not None:
            points.append(MetricPoint("distribution.distinct_count", distinct[0], path,
                                      extra=distinct[1]))
        items = self.top_items()
        if items:
            top = items[:TOP_K]
            points.append(MetricPoint(
                "distribution.top_k_share", min(1.0, sum(share for _, share in top)), path,
                extra={"items": [{"value": item, "share": share} for item, share in top]},
            ))
        if self.strings:
            points.append(
                MetricPoint("distribution.length_mean", self.length_sum / self.strings, path)
            )
        return points


def _numbers(column: pl.Series, nulls: int) -> npt.NDArray[np.float64]:
    """A numeric column's non-null values as the writable float64 array DataSketches
    takes. With nulls, polars gives NaN for them and the NaNs are dropped: 5x cheaper than
    ``drop_nulls().to_numpy()`` and the same sketch (KLL skips a NaN value anyway)."""
    values = column.to_numpy()
    if nulls and values.dtype.kind == "f":
        values = values[~np.isnan(values)]
    elif nulls:
        values = column.drop_nulls().to_numpy()
    return np.require(values, np.float64, ["C", "W"])


def other_copy(sketch: ds.hll_sketch) -> ds.hll_sketch:
    return sketches.hll_load(sketches.hll_bytes(sketch))


@register_family
class DistributionState(FamilyState):
    family = "distribution"

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        self.fields: dict[str, FieldDistribution] = {}

    def _field(self, path: str) -> FieldDistribution:
        state = self.fields.get(path)
        if state is None:
            state = self.fields[path] = FieldDistribution()
        return state

    def update(self, batch: ColumnBatch) -> None:
        frame = batch.frame
        stats = column_stats(batch)
        for path, type_name in batch.types.items():
            if type_name in ("null", "array", "bytes") or path == self.spec.event_time:
                continue
            column_stats_ = stats[path]
            present = batch.n - column_stats_.nulls
            if present <= 0:
                continue
            state = self._field(path)
            if type_name in NUMERIC_TYPES:
                state.add_numbers(_numbers(frame.get_column(path), column_stats_.nulls),
                                  column_stats_)
            elif type_name == "string":
                state.length_sum += int(column_stats_.length_sum)
                state.strings += present
                items, counts = value_counts(batch, path)
                state.add_counts(items, counts, items)
            elif type_name == "boolean":
                trues = int(column_stats_.true_count)
                state.true_count += trues
                state.booleans += present
                pairs = [("true", trues), ("false", present - trues)]
                pairs = sorted((i for i in pairs if i[1]), key=lambda i: -i[1])
                state.add_counts([i[0] for i in pairs], [i[1] for i in pairs], None)

    def merge(self, other: DistributionState) -> DistributionState:
        for path, theirs in other.fields.items():
            self._field(path).merge(theirs)
        return self

    def to_bytes(self) -> bytes:
        blobs = BlobTable()
        header = {path: state.to_header(blobs) for path, state in sorted(self.fields.items())}
        return pack(header, blobs.blobs)

    @classmethod
    def from_bytes(cls, spec: DatasetSpec, data: bytes) -> DistributionState:
        header, blobs = unpack(data)
        state = cls(spec)
        state.fields = {p: FieldDistribution.from_header(h, blobs) for p, h in header.items()}
        return state

    def points(self) -> list[MetricPoint]:
        points: list[MetricPoint] = []
        for path, state in sorted(self.fields.items()):
            points += state.points(path)
        return points
