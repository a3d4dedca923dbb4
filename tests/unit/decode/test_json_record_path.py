"""The msgspec path of the JSON decoder yields exactly what Arrow's reader path yields.

Two decoders see the same batches: one may take the msgspec path, the other never does.
Every result must be equal (rows, failures and their reasons, column types, values,
other types), whichever path a batch took.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pyarrow as pa

from dqpulse.decode import DecodeResult
from dqpulse.decode.json import FIRST_BATCH_PREFIX, RECORD_PATH_RETRY_BATCHES, JsonDecoder
from dqpulse.spec import DatasetSpec

SPEC = DatasetSpec(name="d", topic="t")


class ArrowOnlyDecoder(JsonDecoder):
    """The decoder as it was before the msgspec path."""

    def _learn_schema(self, schema: pa.Schema) -> None:
        super()._learn_schema(schema)
        self._records = None


FLOATS = [0.0, -0.0, 1.0, -2.5, 1e-7, 123456.789, 1.7976931348623157e308, 5e-324,
          2.2250738585072014e-308, 0.1 + 0.2, 1e22, 9007199254740993.0, -1e-300]
STRINGS = ["", "x", "ünïcödé", "tab\there", 'quote"inside', "back\\slash", "😀 emoji",
           "\u2028 line separator", "a" * 300]


def _record(rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": rng.randrange(-2**63, 2**63),
        "amount": rng.choice([rng.gauss(100, 30), rng.choice(FLOATS), rng.randrange(1000)]),
        "name": rng.choice(STRINGS),
        "flag": rng.random() < 0.5,
        "score": round(rng.random(), rng.randrange(1, 17)),
    }
    for key in list(record):
        roll = rng.random()
        if roll < 0.05:
            record[key] = None
        elif roll < 0.1:
            del record[key]
    return record


def _oddity(rng: random.Random, record: dict[str, Any]) -> bytes:
    """One value that the msgspec path must refuse or decode exactly as Arrow would."""
    kind = rng.randrange(15)
    if kind == 0:
        return orjson.dumps({**record, "new_field": 1})
    if kind == 1:
        return orjson.dumps({**record, "amount": "12.5"})
    if kind == 2:
        return orjson.dumps({**record, "id": 1.5})
    if kind == 3:
        return orjson.dumps({**record, "id": 2**64 - 1})
    if kind == 4:
        return orjson.dumps({**record, "flag": 1})
    if kind == 5:
        return orjson.dumps({**record, "name": {"nested": True}})
    if kind == 6:
        return b"[1, 2]"
    if kind == 7:
        return orjson.dumps(record)[:-1]  # truncated
    if kind == 8:
        return b"   "
    if kind == 9:
        return orjson.dumps(record, option=orjson.OPT_INDENT_2)  # raw newlines
    if kind == 10:
        return b'{"amount": NaN}'
    if kind == 11:
        return b'{"amount": 1e400}'
    if kind == 12:
        return orjson.dumps(record) + b" " + orjson.dumps(record)
    if kind == 13:
        return b'{"name": "raw\ttab"}'
    return b'{"name": "\\ud800"}'


def _assert_same(fast: DecodeResult, arrow: DecodeResult) -> None:
    assert fast.rows.tolist() == arrow.rows.tolist()
    assert [(f.index, f.reason) for f in fast.failures] == \
        [(f.index, f.reason) for f in arrow.failures]
    assert fast.batch.types == arrow.batch.types
    assert fast.batch.frame.columns == arrow.batch.frame.columns
    assert fast.batch.frame.dtypes == arrow.batch.frame.dtypes
    assert fast.batch.frame.equals(arrow.batch.frame)
    assert fast.batch.sizes.tolist() == arrow.batch.sizes.tolist()
    assert {p: {t: m.tolist() for t, m in masks.items()}
            for p, masks in fast.batch.other_types.items()} == \
        {p: {t: m.tolist() for t, m in masks.items()}
         for p, masks in arrow.batch.other_types.items()}


def test_the_record_path_decodes_exactly_what_arrows_reader_decodes():
    rng = random.Random(20261201)
    fast, arrow = JsonDecoder(SPEC), ArrowOnlyDecoder(SPEC)
    full = {"id": 1, "amount": 1.5, "name": "x", "flag": True, "score": 0.5}
    for decoder in (fast, arrow):  # learn the full schema first
        decoder.decode([orjson.dumps(full)])
    for round_ in range(400):
        values = [orjson.dumps(_record(rng)) for _ in range(rng.randrange(1, 40))]
        if round_ % 4 == 3:  # a batch with something the msgspec path must not accept
            values.insert(rng.randrange(len(values) + 1), _oddity(rng, _record(rng)))
        _assert_same(fast.decode(values), arrow.decode(values))
        if round_ % 50 == 49:  # a type change between batches, then back
            changed = [orjson.dumps({**full, "score": "high"})]
            _assert_same(fast.decode(changed), arrow.decode(changed))
    # most clean batches took the msgspec path (it retries a while after a refusal)
    assert fast.record_path_batches >= 150
    assert arrow.record_path_batches == 0


def test_a_first_batch_decodes_exactly_as_arrow_infers_it():
    rng = random.Random(11)
    taken = 0
    late_changes = [
        lambda r: {**r, "late_field": "x"},  # a field first seen after the prefix
        lambda r: {**r, "id": 2.5},  # an integer field that turns to numbers
        lambda r: {**r, "amount": "text"},  # a type change after the prefix
        lambda r: {**r, "flag": None, "name": None},  # nulls only: nothing changes
    ]
    for round_ in range(60):
        size = rng.randrange(4 * FIRST_BATCH_PREFIX, 8 * FIRST_BATCH_PREFIX)
        # every field in every record of the prefix, so that the prefix can type them all
        records = [{"id": rng.randrange(10**6), "amount": rng.gauss(100, 30),
                    "name": rng.choice(STRINGS), "flag": rng.random() < 0.5,
                    "score": round(rng.random(), 3)} for _ in range(size)]
        if round_ % 3:
            at = rng.randrange(FIRST_BATCH_PREFIX, size)
            records[at] = late_changes[round_ % len(late_changes)](records[at])
        if round_ % 5 == 0:  # integral numbers in a number field, after the prefix
            records[-1]["amount"] = 7
        if round_ % 7 == 0:  # a field holding only nulls in the prefix
            for record in records[:FIRST_BATCH_PREFIX]:
                record["score"] = None
        values = [orjson.dumps(record) for record in records]
        fast, arrow = JsonDecoder(SPEC), ArrowOnlyDecoder(SPEC)
        _assert_same(fast.decode(values), arrow.decode(values))
        taken += fast.record_path_batches
        # and the schema each learned reads the next batch alike
        following = [orjson.dumps(_record(rng)) for _ in range(20)]
        _assert_same(fast.decode(following), arrow.decode(following))
    assert taken >= 20


def test_exact_floats_survive_the_record_path():
    rng = random.Random(7)
    values = [orjson.dumps({"x": rng.uniform(-1e6, 1e6)}) for _ in range(2000)]
    values += [orjson.dumps({"x": x}) for x in FLOATS]
    fast, arrow = JsonDecoder(SPEC), ArrowOnlyDecoder(SPEC)
    for decoder in (fast, arrow):
        decoder.decode(values[:1])
    result = fast.decode(values)
    assert fast.record_path_batches == 1
    _assert_same(result, arrow.decode(values))
    assert result.batch.frame["x"].to_list() == [orjson.loads(v)["x"] for v in values]


def test_a_refused_batch_is_retried_on_the_record_path_after_a_while():
    decoder = JsonDecoder(SPEC)
    decoder.decode([b'{"a": 1}'])
    always_null = [b'{"a": 1}', b'{"a": 2, "sometimes": null}']  # a field not in the path
    decoder.decode(always_null)  # refused, read by Arrow, which learns the null column
    path = decoder._records
    assert path is not None
    tried = []
    read = path.read
    path.read = lambda *args: tried.append(1) or read(*args)  # type: ignore[method-assign]
    for _ in range(1 + RECORD_PATH_RETRY_BATCHES):
        result = decoder.decode(always_null)
        assert result.batch.types == {"a": "integer", "sometimes": "null"}
    assert len(tried) == 1  # refused once, then left alone for a while
    decoder.decode(always_null)
    assert len(tried) == 2
    assert decoder.record_path_batches == 0


def test_schemas_with_nested_lists_or_timestamps_keep_arrows_reader():
    decoder = JsonDecoder(SPEC)
    values = [b'{"a": {"b": 1}, "c": [1, 2], "t": "2026-12-01T10:00:00Z"}']
    decoder.decode(values)
    result = decoder.decode(values)
    assert decoder.record_path_batches == 0
    assert result.batch.types == {"a.b": "integer", "c": "array", "t": "timestamp"}


def test_a_repeated_key_keeps_its_last_value_as_the_per_record_path_does():
    fast, arrow = JsonDecoder(SPEC), ArrowOnlyDecoder(SPEC)
    for decoder in (fast, arrow):
        decoder.decode([b'{"id": 1}'])
    values = [b'{"id": 1, "id": 2}', b'{"id": 3}']
    assert fast.decode(values).batch.frame["id"].to_list() == [2, 3]
    assert fast.record_path_batches == 1
    assert arrow.decode(values).batch.frame["id"].to_list() == [2, 3]
