from __future__ import annotations

import orjson

from dqpulse.decode import decoder_for
from dqpulse.decode.json import JsonDecoder
from dqpulse.spec import DatasetSpec

SPEC = DatasetSpec(name="d", topic="t")


def test_nested_objects_become_dotted_paths():
    result = JsonDecoder(SPEC).decode([b'{"a": 1, "b": {"c": "x", "d": {"e": true}}}'])
    assert result.batch.types == {"a": "integer", "b.c": "string", "b.d.e": "boolean"}
    assert result.batch.frame.row(0) == (1, "x", True)
    assert result.failures == []


def test_a_nul_in_a_key_or_a_value_becomes_u_fffd_and_nothing_else_moves():
    """PostgreSQL text cannot hold NUL: a field named a\\u0000b failed every write of
    its data set's windows. Both decoding paths (columnar, and per record after a bad
    value) read it as U+FFFD; an escaped backslash before ``u0000`` stays text."""
    values = [rb'{"a\u0000b": 1, "s": "x\u0000y", "lit": "\\u0000", "n": {"k\u0000": 2}}',
              b'{"a": 2}']
    for batch in (values, [*values, b"not json"]):
        result = JsonDecoder(SPEC).decode(batch)
        frame = result.batch.frame
        assert set(result.batch.types) == {"a\ufffdb", "s", "lit", "n.k\ufffd", "a"}
        assert frame["s"].to_list()[0] == "x\ufffdy"
        assert frame["lit"].to_list()[0] == "\\u0000"
        assert result.rows.tolist() == [0, 1]


def test_bad_values_are_split_out_with_reasons_and_good_ones_kept():
    values = [b'{"a": 1}', b"[1, 2]", b'{"a": 2', b"not json", b'{"a": 3}', b"  ", b"5"]
    result = JsonDecoder(SPEC).decode(values)
    reasons = [(f.index, f.reason) for f in result.failures]
    assert reasons == [(1, "not_an_object"), (2, "truncated"), (3, "invalid_json"),
                       (5, "empty"), (6, "not_an_object")]
    assert result.rows.tolist() == [0, 4]
    assert result.batch.frame["a"].to_list() == [1, 3]
    assert result.batch.sizes.tolist() == [8, 8]


def test_a_json_null_value_is_not_an_object_wherever_it_is_in_the_batch():
    """Arrow's reader read a ``null`` line as a row of nulls (a record counted from
    nothing), and crashed the process (SIGSEGV) when it was the first line of a batch."""
    for values in ([b"null", b'{"a": 1}'], [b'{"a": 1}', b" null\r"], [b"null"]):
        result = JsonDecoder(SPEC).decode(values)
        [failure] = result.failures
        assert failure.reason == "not_an_object"
        assert failure.detail == "top level is null, not an object"
        assert result.batch.n == len(values) - 1
    kept = JsonDecoder(SPEC).decode([b'{"a": null}', b'{"a": "null"}'])  # values, not lines
    assert kept.failures == [] and kept.batch.n == 2


def test_one_path_spelled_two_ways_keeps_the_later_key_and_an_empty_key_is_named():
    """``"a.b"`` and ``"a": {"b"}`` flatten to one path: a column could not hold both
    (polars raised DuplicateError and the worker stopped). A top-level key "" became a
    column renamed behind the batch's back (the metrics then raised)."""
    result = JsonDecoder(SPEC).decode([b'{"a.b": 1, "a": {"b": 2}}', b'{"a": {"b": 3}}',
                                       b'{"": 4, "x": 5}'])
    assert result.failures == []
    assert result.batch.types == {"a.b": "integer", "(empty)": "integer", "x": "integer"}
    assert result.batch.frame["a.b"].to_list() == [2, 3, None]
    assert result.batch.frame["(empty)"].to_list() == [None, None, 4]
    assert list(result.batch.frame.columns) == list(result.batch.types)


def test_integers_beyond_64_bits_are_numbers_on_both_paths():
    """orjson reads integers up to 2**64 - 1; one beyond int64 in a column of integers
    made the per-record path's Int64 column raise (the batch was lost to the worker)."""
    mixed = [b'{"b": 1}', b'{"b": "x"}']  # Arrow cannot read these: value by value
    for tail in ([], [b"not json"], [b"not json", *mixed]):
        result = JsonDecoder(SPEC).decode([b'{"a": 9223372036854775808}', b'{"a": 1}',
                                           *tail])
        assert result.batch.types["a"] == "number"
        assert result.batch.frame["a"].to_list()[:2] == [9.223372036854775808e18, 1.0]


