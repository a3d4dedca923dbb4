"""Thin helpers around Apache DataSketches: construction, batch feeding, serialization.

Bounds (DataSketches' documented ones, for the parameters here):
- KLL doubles, k=200: normalized rank error about 1.33% (single quantile, 99% confidence).
- HLL, lg_k=12: relative standard error 1.04/sqrt(4096) ~ 1.6%.
- Frequent strings, lg_max_map_size=8: estimate error at most ~0.0137 x total weight,
  plus, because each batch feeds only its ``TOP_ITEMS_PER_BATCH`` most frequent values
  (exact counts), an undercount of at most the sum over batches of the batch's
  (TOP_ITEMS_PER_BATCH+1)-th largest count. Shares are taken against the exact count of
  values, tracked outside the sketch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import datasketches as ds
import numpy as np
import numpy.typing as npt

KLL_K = 200
HLL_LG_K = 12
FREQUENT_LG_MAX = 8
TOP_ITEMS_PER_BATCH = 100


def new_kll() -> ds.kll_doubles_sketch:
    return ds.kll_doubles_sketch(KLL_K)


def new_hll() -> ds.hll_sketch:
    return ds.hll_sketch(HLL_LG_K, ds.tgt_hll_type.HLL_8)


def new_frequent() -> ds.frequent_strings_sketch:
    return ds.frequent_strings_sketch(FREQUENT_LG_MAX)


def hll_feed(sketch: ds.hll_sketch, values: Iterable[Any]) -> None:
    deque(map(sketch.update, values), maxlen=0)


def hll_merge(left: ds.hll_sketch, right: ds.hll_sketch) -> ds.hll_sketch:
    union = ds.hll_union(HLL_LG_K)
    union.update(left)
    union.update(right)
    return union.get_result(ds.tgt_hll_type.HLL_8)


def kll_bytes(sketch: ds.kll_doubles_sketch) -> bytes:
    return bytes(sketch.serialize())


def kll_load(data: bytes) -> ds.kll_doubles_sketch:
    return ds.kll_doubles_sketch.deserialize(data)


def hll_bytes(sketch: ds.hll_sketch) -> bytes:
    return bytes(sketch.serialize_compact())


def hll_load(data: bytes) -> ds.hll_sketch:
    return ds.hll_sketch.deserialize(data)


def frequent_bytes(sketch: ds.frequent_strings_sketch) -> bytes:
    return bytes(sketch.serialize())


def frequent_load(data: bytes) -> ds.frequent_strings_sketch:
    return ds.frequent_strings_sketch.deserialize(data)


def frequent_items(sketch: ds.frequent_strings_sketch) -> list[tuple[str, float]]:
    """All active items with their estimates, largest first (ties by item)."""
    if sketch.is_empty():
        return []
    rows = sketch.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES, 0)
    return sorted(((str(r[0]), float(r[1])) for r in rows), key=lambda r: (-r[1], r[0]))


def quantiles(sketch: ds.kll_doubles_sketch, ranks: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The sketch's quantiles at ``ranks``; NaN for each when it is empty (a field whose
    values were all NaN, which KLL leaves out: an Avro double can be NaN)."""
    wanted = np.asarray(ranks, dtype=np.float64)
    if sketch.is_empty():
        return np.full(wanted.shape, np.nan)
    return np.asarray(sketch.get_quantiles(wanted), dtype=np.float64)
