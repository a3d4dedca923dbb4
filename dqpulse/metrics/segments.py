"""Per-segment states: what each value of a dimension carries in a window, for root cause.

A *dimension* is a record field declared in the dataset's ``dimensions`` (producer,
country, app_version), plus ``kafka.partition``, which every dataset has, and
``kafka.key_prefix`` (the message key up to its first ``:/|._-``, at most
``segments.key_prefix_length`` characters) when ``dimensions`` lists it (extracting it
from every message costs ingest time, so it is opt-in). Per dimension, a table maps each
value to one row of additive statistics (``stat_columns``): the record count, and per declared field
its nulls, its rule violations (min, max, allowed, pattern) and, for numeric fields, the
sum and count of its values (so a segment's mean is ``sum / num``). Rows add, so the
state merges over partitions and windows like every other family.

Memory is bounded by ``segments.budget_kib``: each dimension keeps at most ``capacity``
values; when a table outgrows it, the values with the smallest record counts are folded
into the dimension's ``other`` row (counts never get lost: a table's rows plus ``other``
always sum to the window's totals). A heavy hitter of the window therefore keeps its own
row, a long tail becomes ``other``. DataSketches' frequent-items sketch tracks one weight
per item; a segment needs a vector of statistics per value, so the eviction is done here
on numpy rows. Per batch, one polars ``group_by`` over the records sums the statistics per
combination of the dimensions' values; each dimension's rows are summed from those
combinations (no per-record Python).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from dqpulse.metrics.base import FamilyState, register_family
from dqpulse.metrics.batchstats import column_stats
from dqpulse.metrics.codec import pack, unpack
from dqpulse.metrics.validity import pattern_matches
from dqpulse.records import NUMERIC_TYPES, ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec, FieldSpec

PARTITION = "kafka.partition"
KEY_PREFIX = "kafka.key_prefix"
NULL_VALUE = "(null)"
OTHER_VALUE = "(other)"
_ENTRY_OVERHEAD = 200  # bytes per kept value besides its stats row: str, dict slot, list slot
_MIN_CAPACITY = 16

Matrix = npt.NDArray[np.float64]


def dimensions_of(spec: DatasetSpec) -> list[str]:
    """The dimensions a dataset is sliced by: its declared record fields, the partition,
    then the message key's prefix when declared."""
    fields = [name for name in spec.dimensions if name not in (PARTITION, KEY_PREFIX)]
    return [*fields, PARTITION, *([KEY_PREFIX] if wants_key_prefix(spec) else [])]


def wants_key_prefix(spec: DatasetSpec) -> bool:
    """Whether the message key's prefix is a dimension (``kafka.key_prefix`` declared)."""
    return KEY_PREFIX in spec.dimensions


def _has_rules(field_spec: FieldSpec) -> bool:
    return any(v is not None for v in (field_spec.min, field_spec.max, field_spec.allowed,
                                        field_spec.pattern))


def stat_columns(spec: DatasetSpec) -> list[str]:
    """The additive statistics of one segment row, by name."""
    columns = ["count"]
    for path, field_spec in sorted(spec.fields.items()):
        columns.append(f"null:{path}")
        if _has_rules(field_spec):
            columns.append(f"viol:{path}")
        if field_spec.type in ("number", "integer"):
            columns += [f"sum:{path}", f"num:{path}"]
    return columns