def test_type_change_inside_a_batch_keeps_the_majority_type_and_marks_the_others():
    values = [b'{"a": 1}', b'{"a": 2}', b'{"a": "x"}', b'{"a": null}']
    result = JsonDecoder(SPEC).decode(values)
    batch = result.batch
    assert batch.types["a"] == "integer"
    assert batch.frame["a"].to_list() == [1, 2, None, None]
    assert batch.other_types["a"]["string"].tolist() == [False, False, True, False]
    assert batch.present_count("a") == 3


def test_type_change_between_batches_is_reinferred_not_nulled():
    decoder = JsonDecoder(SPEC)
    decoder.decode([b'{"a": 1, "s": "x"}'])
    result = decoder.decode([b'{"a": 1.5, "s": 7}'])
    assert result.batch.types == {"a": "number", "s": "integer"}
    assert result.batch.frame.row(0) == (1.5, 7)
    assert decoder.fallback_batches == 0


def test_a_field_first_seen_deep_in_a_batch_is_not_lost():
    values = [orjson.dumps({"a": i}) for i in range(300)] + [b'{"a": 1, "late": "x"}']
    decoder = JsonDecoder(SPEC)
    decoder.decode(values[:10])  # learn a schema without "late"
    result = decoder.decode(values)
    assert result.batch.types["late"] == "string"
    assert result.batch.frame["late"].null_count() == 300


def test_pretty_printed_json_is_decoded():
    values = [b'{\n  "a": 1\n}', b'{"a": 2}']
    result = JsonDecoder(SPEC).decode(values)
    assert result.failures == []
    assert result.batch.frame["a"].to_list() == [1, 2]


def test_arrays_become_their_length():
    result = JsonDecoder(SPEC).decode([b'{"l": [1, 2, 3]}', b'{"l": []}', b'{"l": null}'])
    assert result.batch.types["l"] == "array"
    assert result.batch.frame["l"].to_list() == [3, 0, None]


def test_registry_returns_the_json_decoder():
    assert decoder_for(SPEC).format == "json"


def _decode_stream(batches: list[list[bytes]]) -> list[tuple[object, ...]]:
    """Everything a decoder gives for a stream of batches, comparable across settings."""
    decoder = JsonDecoder(SPEC)
    out: list[tuple[object, ...]] = []
    for values in batches:
        result = decoder.decode(values)
        batch = result.batch
        others = {p: {t: m.tolist() for t, m in o.items()}
                  for p, o in batch.other_types.items()}
        out.append((batch.types, batch.frame.to_dict(as_series=False), others,
                    result.rows.tolist(), [(f.index, f.reason) for f in result.failures]))
    return out


def test_large_batches_parsed_on_arrows_thread_pool_decode_exactly_alike():
    """``DQPULSE_DECODE_THREADS``: a batch of several 512 KiB blocks parsed in parallel gives
    the same columns, types, rows and failures as one block, with fields first seen in a
    later block, a type widened there, a nested object, and bad values."""
    from dqpulse.decode import json as json_decoding

    def record(i: int, batch: int) -> bytes:
        row: dict[str, object] = {"ts": 1e9 + i, "a": (i * 7919) % 1000 / 7, "b": i,
                                  "s": f"v{i % 13}", "pad": "x" * 200}
        if batch >= 1 and i > 6000:
            row["late_new"] = "n"  # first seen in a later block, beside a learned schema
        if batch == 2 and i > 7000:
            row["b"] = i + 0.5  # integer -> number in a later block
        if i % 2500 == 17:
            row["nested"] = {"k": i, "z": None}
        return orjson.dumps(row)

    batches = []
    for b in range(4):
        values = [record(i, b) for i in range(9000)]
        if b == 3:
            values[4000] = b'{"a": 1'  # a bad value sends the batch the per-record way
        batches.append(values)
    assert sum(map(len, batches[0])) > 4 * json_decoding._PARALLEL_BLOCK  # several blocks
    json_decoding.configure(threads=False)
    single = _decode_stream(batches)
    json_decoding.configure(threads=True)
    try:
        parallel = _decode_stream(batches)
    finally:
        json_decoding.configure(threads=False)
    # the cases happen
    assert "late_new" not in single[0][0] and "late_new" in single[1][0]
    assert single[1][0]["b"] == "integer" and single[2][0]["b"] == "number"
    assert single[3][4] == [(4000, "truncated")]
    assert parallel == single
