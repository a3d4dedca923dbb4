"""Leaf value types shared by every layer: raw messages in, metric points out.

The columnar batch type that decoding produces lives here too (see ``ColumnBatch``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

#: Type names a decoded value can have (``observed_schema`` and the contract speak these).
TYPE_NAMES = ("array", "boolean", "bytes", "integer", "null", "number", "string", "timestamp")
#: Types whose column holds float64/int64 numbers (timestamps as epoch seconds).
NUMERIC_TYPES = frozenset({"integer", "number", "timestamp"})


#: The longest field name stored (``metric_points.field`` and the columns that copy it).
MAX_FIELD_CHARS = 500


def stored_field(name: str) -> str:
    """``name`` as metric points carry it: one longer than :data:`MAX_FIELD_CHARS` (a
    producer's 600-character key, a long label value in ``label=value``) is cut, and ends
    with an ellipsis and 12 hex digits of a digest of the whole name, so that two long
    names stay apart and a name maps to the same series in every window.

    >>> stored_field("amount")
    'amount'
    >>> cut = stored_field("k" * 600)
    >>> len(cut), cut[478:481], cut == stored_field("k" * 600) != stored_field("k" * 601)
    (493, 'kk…', True)
    """
    if len(name) <= MAX_FIELD_CHARS:
        return name
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"),
                             digest_size=6).hexdigest()
    return f"{name[:480]}\u2026{digest}"


def with_stored_fields(points: list[MetricPoint]) -> list[MetricPoint]:
    """``points``, with any field name too long to store cut (:func:`stored_field`); the
    same list when none is."""
    if all(len(p.field) <= MAX_FIELD_CHARS for p in points):
        return points
    return [p if len(p.field) <= MAX_FIELD_CHARS
            else dataclasses.replace(p, field=stored_field(p.field)) for p in points]


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


#: The key of :attr:`MetricPoint.extra` holding how many values a share is of, when not
#: of the window's records.
SHARE_OF = "values"


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One metric value of one dataset window; ``field`` is ``""`` for dataset-level metrics.

    A share of something other than the window's records (a field's values) says how many
    it is a share of in ``extra[SHARE_OF]``: the detectors weigh its counting noise by it.
    """

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
    #: when the records were polled: one time, or one per record (coalesced polls)
    ingest_time: float | npt.NDArray[np.float64] = 0.0
    partition: int = -1
    #: the Kafka offset of each record (for failing samples), when the source gave them
    offsets: npt.NDArray[np.int64] | None = None
    #: the message keys' prefixes (String, one per row; null without a key), for segments
    key_prefixes: pl.Series | None = None
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
            ingest_time=(self.ingest_time[rows] if isinstance(self.ingest_time, np.ndarray)
                         else self.ingest_time),
            partition=self.partition,
            offsets=None if self.offsets is None else self.offsets[rows],
            key_prefixes=None if self.key_prefixes is None else self.key_prefixes[rows],
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


_key_of_raw = operator.attrgetter("key")


class PartitionBatch:
    """One poll's messages of one partition, in offset order, held column by column.

    Sources fill the columns with C-level ``map`` calls where the client allows
    (confluent-kafka), so no Python object is built per message on the hot path: a
    ``RawMessage`` is made only for the record that needs one (``message``: a bad record
    on its way to the dead-letter topic). ``natives`` are the client's message objects,
    aligned with the columns, and ``key_of`` reads a message key from one of them.
    """

    __slots__ = ("topic", "partition", "values", "timestamps_ms", "offsets", "natives",
                 "key_of")

    def __init__(self, topic: str, partition: int, values: list[bytes | None],
                 timestamps_ms: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64],
                 natives: Sequence[Any] | None = None,
                 key_of: Callable[[Any], bytes | None] = _key_of_raw) -> None:
        self.topic = topic
        self.partition = partition
        self.values = values
        self.timestamps_ms = timestamps_ms
        self.offsets = offsets
        self.natives = natives
        self.key_of = key_of

    def __len__(self) -> int:
        return len(self.values)

    @property
    def first_offset(self) -> int:
        return int(self.offsets[0])

    @property
    def last_offset(self) -> int:
        return int(self.offsets[-1])

    def message(self, index: int) -> RawMessage:
        """The record at position ``index`` as a ``RawMessage`` (key included)."""
        key = None if self.natives is None else self.key_of(self.natives[index])
        return RawMessage(self.topic, self.partition, int(self.offsets[index]),
                          int(self.timestamps_ms[index]), self.values[index], key)

    def since(self, offset: int) -> PartitionBatch:
        """The messages at or after ``offset`` (offsets ascend within a partition)."""
        return self.part(int(np.searchsorted(self.offsets, offset, side="left")), len(self))

    def part(self, start: int, stop: int) -> PartitionBatch:
        """The messages at positions ``start`` up to ``stop`` (excluded)."""
        return PartitionBatch(
            self.topic, self.partition, self.values[start:stop],
            self.timestamps_ms[start:stop], self.offsets[start:stop],
            None if self.natives is None else self.natives[start:stop], self.key_of)

    @classmethod
    def concat(cls, batches: Sequence[PartitionBatch]) -> PartitionBatch:
        """Consecutive batches of one partition as one (in the order given)."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        natives: list[Any] | None = None
        if all(batch.natives is not None for batch in batches):
            natives = [native for batch in batches for native in batch.natives]  # type: ignore[union-attr]
        return cls(first.topic, first.partition,
                   [value for batch in batches for value in batch.values],
                   np.concatenate([batch.timestamps_ms for batch in batches]),
                   np.concatenate([batch.offsets for batch in batches]), natives,
                   first.key_of)

    @classmethod
    def from_messages(cls, messages: Sequence[RawMessage]) -> PartitionBatch:
        """A batch of ``RawMessage``s that all come from one partition."""
        n = len(messages)
        if n == 0:
            return cls("", -1, [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        first = messages[0]
        return cls(first.topic, first.partition, [m.value for m in messages],
                   np.fromiter((m.timestamp_ms for m in messages), dtype=np.int64, count=n),
                   np.fromiter((m.offset for m in messages), dtype=np.int64, count=n),
                   list(messages))


def group_by_partition(topics: list[str], partitions: npt.NDArray[np.int64],
                       values: list[bytes | None], timestamps_ms: npt.NDArray[np.int64],
                       offsets: npt.NDArray[np.int64], natives: list[Any],
                       key_of: Callable[[Any], bytes | None]) -> list[PartitionBatch]:
    """Split one poll's columns into a ``PartitionBatch`` per (topic, partition).

    Order within a partition is kept (stable grouping), so offsets stay ascending.
    """
    n = len(values)
    if n == 0:
        return []
    if topics.count(topics[0]) == n and bool((partitions == partitions[0]).all()):
        return [PartitionBatch(topics[0], int(partitions[0]), values, timestamps_ms, offsets,
                               natives, key_of)]
    names = sorted(set(topics))
    index = {name: i for i, name in enumerate(names)}
    codes = np.fromiter(map(index.__getitem__, topics), dtype=np.int64, count=n)
    codes = codes * (int(partitions.max()) + 1) + partitions
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
    out: list[PartitionBatch] = []
    for rows in np.split(order, bounds):
        picks = rows.tolist()
        first = picks[0]
        out.append(PartitionBatch(
            topics[first], int(partitions[first]), [values[i] for i in picks],
            timestamps_ms[rows], offsets[rows], [natives[i] for i in picks], key_of))
    return out


def batches_from_messages(messages: Sequence[RawMessage]) -> list[PartitionBatch]:
    """``RawMessage``s of any partitions as one ``PartitionBatch`` per partition."""
    n = len(messages)
    if n == 0:
        return []
    return group_by_partition(
        [m.topic for m in messages],
        np.fromiter((m.partition for m in messages), dtype=np.int64, count=n),
        [m.value for m in messages],
        np.fromiter((m.timestamp_ms for m in messages), dtype=np.int64, count=n),
        np.fromiter((m.offset for m in messages), dtype=np.int64, count=n),
        list(messages), _key_of_raw)
