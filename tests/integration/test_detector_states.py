"""Detector states saved and read back byte for byte, on Postgres (the updates as one
statement, every state cut from one bytea) and SQLite."""

from __future__ import annotations

import random

import pytest

from dqpulse.store import detector_states

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(store_engine: object) -> object:
    return store_engine


def test_states_round_trip_through_inserts_and_updates(engine):
    rng = random.Random(5)
    dataset = f"states{rng.randrange(10**6)}"
    # sizes from one byte to 40 KB; every byte value (a NUL, a quote, a backslash)
    states = {f"m{i}|f{i % 7}": bytes(rng.randrange(256) for _ in range(size))
              for i, size in enumerate([1, 2, 17, 500, 4096, 40_000, 3, 1, 999])}
    states["m9|"] = b"\x00\\'\"{},\\x00"
    with engine.begin() as conn:
        detector_states.save_all(conn, dataset=dataset, states=states, known=set())
    with engine.connect() as conn:
        assert detector_states.get_all(conn, dataset=dataset) == states
    # one round of updates (each a new size), beside one new series and one left alone
    updated = {key: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9000)))
               for key in list(states)[:-1]}
    updated["new|x"] = b"fresh"
    with engine.begin() as conn:
        detector_states.save_all(conn, dataset=dataset, states=updated, known=set(states))
    with engine.connect() as conn:
        assert detector_states.get_all(conn, dataset=dataset) == {**states, **updated}
        assert detector_states.get_all(conn, dataset=f"{dataset}-other") == {}
