"""JSON decoder: a whole batch through Arrow's JSON reader, per-record orjson as fallback.

Fast path: the values are joined with newlines and read by ``pyarrow.json`` with the
schema learned from earlier batches (new fields are still inferred, so schema drift is
seen; a type change makes the read fail). When the read fails, the batch is read again
with full type inference; when that fails too, every value is parsed by ``orjson`` on its
own: bad values are split out with their reason, and the good ones are read columnar again,
or, if their types conflict, built into columns one value at a time, recording the types
seen (``ColumnBatch.other_types``). A value holding a raw newline breaks the line framing and
sends its batch the per-record way (``orjson`` parses it fine).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.json as pa_json

from dqpulse.decode import (
    DecodeFailure,
    DecodeResult,
    decode_each,
    no_records,
    register_decoder,
)
from dqpulse.decode.columns import DuplicatePaths, batch_from_arrow, batch_from_records
from dqpulse.jsonsafe import without_nul
from dqpulse.records import ColumnBatch
from dqpulse.spec import DatasetSpec

_READ_OPTIONS = pa_json.ReadOptions(block_size=1 << 26, use_threads=False)
#: a batch of at least two such blocks may be parsed block by block on Arrow's thread pool
#: (C++ threads, without the GIL); same table, same failures as one block
_PARALLEL_BLOCK = 1 << 19
_PARALLEL_OPTIONS = pa_json.ReadOptions(block_size=_PARALLEL_BLOCK, use_threads=True)
_parallel = False


def configure(*, threads: bool) -> None:
    """Parse large batches (>= 1 MiB of values) on Arrow's thread pool (process-wide;
    the worker sets it from ``DQPULSE_DECODE_THREADS``)."""
    global _parallel
    _parallel = threads


def classify_json_error(value: bytes, error: orjson.JSONDecodeError) -> tuple[str, str]:
    """(reason, detail) for a value orjson rejected: ``truncated`` or ``invalid_json``."""
    message = str(error)
    if message.startswith("unexpected end of data") or error.pos >= len(value.rstrip()):
        return "truncated", message
    return "invalid_json", message


#: JSON's names of what orjson gives for a top level that is not an object
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def parse_record(value: bytes) -> dict[str, Any] | DecodeFailure:
    """One value parsed by orjson, or why it is bad (index left 0 for the caller to set)."""
    if not value.strip():
        return DecodeFailure(0, "empty", "blank value")
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        reason, detail = classify_json_error(value, exc)
        return DecodeFailure(0, reason, detail)
    if not isinstance(record, dict):
        kind = _JSON_KINDS.get(type(record), type(record).__name__)
        return DecodeFailure(0, "not_an_object", f"top level is {kind}, not an object")
    return record


class JsonDecoder:
    """Decodes JSON objects (nested objects become dotted paths).

    >>> from dqpulse.spec import DatasetSpec
    >>> decoder = JsonDecoder(DatasetSpec(name="d", topic="t"))
    >>> result = decoder.decode([b'{"a": 1, "b": {"c": "x"}}', b'[1]', b'{"a": 2'])
    >>> result.batch.types, [(f.index, f.reason) for f in result.failures]
    ({'a': 'integer', 'b.c': 'string'}, [(1, 'not_an_object'), (2, 'truncated')])
    """

    format = "json"

    def __init__(self, spec: DatasetSpec | None = None) -> None:
        self._schema: pa.Schema | None = None
        self._read_schema: pa.Schema | None = None  # what the last read gave
        self.fallback_batches = 0  # batches that needed the per-record path

    def decode(self, values: Sequence[bytes],
               sizes: npt.NDArray[np.int64] | None = None) -> DecodeResult:
        n = len(values)
        if sizes is None or len(sizes) != n:
            sizes = np.fromiter(map(len, values), dtype=np.int64, count=n)
        zeros = np.zeros(n, dtype=np.float64)
        if n == 0:
            return DecodeResult(ColumnBatch.empty(), np.zeros(0, dtype=np.int64))
        data = b"\n".join(values)
        lengths = sizes  # of the values joined in ``data``
        if b"\\u0000" in data:  # rare; one scan of the batch finds it
            values = [without_nul(value) for value in values]
            data = b"\n".join(values)
            lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
        table = (None if _has_null_value(values, lengths, data)
                 else self._read_columnar(values, data))
        if table is not None:
            try:
                return DecodeResult(batch_from_arrow(table, sizes, zeros), np.arange(n))
            except DuplicatePaths:
                pass  # one path spelled two ways: the per-record way keeps the later key
        return self._decode_per_record(values, sizes)

    def _read_columnar(self, values: Sequence[bytes], data: bytes) -> pa.Table | None:
        # A value with a raw newline (pretty-printed JSON) or several objects breaks the
        # one-line-per-record framing: the read fails or the row count differs, and the
        # batch goes the per-record way. ``data``: the values joined by newlines.
        table = None
        if self._schema is not None:
            table = _read(data, self._schema)
        if table is None:
            table = _read(data, None)
        if table is None or table.num_rows != len(values) or not self._learn_schema(
                table.schema):
            return None
        return table

    def _learn_schema(self, schema: pa.Schema) -> bool:
        """Learn the schema of a read; False (nothing learned) when it nests deeper than
        orjson reads (:data:`MAX_DEPTH`): such a batch goes the per-record way, where those
        records are invalid JSON, so that a record is read alike whatever batch it is in."""
        # Null-typed columns (all null so far) are left to inference, or a later value
        # would be reported as a type change.
        if self._read_schema is not None and schema.equals(self._read_schema):
            return True  # the usual case: the batch had the schema learned before
        if _depth(schema) > MAX_DEPTH:
            return False
        self._read_schema = schema
        fields = [f for f in schema if not _has_null_type(f.type)]
        self._schema = pa.schema(fields)
        return True

    def _decode_per_record(self, values: Sequence[bytes], sizes: np.ndarray) -> DecodeResult:
        self.fallback_batches += 1
        records, rows, failures = decode_each(values, parse_record)
        good_sizes = sizes[rows]
        if not records:
            return no_records(rows, good_sizes, failures)
        zeros = np.zeros(len(rows), dtype=np.float64)
        # The bad values, or raw newlines, may have been all that broke the columnar read.
        try:
            table = _read(b"\n".join(orjson.dumps(r) for r in records), None)
        except orjson.JSONEncodeError:  # nested deeper than orjson writes (255 levels)
            table = None
        if (table is not None and table.num_rows == len(records)
                and self._learn_schema(table.schema)):
            try:
                return DecodeResult(batch_from_arrow(table, good_sizes, zeros), rows, failures)
            except DuplicatePaths:
                pass
        return DecodeResult(batch_from_records(records, good_sizes, zeros), rows, failures)


def _has_null_value(values: Sequence[bytes], lengths: npt.NDArray[np.int64],
                    data: bytes) -> bool:
    """Whether a value is JSON ``null`` (no record): Arrow's reader reads it as a row of
    nulls, and crashes the process (SIGSEGV, pyarrow 26) when it is the first line. Only
    values that do not start with ``{`` are looked at (their first bytes read at once from
    ``data``, the values of ``lengths`` joined by newlines): far cheaper than scanning the
    batch (0.03 ms for 10,000 values, against 10 ms for a regular expression)."""
    spans = lengths + 1
    starts = np.minimum(np.cumsum(spans) - spans, max(len(data) - 1, 0))
    first = np.frombuffer(data, dtype=np.uint8)[starts] if data else np.zeros(0, np.uint8)
    return any(values[int(i)].strip() == b"null" for i in np.flatnonzero(first != _BRACE))


_BRACE = ord("{")

#: the deepest nesting orjson reads (objects and arrays; deeper: "recursion limit")
MAX_DEPTH = 1024


def _nested(data_type: pa.DataType, depth: int = 1) -> Iterator[tuple[pa.DataType, int]]:
    """``data_type`` and every type nested in it (struct fields, list items), each with its
    depth: a loop, not recursion, so a record nested 2,000 levels deep is still a record."""
    pending = [(data_type, depth)]
    while pending:
        current, at = pending.pop()
        yield current, at
        if pa.types.is_struct(current):
            pending.extend((current.field(i).type, at + 1) for i in range(current.num_fields))
        elif pa.types.is_list(current) or pa.types.is_large_list(current):
            pending.append((current.value_type, at + 1))


def _depth(schema: pa.Schema) -> int:
    """How deep the schema's objects and arrays nest (a top-level object is 1)."""
    return max((at for f in schema for current, at in _nested(f.type, 2)
                if pa.types.is_struct(current) or pa.types.is_list(current)
                or pa.types.is_large_list(current)), default=1)


def _has_null_type(data_type: pa.DataType) -> bool:
    return any(pa.types.is_null(current) for current, _ in _nested(data_type))


def _read(data: bytes, schema: pa.Schema | None) -> pa.Table | None:
    if schema is None:
        options = pa_json.ParseOptions(newlines_in_values=False)
    else:
        options = pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="infer", newlines_in_values=False
        )
    read = (_PARALLEL_OPTIONS if _parallel and len(data) >= 2 * _PARALLEL_BLOCK
            else _READ_OPTIONS)
    try:
        return pa_json.read_json(io.BytesIO(data), read_options=read, parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


register_decoder("json", JsonDecoder)
