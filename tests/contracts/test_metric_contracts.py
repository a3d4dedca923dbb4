"""Every registered metric family passes the same checks (River's checks/ pattern)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from dqpulse.decode.json import JsonDecoder
from dqpulse.metrics import FAMILIES, WindowState
from dqpulse.spec import DatasetSpec, FieldSpec

SPEC = DatasetSpec(
    name="contract", topic="contract", key="id", label="label",
    fairness={"group": "g", "outcome": "ok"},
    fields={"x": FieldSpec(type="number", min=0, required=True),
            "s": FieldSpec(type="string", allowed=["a", "b"], pattern="^[ab]$")},
)


def batch(records, event_time=100.0):
    decoded = JsonDecoder(SPEC).decode([orjson.dumps(r) for r in records]).batch
    decoded.event_times = np.full(decoded.n, event_time)
    decoded.ingest_time = event_time + 1
    decoded.partition = 0
    return decoded


BATCHES = [
    [{"id": 1, "x": 1.5, "s": "a", "label": "p", "g": "m", "ok": True, "n": {"d": 1}}],
    [{"id": 2, "x": -2.0, "s": "c", "label": "q", "g": "f", "ok": False},
     {"id": 2, "x": None, "s": "", "label": "p", "g": "f", "ok": True, "extra": [1, 2]}],
    [{"id": 3, "s": "b", "new_field": "z", "n": {"d": "text"}}],
]


def values(state) -> list:
    """A comparable view of a family's points (floats rounded against float summation order)."""
    out = []
    for point in state.points():
        value = point.value if point.value is None else round(point.value, 9)
        out.append((point.metric, point.field, value))
    return sorted(out, key=repr)


def built(family, index):
    state = FAMILIES[family].zero(SPEC)
    state.update(batch(BATCHES[index]))
    return state


FAMILY_NAMES = sorted(FAMILIES)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_zero_is_the_identity_of_merge(family):
    state = built(family, 1)
    left = FAMILIES[family].zero(SPEC).merge(state.clone())
    right = state.clone().merge(FAMILIES[family].zero(SPEC))
    assert values(left) == values(state) == values(right)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_merge_is_associative(family):
    a, b, c = (built(family, i) for i in range(3))
    left = a.clone().merge(b.clone()).merge(c.clone())
    right = a.clone().merge(b.clone().merge(c.clone()))
    assert values(left) == values(right)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_merge_equals_updating_one_state(family):
    merged = built(family, 0).merge(built(family, 1)).merge(built(family, 2))
    single = FAMILIES[family].zero(SPEC)
    for records in BATCHES:
        single.update(batch(records))
    assert values(merged) == values(single)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_bytes_round_trip(family):
    state = built(family, 1).merge(built(family, 2))
    data = state.to_bytes()
    assert data == state.to_bytes()
    restored = FAMILIES[family].from_bytes(SPEC, data)
    assert values(restored) == values(state)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_clone_is_independent(family):
    state = built(family, 0)
    before = values(state)
    copy = state.clone()
    copy.update(batch(BATCHES[1]))
    assert values(state) == before


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_missing_and_new_fields_and_empty_batches_do_not_break_it(family):
    state = FAMILIES[family].zero(SPEC)
    state.update(batch([{"only": 1}]))
    state.update(batch([{"id": 9, "brand_new": {"deep": True}}]))
    empty = batch([{"id": 1}])
    state.update(empty.take(np.zeros(0, dtype=np.int64)))
    state.points()
    FAMILIES[family].from_bytes(SPEC, state.to_bytes()).points()


def test_window_state_round_trip_and_merge():
    states = [WindowState.zero(SPEC) for _ in BATCHES]
    for state, records in zip(states, BATCHES, strict=True):
        state.update(batch(records))
    merged = states[0].clone().merge(states[1]).merge(states[2])
    restored = WindowState.from_bytes(SPEC, merged.to_bytes())
    for name in FAMILIES:
        assert values(restored.families[name]) == values(merged.families[name])