def capacity_of(spec: DatasetSpec) -> int:
    """Values kept per dimension so that all tables fit in the dataset's budget."""
    per_entry = len(stat_columns(spec)) * 8 + spec.segments.max_value_length + _ENTRY_OVERHEAD
    budget = spec.segments.budget_kib * 1024
    return max(_MIN_CAPACITY, budget // (len(dimensions_of(spec)) * per_entry))


class SegmentTable:
    """Value -> statistics row of one dimension, with ``other`` for the evicted tail."""

    __slots__ = ("index", "other", "stats", "values")

    def __init__(self, width: int) -> None:
        self.values: list[str] = []
        self.index: dict[str, int] = {}
        self.stats: Matrix = np.zeros((0, width))
        self.other: Matrix = np.zeros(width)

    def add(self, values: list[str], rows: Matrix, capacity: int) -> None:
        """Add one row per value (values distinct), then keep the ``capacity`` largest."""
        positions = np.empty(len(values), dtype=np.int64)
        index, known = self.index, self.values
        fresh = 0
        for i, value in enumerate(values):
            at = index.get(value)
            if at is None:
                at = index[value] = len(known)
                known.append(value)
                fresh += 1
            positions[i] = at
        if fresh:
            self.stats = np.concatenate([self.stats, np.zeros((fresh, self.stats.shape[1]))])
        self.stats[positions] += rows
        if len(known) > capacity:
            self._evict(capacity)

    def _evict(self, capacity: int) -> None:
        order = np.argsort(-self.stats[:, 0], kind="stable")
        keep, drop = np.sort(order[:capacity]), order[capacity:]
        self.other = self.other + self.stats[drop].sum(axis=0)
        self.values = [self.values[i] for i in keep.tolist()]
        self.index = {value: i for i, value in enumerate(self.values)}
        self.stats = np.ascontiguousarray(self.stats[keep])

    def totals(self) -> Matrix:
        total: Matrix = self.stats.sum(axis=0) + self.other
        return total

    def rows(self) -> dict[str, Matrix]:
        """Every kept value's row, and ``(other)`` when anything was folded into it."""
        out = {value: self.stats[i] for i, value in enumerate(self.values)}
        if self.other.any():
            out[OTHER_VALUE] = self.other
        return out

    def nbytes(self) -> int:
        return (self.stats.nbytes + self.other.nbytes + sys.getsizeof(self.index)
                + sys.getsizeof(self.values) + sum(sys.getsizeof(v) for v in self.values))


def _align(rows: Matrix, source: list[str], target: list[str]) -> Matrix:
    if source == target:
        return rows
    out = np.zeros((*rows.shape[:-1], len(target)))
    where = {name: i for i, name in enumerate(source)}
    for j, name in enumerate(target):
        if name in where:
            out[..., j] = rows[..., where[name]]
    return out


@register_family
class SegmentState(FamilyState):
    family = "segments"

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        self.columns = stat_columns(spec)
        self.capacity = capacity_of(spec)
        self.tables = {name: SegmentTable(len(self.columns)) for name in dimensions_of(spec)}
        self._distinct: dict[str, int] = {}  # values per dimension in the last batch

    # -- update ------------------------------------------------------------------------
    def _statistics(self, batch: ColumnBatch) -> tuple[list[pl.Expr], list[int], list[int]]:
        """Per record, this batch's additive statistics (flags, values) as expressions; the
        index in ``columns`` of the record count and of each expression; and the indices
        of the statistics that equal the record count (nulls of a field the batch lacks)."""
        exprs: list[pl.Expr] = []
        where, copies = [0], []
        at = {name: i for i, name in enumerate(self.columns)}
        for path, field_spec in sorted(self.spec.fields.items()):
            kind = batch.types.get(path)
            if kind is None or kind == "null":
                copies.append(at[f"null:{path}"])
                continue
            column = pl.col(path)
            stats = [(f"null:{path}", column.is_null())]
            broken = _violation(batch, path, field_spec, kind)
            if broken is not None and f"viol:{path}" in at:
                stats.append((f"viol:{path}", broken))
            if f"sum:{path}" in at and kind in NUMERIC_TYPES:
                stats += [(f"sum:{path}", column.cast(pl.Float64).fill_null(0.0)),
                          (f"num:{path}", column.is_not_null())]
            for name, expr in stats:
                exprs.append(expr.alias(f"\x00{name}"))
                where.append(at[name])
        return exprs, where, copies

    def _dimension(self, batch: ColumnBatch, name: str) -> pl.Expr:
        """The batch's values of one dimension as they are (cut and named after grouping)."""
        if name == KEY_PREFIX and batch.key_prefixes is not None:
            return pl.lit(batch.key_prefixes)
        if name == KEY_PREFIX or batch.types.get(name) in (None, "null"):
            return pl.repeat(NULL_VALUE, batch.n, dtype=pl.String)
        return pl.col(name)

    def update(self, batch: ColumnBatch) -> None:
        """One polars query sums the statistics per combination of the dimensions' values
        (few rows for a batch of thousands of records); each dimension's rows are then
        summed from those: one ``group_by`` over the records instead of one per dimension.
        A dimension that had more than ``_JOINT_MAX`` values in the previous batch (a key
        prefix, an id-like field) would multiply the combinations: it gets its own query.
        Values are cut and nulls named on the combinations, not on every record."""
        if not batch.n:
            return
        names = [name for name in self.tables if name != PARTITION]
        if not names:  # only the partition, constant in a batch: the batch's own totals
            self.tables[PARTITION].add([str(batch.partition)], self._totals(batch)[None, :],
                                       self.capacity)
            return
        exprs, where, copies = self._statistics(batch)
        wide = [n for n in names if self._distinct.get(n, 0) > _JOINT_MAX]
        groups = [[n for n in names if n not in wide], *([n] for n in wide)]
        frame = batch.frame if batch.frame.width else pl.DataFrame({"_": np.zeros(batch.n)})
        aggs = [pl.len().alias("\x00count"),
                *(pl.col(e.meta.output_name()).sum() for e in exprs)]
        length = self.spec.segments.max_value_length

        def spread(matrix: Matrix) -> Matrix:  # [count, *exprs] -> every statistic
            rows = np.zeros((matrix.shape[0], len(self.columns)))
            rows[:, where] = matrix
            rows[:, copies] = matrix[:, :1]
            return rows

        for number, group in enumerate(groups):
            if number and not group:
                continue
            keys = [f"\x00dim{i}" for i in range(len(group))]
            query = frame.lazy().with_columns(
                *exprs, *(self._dimension(batch, n).alias(k)
                          for n, k in zip(group, keys, strict=True)))
            combos = (query.group_by(keys).agg(aggs) if keys else query.select(aggs)).collect()
            combos = combos.with_columns(
                pl.col(k).cast(pl.String).str.slice(0, length).fill_null(NULL_VALUE)
                for k in keys)
            sums = spread(combos.drop(keys).to_numpy())
            for name, key in zip(group, keys, strict=True):
                values, rows = _sum_by(combos, keys, key, sums, spread)
                self._distinct[name] = len(values)
                self.tables[name].add(values, rows, self.capacity)
            if not number:  # the first group has every record once: the partition's row
                self.tables[PARTITION].add([str(batch.partition)], sums.sum(axis=0)[None, :],
                                           self.capacity)

    def _totals(self, batch: ColumnBatch) -> Matrix:
        """The batch's statistics summed over all its records, from the column aggregates
        the other families share (``column_stats``): no query of its own but one select
        of rule violations when a field has rules. A batch of a few records (a fleet of
        partitions, each polled a little at a time) then costs microseconds here, not the
        milliseconds of a polars query."""
        row = np.zeros(len(self.columns))
        row[0] = batch.n
        at = {name: i for i, name in enumerate(self.columns)}
        stats = column_stats(batch)
        broken: list[tuple[int, pl.Expr]] = []
        for path, field_spec in sorted(self.spec.fields.items()):
            kind = batch.types.get(path)
            if kind is None or kind == "null":
                row[at[f"null:{path}"]] = batch.n
                continue
            column = stats[path]
            present = batch.n - column.nulls
            row[at[f"null:{path}"]] = column.nulls
            if f"sum:{path}" in at and kind in NUMERIC_TYPES:
                row[at[f"sum:{path}"]] = (column.mean or 0.0) * present
                row[at[f"num:{path}"]] = present
            if f"viol:{path}" in at:
                check = _violation(batch, path, field_spec, kind)
                if check is not None:
                    broken.append((at[f"viol:{path}"], check.sum().alias(f"\x00{path}")))
        if broken:
            counts = batch.frame.select_seq([expr for _, expr in broken]).row(0)
            for (index, _), count in zip(broken, counts, strict=True):
                row[index] = count or 0
        return row

    # -- merge, bytes --------------------------------------------------------------------
    def merge(self, other: SegmentState) -> SegmentState:
        for name, table in other.tables.items():
            mine = self.tables.get(name)
            if mine is None:  # a dimension the spec no longer declares
                continue
            mine.add(list(table.values), _align(table.stats, other.columns, self.columns),
                     self.capacity)
            mine.other = mine.other + _align(table.other, other.columns, self.columns)
        return self

    def to_bytes(self) -> bytes:
        names = sorted(self.tables)
        blobs: list[bytes] = []
        for name in names:
            table = self.tables[name]
            blobs += [table.stats.tobytes(), table.other.tobytes()]
        header = {"columns": self.columns, "dims": names,
                  "values": [self.tables[n].values for n in names]}
        return pack(header, blobs)

    @classmethod
    def from_bytes(cls, spec: DatasetSpec, data: bytes) -> SegmentState:
        header, blobs = unpack(data)
        state = cls(spec)
        columns: list[str] = header["columns"]
        width = len(columns)
        for i, (name, values) in enumerate(zip(header["dims"], header["values"], strict=True)):
            stats = np.frombuffer(blobs[2 * i], dtype=np.float64).reshape(len(values), width)
            other = np.frombuffer(blobs[2 * i + 1], dtype=np.float64)
            table = state.tables.get(name)
            if table is None:  # a dimension the spec no longer declares
                continue
            table.add(list(values), _align(stats, columns, state.columns), state.capacity)
            table.other = table.other + _align(other, columns, state.columns)
        return state

    def points(self) -> list[MetricPoint]:
        return []  # read by root-cause attribution, not a series of its own

    # -- reading -------------------------------------------------------------------------
    def nbytes(self) -> int:
        """What the tables hold in memory (numpy rows, values, their index)."""
        return sum(table.nbytes() for table in self.tables.values())

    def scaled(self, factor: float) -> SegmentState:
        """A copy with every statistic multiplied by ``factor`` (a per-window average)."""
        copy = self.clone()
        for table in copy.tables.values():
            table.stats = table.stats * factor
            table.other = table.other * factor
        return copy

    def column(self, name: str) -> int | None:
        try:
            return self.columns.index(name)
        except ValueError:
            return None

    def describe(self) -> dict[str, Any]:
        return {name: len(table.values) for name, table in self.tables.items()}


_SMALL = 4096  # combinations summed per dimension in numpy; more: by polars
_JOINT_MAX = 100  # values of a dimension in a batch beyond which it is grouped on its own


def _sum_by(combos: pl.DataFrame, keys: list[str], key: str, sums: Matrix,
            spread: Callable[[Matrix], Matrix]) -> tuple[list[str], Matrix]:
    """The statistics of every combination of values (``combos``, and as ``sums`` rows)
    added up per value of the dimension ``key``, values sorted."""
    if combos.height > _SMALL:  # many distinct values: hashing in polars beats a dict
        grouped = (combos.drop([k for k in keys if k != key]).group_by(key).sum()
                   .sort(key))
        return grouped.get_column(key).to_list(), spread(grouped.drop(key).to_numpy())
    index: dict[str, int] = {}
    codes = [index.setdefault(value, len(index)) for value in combos.get_column(key).to_list()]
    rows = np.zeros((len(index), sums.shape[1]))
    np.add.at(rows, codes, sums)
    values = sorted(index)
    return values, rows[[index[value] for value in values]]


def _violation(batch: ColumnBatch, path: str, field_spec: FieldSpec,
               kind: str) -> pl.Expr | None:
    """Per record: does its (non-null) value break a min/max/allowed/pattern rule?"""
    column = pl.col(path)
    checks: list[pl.Expr] = []
    numeric = kind in NUMERIC_TYPES
    if field_spec.min is not None and numeric:
        checks.append(column < field_spec.min)
    if field_spec.max is not None and numeric:
        checks.append(column > field_spec.max)
    if field_spec.allowed is not None:
        allowed = [v for v in field_spec.allowed
                   if (isinstance(v, str) and kind == "string")
                   or (not isinstance(v, str | bool) and numeric)
                   or (isinstance(v, bool) and kind == "boolean")]
        checks.append(~column.is_in(allowed))
    if field_spec.pattern is not None and kind == "string":
        # the validity family matched this batch already (a native or Python regex)
        checks.append(~pl.lit(pattern_matches(batch, path, field_spec.pattern)))
    if not checks:
        return None
    broken = checks[0]
    for check in checks[1:]:
        broken = broken | check
    return broken.fill_null(False)
