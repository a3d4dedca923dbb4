"""Build ``ColumnBatch`` columns: from an Arrow table (fast path) or from dicts (fallback)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dqpulse.records import ColumnBatch

_POLARS_DTYPE: dict[str, pl.DataType] = {
    "integer": pl.Int64(),
    "number": pl.Float64(),
    "timestamp": pl.Float64(),
    "string": pl.String(),
    "bytes": pl.String(),
    "boolean": pl.Boolean(),
    "array": pl.Int64(),
    "null": pl.Null(),
}
# Where a field holds several types in one batch, the column keeps the most frequent one;
# ties go to the earlier type here.
_TYPE_ORDER = ("number", "integer", "string", "boolean", "timestamp", "array", "bytes")


def arrow_type_name(data_type: pa.DataType) -> str | None:
    """Our type name for an Arrow column type, or None for a struct (flattened away)."""
    if pa.types.is_struct(data_type):
        return None
    if pa.types.is_integer(data_type):
        return "integer"
    if pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return "number"
    if pa.types.is_boolean(data_type):
        return "boolean"
    if pa.types.is_null(data_type):
        return "null"
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return "array"
    if pa.types.is_timestamp(data_type):
        return "timestamp"
    return "string"


#: the path of a top-level key that is the empty string (a column cannot be named "")
EMPTY_KEY = "(empty)"


class DuplicatePaths(ValueError):
    """Two keys of the batch flatten to one path (``"a.b"`` and ``"a": {"b"}``): the
    columnar read cannot hold both; :func:`batch_from_records` keeps the later key of
    each record."""


def flatten_arrow(table: pa.Table) -> pa.Table:
    """Flatten nested structs into dotted-path columns, recursively."""
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    return table


def batch_from_arrow(
    table: pa.Table, sizes: npt.NDArray[np.int64], timestamps: npt.NDArray[np.float64]
) -> ColumnBatch:
    """A ColumnBatch from a (possibly nested) Arrow table of decoded records; raises
    :class:`DuplicatePaths` when two keys flatten to one path."""
    table = flatten_arrow(table)
    if "" in table.column_names or len(set(table.column_names)) < table.num_columns:
        paths = [name or EMPTY_KEY for name in table.column_names]
        if len(set(paths)) < len(paths):
            raise DuplicatePaths(sorted({p for p in paths if paths.count(p) > 1}))
        table = table.rename_columns(paths)
    types: dict[str, str] = {}
    arrays: list[pa.Array | pa.ChunkedArray] = []
    names: list[str] = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        type_name = arrow_type_name(column.type)
        if type_name is None:  # an empty struct: no leaf fields
            continue
        if type_name == "array":
            column = pc.list_value_length(column).cast(pa.int64())
        elif type_name == "timestamp":
            column = pc.divide(column.cast(pa.int64()).cast(pa.float64()), 1e6)
        elif type_name == "number" and not pa.types.is_float64(column.type):
            column = column.cast(pa.float64())
        elif type_name == "integer" and not pa.types.is_int64(column.type):
            column = column.cast(pa.int64())
        elif type_name == "string" and not pa.types.is_string(column.type):
            column = column.cast(pa.string())
        types[name] = type_name
        arrays.append(column)
        names.append(name)
    frame = pl.from_arrow(pa.table(arrays, names=names)) if names else pl.DataFrame()
    assert isinstance(frame, pl.DataFrame)
    return ColumnBatch(frame=frame, types=types, sizes=sizes, timestamps=timestamps)


_INT64_LIMIT = 2**63


def value_type(value: Any) -> str:
    """Our type name of one decoded Python value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        # beyond 64 bits (orjson reads up to 2**64 - 1) it is a number, as Arrow reads it
        return "integer" if -_INT64_LIMIT <= value < _INT64_LIMIT else "number"
    if isinstance(value, float | decimal.Decimal):
        return "number"
    if isinstance(value, str | uuid.UUID | dt.date | dt.time) and not isinstance(
        value, dt.datetime
    ):
        return "string"
    if isinstance(value, dt.datetime):
        return "timestamp"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, bytes | bytearray):
        return "bytes"
    return "string"


def _convert(value: Any, type_name: str) -> Any:
    if type_name == "timestamp":
        moment: dt.datetime = value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    if type_name == "array":
        return len(value)
    if type_name == "bytes":
        return bytes(value).hex()
    if type_name == "number":
        return float(value)
    if type_name == "string" and not isinstance(value, str):
        return value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)
    return value


def flatten_record(record: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    """Flatten nested objects of one record into ``out`` under dotted paths (in the
    record's key order: of two keys spelling one path, the later wins)."""
    # a stack, not recursion: a record nested deeper than Python's recursion limit is
    # still a record
    stack = [(iter(record.items()), prefix)]
    while stack:
        items, base = stack[-1]
        for key, value in items:
            path = f"{base}{key}" or EMPTY_KEY
            if isinstance(value, dict):
                stack.append((iter(value.items()), path + "."))
                break
            out[path] = value
        else:
            stack.pop()


def batch_from_records(
    records: Sequence[dict[str, Any]],
    sizes: npt.NDArray[np.int64],
    timestamps: npt.NDArray[np.float64],
) -> ColumnBatch:
    """A ColumnBatch from decoded records, one Python value at a time (the slow path).

    A field whose values have several types keeps its most frequent type in the frame
    (integers count as numbers where both occur, as Arrow's inference does); the other
    values are nulled there and marked in ``other_types``.
    """
    n = len(records)
    values: dict[str, list[Any]] = {}
    for row, record in enumerate(records):
        flat: dict[str, Any] = {}
        flatten_record(record, "", flat)
        for path, value in flat.items():
            column = values.get(path)
            if column is None:
                column = values[path] = [None] * n
            column[row] = value
    types: dict[str, str] = {}
    other_types: dict[str, dict[str, npt.NDArray[np.bool_]]] = {}
    series: list[pl.Series] = []
    for path, column in values.items():
        row_types = [value_type(v) for v in column]
        counts: dict[str, int] = {}
        for type_name in row_types:
            counts[type_name] = counts.get(type_name, 0) + 1
        counts.pop("null", None)
        if "integer" in counts and "number" in counts:
            counts["number"] += counts.pop("integer")
            row_types = ["number" if t == "integer" else t for t in row_types]
        if not counts:
            main = "null"
        else:
            main = max(counts, key=lambda t: (counts[t], -_TYPE_ORDER.index(t)))
        cells = [
            _convert(v, main) if t == main else None
            for v, t in zip(column, row_types, strict=True)
        ]
        for type_name in counts:
            if type_name != main:
                mask = np.fromiter((t == type_name for t in row_types), dtype=np.bool_, count=n)
                other_types.setdefault(path, {})[type_name] = mask
        types[path] = main
        series.append(pl.Series(path, cells, dtype=_POLARS_DTYPE[main]))
    frame = pl.DataFrame(series) if series else pl.DataFrame()
    return ColumnBatch(
        frame=frame, types=types, sizes=sizes, timestamps=timestamps, other_types=other_types
    )
