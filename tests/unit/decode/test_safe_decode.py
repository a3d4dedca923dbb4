"""A decoder must not raise; when one does anyway (a bug met by one value), the values
that make it raise are found and reported ``undecodable``, and the others are decoded:
one poison record used to stop the worker, and again after every restart."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytest

from dqpulse.aggregate import PartitionAggregator
from dqpulse.decode import safe_decode
from dqpulse.decode.json import JsonDecoder
from dqpulse.records import RawMessage
from dqpulse.spec import DatasetSpec

SPEC = DatasetSpec(name="d", topic="t", event_time="ts", window=60.0)


class Raising(JsonDecoder):
    """The JSON decoder, with a bug met by values containing ``poison`` (and, with
    ``together``, by any batch holding two values or more)."""

    def __init__(self, *, together: bool = False) -> None:
        super().__init__(SPEC)
        self.together = together
        self.calls = 0

    def decode(self, values: Sequence[bytes], sizes: np.ndarray | None = None):
        self.calls += 1
        if any(b"poison" in v for v in values) or (self.together and len(values) > 1):
            raise KeyError("a bug")
        return super().decode(values, sizes)


def test_the_values_that_make_the_decoder_raise_are_undecodable_and_the_rest_decoded(caplog):
    values = [b'{"a": %d}' % i for i in range(64)]
    values[5], values[40] = b'{"poison": 1}', b'{"a": "poison"}'
    values[41] = b"not json"
    decoder = Raising()
    with caplog.at_level(logging.ERROR):
        result = safe_decode(decoder, values)
    assert [(f.index, f.reason) for f in result.failures] == [
        (5, "undecodable"), (40, "undecodable"), (41, "invalid_json")]
    assert result.failures[0].detail == "the decoder raised KeyError: 'a bug'"
    assert result.rows.tolist() == [i for i in range(64) if i not in (5, 40, 41)]
    assert result.batch.frame["a"].to_list() == [i for i in range(64) if i not in (5, 40, 41)]
    assert decoder.calls <= 30  # halving, not one call per value
    assert "decoding a batch of 64 values raised" in caplog.text


def test_values_that_raise_only_together_are_each_reported():
    result = safe_decode(Raising(together=True), [b'{"a": 1}', b'{"a": 2}', b'{"a": 3}'])
    assert [(f.index, f.reason) for f in result.failures] == [
        (0, "undecodable"), (1, "undecodable"), (2, "undecodable")]
    assert result.batch.n == 0 and result.rows.tolist() == []


def test_a_clean_batch_is_one_call():
    decoder = Raising()
    assert safe_decode(decoder, [b'{"a": 1}']).batch.n == 1 and decoder.calls == 1


@pytest.mark.parametrize("depth", [300, 990, 1_023, 1_024, 2_000])
def test_a_record_nested_deeper_than_pythons_recursion_limit_counts(depth):
    """Nesting deeper than Python's recursion limit raised RecursionError out of the
    aggregator (the worker stopped, and again after each restart); the columnar path and
    the per-record one (after a bad value in the batch) now loop. A record nested deeper
    than orjson reads (1,024 objects) is invalid JSON on both, whatever batch it is in."""
    deep = b'{"ts": 10, "d": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
    for tail in ([], [b"not json"]):
        values = [b'{"ts": 10, "a": 1}', deep, b'{"ts": 11, "a": 2}', *tail]
        messages = [RawMessage("t", 0, i, 1_000_000, v) for i, v in enumerate(values)]
        report = PartitionAggregator(SPEC, 0).add(messages, now=1000.0)
        rejected = depth + 1 > 1_024  # the top-level object and ``depth`` nested ones
        assert report.accepted == 3 - rejected
        assert [(b.message.offset, b.reason) for b in report.bad] == (
            [(1, "invalid_json")] * rejected + [(3, "invalid_json")] * len(tail))


def test_running_out_of_memory_is_no_value_s_fault_and_propagates():
    class OutOfMemory(JsonDecoder):
        def decode(self, values, sizes=None):
            raise MemoryError

    with pytest.raises(MemoryError):
        safe_decode(OutOfMemory(SPEC), [b'{"a": 1}', b'{"a": 2}'])
