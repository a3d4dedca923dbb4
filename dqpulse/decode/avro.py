"""Avro decoder: plain Avro with a declared writer schema, or the Confluent wire format.

Confluent framing is one magic byte ``0``, a 4-byte big-endian schema id, then the Avro
body; the schema comes from a registry lookup callable (``schema_id -> schema dict``),
cached per id. A value that does not start with the magic byte, or whose body does not
match its schema, is an ``avro_decode`` failure; an id the lookup cannot resolve is
``unknown_schema``. Avro has no columnar batch reader for schemaless values, so records
are decoded one by one (fastavro's C reader) and then built into columns.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from fastavro import parse_schema, schemaless_reader

from dqpulse.decode import (
    DecodeFailure,
    DecodeResult,
    decode_each,
    no_records,
    register_decoder,
)
from dqpulse.decode.columns import batch_from_records
from dqpulse.spec import DatasetSpec

SchemaLookup = Callable[[int], Mapping[str, Any]]
_HEADER = struct.Struct(">bI")


class AvroDecoder:
    """Decodes Avro records, plain (``schema``) or Confluent-framed (``schema_lookup``).

    >>> import io
    >>> from fastavro import schemaless_writer
    >>> schema = {"type": "record", "name": "r", "fields": [{"name": "a", "type": "long"}]}
    >>> buffer = io.BytesIO(); schemaless_writer(buffer, schema, {"a": 7})
    >>> result = AvroDecoder(schema=schema).decode([buffer.getvalue()])
    >>> result.batch.frame["a"].to_list()
    [7]
    """

    format = "avro"

    def __init__(
        self,
        spec: DatasetSpec | None = None,
        *,
        schema: Mapping[str, Any] | None = None,
        schema_lookup: SchemaLookup | None = None,
    ) -> None:
        declared = schema if schema is not None else (spec.avro_schema if spec else None)
        if declared is None and schema_lookup is None:
            raise ValueError("an Avro decoder needs a declared schema or a schema_lookup")
        self._schema = parse_schema(dict(declared)) if declared is not None else None
        self._lookup = schema_lookup
        self._by_id: dict[int, Any] = {}

    def _schema_for(self, schema_id: int) -> Any:
        parsed = self._by_id.get(schema_id)
        if parsed is None:
            assert self._lookup is not None
            parsed = self._by_id[schema_id] = parse_schema(dict(self._lookup(schema_id)))
        return parsed

    def _decode_one(self, value: bytes) -> dict[str, Any] | DecodeFailure:
        if not value:
            return DecodeFailure(0, "empty", "zero-length value")
        if self._lookup is not None:
            if len(value) < 5 or value[0] != 0:
                return DecodeFailure(0, "avro_decode", "no Confluent magic byte 0 + schema id")
            _, schema_id = _HEADER.unpack_from(value)
            try:
                schema = self._schema_for(schema_id)
            except Exception as exc:  # the lookup is user code: any failure is "unknown"
                return DecodeFailure(0, "unknown_schema", f"schema id {schema_id}: {exc}")
            body = io.BytesIO(value[5:])
        else:
            schema = self._schema
            body = io.BytesIO(value)
        try:
            record = schemaless_reader(body, schema, None)
        except Exception as exc:  # fastavro raises many types on corrupt input
            return DecodeFailure(0, "avro_decode", f"{type(exc).__name__}: {exc}")
        if body.tell() != len(body.getbuffer()):
            return DecodeFailure(0, "avro_decode", "trailing bytes after the record")
        if not isinstance(record, dict):
            return DecodeFailure(0, "not_an_object", "the schema's top level is not a record")
        return record

    def decode(self, values: Sequence[bytes],
               sizes: npt.NDArray[np.int64] | None = None) -> DecodeResult:
        records, rows, failures = decode_each(values, self._decode_one)
        if sizes is None or len(rows) != len(values):
            sizes = np.fromiter((len(values[i]) for i in rows), dtype=np.int64, count=len(rows))
        if not records:
            return no_records(rows, sizes, failures)
        zeros = np.zeros(len(rows), dtype=np.float64)
        return DecodeResult(batch_from_records(records, sizes, zeros), rows, failures)


register_decoder("avro", AvroDecoder)
