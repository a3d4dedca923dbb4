"""JSON decoder: msgspec or Arrow's JSON reader for a whole batch, per-record orjson as fallback.

Fastest path: when the learned schema is flat and of plain types (integers, numbers,
strings, booleans), every value is decoded by ``msgspec`` into a record type made from
that schema, strictly (an unknown field, a value of another type, anything that is not one
JSON object fails it), and the columns are built from the records; about twice as fast as
Arrow's reader on records of 20 number fields (docs/benchmarks.md). A first batch (no
schema learned yet) takes it with the types Arrow infers from its first records. Whatever
it refuses takes the next path, so its result is always the one Arrow would give.

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
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.json as pa_json

from dqpulse.decode import (
    DecodeFailure,
    DecodeResult,
    decode_each,
    no_records,
    register_decoder,
)
from dqpulse.decode.columns import batch_from_arrow, batch_from_records
from dqpulse.records import ColumnBatch
from dqpulse.spec import DatasetSpec

_READ_OPTIONS = pa_json.ReadOptions(block_size=1 << 26, use_threads=False)


def classify_json_error(value: bytes, error: orjson.JSONDecodeError) -> tuple[str, str]:
    """(reason, detail) for a value orjson rejected: ``truncated`` or ``invalid_json``."""
    message = str(error)
    if message.startswith("unexpected end of data") or error.pos >= len(value.rstrip()):
        return "truncated", message
    return "invalid_json", message


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
        return DecodeFailure(0, "not_an_object", f"top level is {type(record).__name__}")
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
        self._records: RecordPath | None = None  # msgspec, for the learned schema
        self._records_skip = 0  # batches left before the msgspec path is tried again
        self.fallback_batches = 0  # batches that needed the per-record path
        self.record_path_batches = 0  # batches that took the msgspec path

    def decode(self, values: Sequence[bytes],
               sizes: npt.NDArray[np.int64] | None = None) -> DecodeResult:
        n = len(values)
        if sizes is None or len(sizes) != n:
            sizes = np.fromiter(map(len, values), dtype=np.int64, count=n)
        zeros = np.zeros(n, dtype=np.float64)
        if n == 0:
            return DecodeResult(ColumnBatch.empty(), np.zeros(0, dtype=np.int64))
        if self._read_schema is None and n >= 4 * FIRST_BATCH_PREFIX:
            batch = self._first_batch(values, sizes, zeros)
            if batch is not None:
                return DecodeResult(batch, np.arange(n))
        if self._records is not None:
            if self._records_skip:
                self._records_skip -= 1
            else:
                batch = self._records.read(values, sizes, zeros)
                if batch is not None:
                    self.record_path_batches += 1
                    return DecodeResult(batch, np.arange(n))
                # a new field, a type change, a bad value: Arrow's path decides; a schema
                # that keeps missing (a field that is always null) is tried less often
                self._records_skip = RECORD_PATH_RETRY_BATCHES
        table = self._read_columnar(values)
        if table is not None:
            return DecodeResult(batch_from_arrow(table, sizes, zeros), np.arange(n))
        return self._decode_per_record(values, sizes)

    def _first_batch(self, values: Sequence[bytes], sizes: npt.NDArray[np.int64],
                     zeros: npt.NDArray[np.float64]) -> ColumnBatch | None:
        """A first batch (no schema learned yet) on the msgspec path: the types inferred
        by Arrow's reader from its first records, then the whole batch decoded strictly
        with them. Every field of the batch must have been seen in the prefix with a
        value and keep its type (an integer field that later holds a number, a field
        first seen later or only as null so far: refused), so the columns, their order
        and their types are those Arrow infers from the whole batch."""
        table = _read(b"\n".join(values[:FIRST_BATCH_PREFIX]), None)
        if table is None or table.num_rows != FIRST_BATCH_PREFIX:
            return None
        path = RecordPath.for_schema(table.schema)
        batch = None if path is None else path.read(values, sizes, zeros)
        if batch is not None:
            self._learn_schema(table.schema)
            self.record_path_batches += 1
        return batch

    def _read_columnar(self, values: Sequence[bytes]) -> pa.Table | None:
        # A value with a raw newline (pretty-printed JSON) or several objects breaks the
        # one-line-per-record framing: the read fails or the row count differs, and the
        # batch goes the per-record way.
        data = b"\n".join(values)
        table = None
        if self._schema is not None:
            table = _read(data, self._schema)
        if table is None:
            table = _read(data, None)
        if table is None or table.num_rows != len(values):
            return None
        self._learn_schema(table.schema)
        return table

    def _learn_schema(self, schema: pa.Schema) -> None:
        # Null-typed columns (all null so far) are left to inference, or a later value
        # would be reported as a type change.
        if self._read_schema is not None and schema.equals(self._read_schema):
            return  # the usual case: the batch had the schema learned before
        self._read_schema = schema
        fields = [f for f in schema if not _has_null_type(f.type)]
        self._schema = pa.schema(fields)
        self._records = RecordPath.for_schema(self._schema)
        self._records_skip = 0

    def _decode_per_record(self, values: Sequence[bytes], sizes: np.ndarray) -> DecodeResult:
        self.fallback_batches += 1
        records, rows, failures = decode_each(values, parse_record)
        good_sizes = sizes[rows]
        if not records:
            return no_records(rows, good_sizes, failures)
        zeros = np.zeros(len(rows), dtype=np.float64)
        # The bad values, or raw newlines, may have been all that broke the columnar read.
        table = _read(b"\n".join(orjson.dumps(r) for r in records), None)
        if table is not None and table.num_rows == len(records):
            self._learn_schema(table.schema)
            return DecodeResult(batch_from_arrow(table, good_sizes, zeros), rows, failures)
        return DecodeResult(batch_from_records(records, good_sizes, zeros), rows, failures)


#: after the msgspec path refused a batch, how many batches go straight to Arrow's reader
RECORD_PATH_RETRY_BATCHES = 16
#: a first batch of at least 4x this many records is decoded on the msgspec path with the
#: types Arrow's reader infers from this many records
FIRST_BATCH_PREFIX = 128

# Arrow column type -> (msgspec field type, polars dtype, our type name) of the plain types
_PLAIN_TYPES: dict[pa.DataType, tuple[type, pl.DataType, str]] = {
    pa.int64(): (int, pl.Int64(), "integer"),
    pa.float64(): (float, pl.Float64(), "number"),
    pa.string(): (str, pl.String(), "string"),
    pa.bool_(): (bool, pl.Boolean(), "boolean"),
}


class RecordPath:
    """Decodes a batch whose records all fit one flat schema of plain types with msgspec.

    Each value is decoded on its own into a ``msgspec.Struct`` with one optional field per
    column (a missing key and ``null`` are both null, as in Arrow's reader), unknown
    fields forbidden and types strict, then the records are turned into columns. Any
    refusal (a new field, a type change, malformed JSON, an integer beyond int64, a raw
    newline) returns ``None`` and the batch takes Arrow's path, which yields what it always
    did. One leniency: a key repeated inside one object keeps its last value, where
    Arrow's reader refuses the batch and the per-record path (orjson) keeps the last value
    too.

    >>> path = RecordPath.for_schema(pa.schema([("a", pa.int64()), ("b", pa.string())]))
    >>> zeros = np.zeros(2)
    >>> batch = path.read([b'{"a": 1, "b": "x"}', b'{"b": null}'], np.array([18, 11]), zeros)
    >>> batch.frame.rows(), batch.types
    ([(1, 'x'), (None, None)], {'a': 'integer', 'b': 'string'})
    >>> path.read([b'{"a": 1, "c": 2}'], np.array([16]), zeros[:1]) is None  # a new field
    True
    >>> path.read([b'{"a": 1.5}'], np.array([10]), zeros[:1]) is None  # a type change
    True
    >>> RecordPath.for_schema(pa.schema([("t", pa.timestamp("s"))])) is None
    True
    """

    def __init__(self, names: list[str], kinds: list[tuple[type, pl.DataType, str]]) -> None:
        self.names = names
        self.dtypes = [dtype for _, dtype, _ in kinds]
        self.types = {name: type_name for name, (_, _, type_name) in zip(names, kinds,
                                                                         strict=True)}
        # attribute names f0, f1, ... renamed to the JSON keys: any key can be a field
        record = msgspec.defstruct(
            "Record", [(f"f{i}", kind | None, None) for i, (kind, _, _) in enumerate(kinds)],
            rename={f"f{i}": name for i, name in enumerate(names)},
            forbid_unknown_fields=True, gc=False)
        self._decode = msgspec.json.Decoder(record).decode

    @classmethod
    def for_schema(cls, schema: pa.Schema) -> RecordPath | None:
        """The path for ``schema``, or None when it has a nested, list, timestamp or
        other column this path does not decode (those batches take Arrow's reader)."""
        kinds = [_PLAIN_TYPES.get(f.type) for f in schema]
        if not kinds or any(kind is None for kind in kinds):
            return None
        return cls(schema.names, [kind for kind in kinds if kind is not None])

    def read(self, values: Sequence[bytes], sizes: npt.NDArray[np.int64],
             timestamps: npt.NDArray[np.float64]) -> ColumnBatch | None:
        if b"\n".join(values).count(b"\n") != len(values) - 1:
            return None  # a raw newline (pretty-printed JSON): Arrow's reader refuses it too
        try:
            records = list(map(self._decode, values))
            columns = zip(*map(msgspec.structs.astuple, records), strict=True)
            frame = pl.DataFrame([pl.Series(name, column, dtype=dtype) for name, dtype, column
                                  in zip(self.names, self.dtypes, columns, strict=True)])
        except (msgspec.DecodeError, TypeError, ValueError, OverflowError):
            # msgspec's ValidationError is a DecodeError; polars raises TypeError for an
            # integer beyond Int64
            return None
        return ColumnBatch(frame=frame, types=dict(self.types), sizes=sizes,
                           timestamps=timestamps)


def _has_null_type(data_type: pa.DataType) -> bool:
    if pa.types.is_null(data_type):
        return True
    if pa.types.is_struct(data_type):
        return any(_has_null_type(data_type.field(i).type) for i in range(data_type.num_fields))
    if pa.types.is_list(data_type):
        return _has_null_type(data_type.value_type)
    return False


def _read(data: bytes, schema: pa.Schema | None) -> pa.Table | None:
    if schema is None:
        options = pa_json.ParseOptions(newlines_in_values=False)
    else:
        options = pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="infer", newlines_in_values=False
        )
    try:
        return pa_json.read_json(io.BytesIO(data), read_options=_READ_OPTIONS,
                                 parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


register_decoder("json", JsonDecoder)
