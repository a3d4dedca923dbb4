"""Leaf value types shared by every layer: raw messages in, metric points out.

The columnar batch type that decoding produces lives here too (see ``ColumnBatch``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

#: Type names a decoded value can have (``observed_schema`` and the contract speak these).
TYPE_NAMES = ("array", "boolean", "bytes", "integer", "null", "number", "string", "timestamp")
#: Types whose column holds float64/int64 numbers (timestamps as epoch seconds).
NUMERIC_TYPES = frozenset({"integer", "number", "timestamp"})


class RawMessage(NamedTuple):
    """One Kafka message as the source hands it over, before decoding.

    Immutable; a named tuple because sources build one per message (three times cheaper to
    construct than a frozen dataclass, which matters at several 100k messages/s).
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One metric value of one dataset window; ``field`` is ``""`` for dataset-level metrics."""

    metric: str
    value: float | None
    field: str = ""
    extra: dict[str, object] = dataclasses.field(default_factory=dict)


@dataclass(slots=True)
class ColumnBatch:
    """Decoded records, column by column: what every metric consumes.

    ``frame`` holds one column per leaf field, named by its dotted path (``device.os``),
    with one row per record. ``types[path]`` is the type of that column's values
    (``TYPE_NAMES``): ``integer`` -> Int64, ``number``/``timestamp`` -> Float64 (epoch
    seconds for timestamps), ``string``/``bytes`` -> String, ``boolean`` -> Boolean,
    ``array`` -> Int64 holding the array length, ``null`` -> a column of nulls. A null
    in the frame means the value was JSON null or the key was missing (columnar parsers
    cannot tell the two apart), except where ``other_types`` says the row held a value of
    another type: such values (only from the per-record fallback, when a field's type
    changes inside one batch) are nulled in the frame and marked there, one boolean mask
    per other type, so they count as present but not as the column's type.
    """

    frame: pl.DataFrame
    types: dict[str, str]
    sizes: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.float64]
    other_types: dict[str, dict[str, npt.NDArray[np.bool_]]] = dataclasses.field(
        default_factory=dict)
    event_times: npt.NDArray[np.float64] | None = None
    ingest_time: float = 0.0
    partition: int = -1
    #: values derived from the batch once and shared by the metric families (per batch)
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.sizes.shape[0])

    def take(self, rows: npt.NDArray[np.int64]) -> ColumnBatch:
        """The records at ``rows`` (positions), with every per-record array sliced alike."""
        other = {
            path: {typ: mask[rows] for typ, mask in masks.items()}
            for path, masks in self.other_types.items()
        }
        return ColumnBatch(
            frame=self.frame[rows] if self.frame.width else pl.DataFrame(),
            types=self.types,
            sizes=self.sizes[rows],
            timestamps=self.timestamps[rows],
            other_types=other,
            event_times=None if self.event_times is None else self.event_times[rows],
            ingest_time=self.ingest_time,
            partition=self.partition,
        )

    def present_count(self, path: str) -> int:
        """Records in which ``path`` holds a non-null value of any type."""
        count = 0
        if path in self.frame.columns:
            count = self.n - self.frame[path].null_count()
        for mask in self.other_types.get(path, {}).values():
            count += int(mask.sum())
        return count

    @classmethod
    def empty(cls) -> ColumnBatch:
        return cls(
            frame=pl.DataFrame(),
            types={},
            sizes=np.zeros(0, dtype=np.int64),
            timestamps=np.zeros(0, dtype=np.float64),
        )
