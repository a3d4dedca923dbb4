from __future__ import annotations

import io
import struct

import pytest
from fastavro import schemaless_writer

from dqpulse.decode import decoder_for
from dqpulse.decode.avro import AvroDecoder
from dqpulse.spec import DatasetSpec

SCHEMA = {
    "type": "record", "name": "Order",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "amount", "type": ["null", "double"]},
        {"name": "country", "type": "string"},
        {"name": "device", "type": {"type": "record", "name": "Device",
                                    "fields": [{"name": "os", "type": "string"}]}},
    ],
}


def encode(record: dict, schema: dict = SCHEMA) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def confluent(schema_id: int, body: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + body


RECORDS = [
    {"id": 1, "amount": 9.5, "country": "DE", "device": {"os": "ios"}},
    {"id": 2, "amount": None, "country": "FR", "device": {"os": "web"}},
]


def test_plain_avro_with_declared_schema():
    spec = DatasetSpec(name="d", topic="t", format="avro", avro_schema=SCHEMA)
    result = decoder_for(spec).decode([encode(r) for r in RECORDS])
    assert result.failures == []
    assert result.batch.types == {"id": "integer", "amount": "number", "country": "string",
                                  "device.os": "string"}
    assert result.batch.frame["amount"].to_list() == [9.5, None]
    assert result.batch.frame["device.os"].to_list() == ["ios", "web"]


def test_confluent_wire_format_uses_the_registry_lookup_once_per_id():
    calls = []

    def lookup(schema_id: int) -> dict:
        calls.append(schema_id)
        if schema_id != 42:
            raise KeyError(schema_id)
        return SCHEMA

    decoder = AvroDecoder(schema_lookup=lookup)
    values = [confluent(42, encode(r)) for r in RECORDS] + [confluent(7, encode(RECORDS[0]))]
    result = decoder.decode(values)
    assert result.batch.frame["id"].to_list() == [1, 2]
    assert [(f.index, f.reason) for f in result.failures] == [(2, "unknown_schema")]
    assert calls == [42, 7]


def test_bad_avro_values_are_reported_not_raised():
    decoder = AvroDecoder(schema_lookup=lambda _: SCHEMA)
    good = confluent(1, encode(RECORDS[0]))
    values = [good, b"\x01\x00\x00\x00\x01abc", good[:8], good + b"\x00\x01", b""]
    result = decoder.decode(values)
    assert result.rows.tolist() == [0]
    assert [f.reason for f in result.failures] == [
        "avro_decode", "avro_decode", "avro_decode", "empty"]


def test_avro_needs_a_schema_or_a_lookup():
    with pytest.raises(ValueError):
        AvroDecoder()
