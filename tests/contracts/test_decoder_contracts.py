"""Every registered decoder: never raises on bad input, keeps row alignment, empty input."""

from __future__ import annotations

import io

import pytest
from fastavro import schemaless_writer

from dqpulse.decode import BAD_REASONS, decoder_for, registered_decoders
from dqpulse.spec import DatasetSpec

SCHEMA = {"type": "record", "name": "r", "fields": [{"name": "a", "type": "long"}]}


def avro(value: int) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, SCHEMA, {"a": value})
    return buffer.getvalue()


CASES = {
    "json": (DatasetSpec(name="d", topic="t"), [b'{"a": 1}', b'{"a": 2}']),
    "avro": (DatasetSpec(name="d", topic="t", format="avro", avro_schema=SCHEMA),
             [avro(1), avro(2)]),
}
GARBAGE = [b"\x00", b"\xff\xfe", b"{", b"[]", b"   ", b"null", b"\x00\x00\x00\x00\x01\x02"]


def test_every_registered_decoder_has_a_case():
    decoder_for(CASES["json"][0])  # registers all
    assert set(registered_decoders()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_garbage_is_reported_never_raised_and_rows_stay_aligned(name):
    spec, good = CASES[name]
    values = [good[0], *GARBAGE, good[1]]
    result = decoder_for(spec).decode(values)
    bad = {f.index for f in result.failures}
    assert all(f.reason in BAD_REASONS for f in result.failures)
    assert set(result.rows.tolist()) | bad == set(range(len(values)))
    assert not set(result.rows.tolist()) & bad
    assert result.rows.tolist()[0] == 0 and result.rows.tolist()[-1] == len(values) - 1
    assert result.batch.frame["a"].to_list()[0] == 1
    assert result.batch.frame["a"].to_list()[-1] == 2
    assert result.batch.n == len(result.rows)


@pytest.mark.parametrize("name", sorted(CASES))
def test_empty_input(name):
    spec, _ = CASES[name]
    result = decoder_for(spec).decode([])
    assert result.batch.n == 0 and result.failures == []
