from __future__ import annotations

import random

import pytest

pytest.importorskip("torch")

from dqpulse.detectors.base import create  # noqa: E402
from dqpulse.detectors.scoring import ScoredPoint  # noqa: E402
from dqpulse.finalize.autoencoder import AutoencoderScorer, adopt_after  # noqa: E402
from dqpulse.spec import DatasetSpec  # noqa: E402


def _window(rng: random.Random, shifted: bool) -> list[ScoredPoint]:
    """A window's scored points: record counts and a category's share, which a rollout
    moves for good from 0.1 to 0.6."""
    records = rng.gauss(500, 20)
    share = rng.gauss(0.6 if shifted else 0.1, 0.01)
    return [ScoredPoint("volume.records", "", records, 0.0, False, "seasonal"),
            ScoredPoint("distribution.mean", "firmware", share, 0.0, False, "adaptive")]


def _flags(scorer: AutoencoderScorer, spec: DatasetSpec, saved: bytes | None,
           windows: int, shifted: bool, rng: random.Random) -> tuple[list[bool], bytes | None]:
    flags = []
    for i in range(windows):
        point, saved = scorer.score_window(spec, window_start=i * spec.window,
                                           scored=_window(rng, shifted), saved=saved)
        flags.append(point.anomalous)
    return flags, saved


def test_a_lasting_change_becomes_the_autoencoders_new_normal() -> None:
    # Anomalies are not learned: before session 51 a lasting change (a firmware rollout)
    # kept every later window anomalous. Now two hours of them (24 windows at 5 minutes)
    # are learned from, and the new normal scores low again.
    spec = DatasetSpec(name="devices", topic="devices", window=300)
    scorer, rng = AutoencoderScorer("cpu"), random.Random(4)
    before, saved = _flags(scorer, spec, None, 300, False, rng)
    after, saved = _flags(scorer, spec, saved, 400, True, rng)
    assert sum(before[100:]) <= 4
    assert all(after[:24])  # the change is anomalous while it is news
    assert sum(after[-100:]) <= 4

    # the same model without adoption (as states saved before it were) stays anomalous;
    # such a state takes the adoption up from its next window
    rng = random.Random(4)
    model = create("autoencoder", device="cpu")
    flags = []
    for i in range(700):
        vector = {f"{p.metric}|{p.field}": p.value for p in _window(rng, i >= 300)}
        flags.append(model.is_anomalous(model.score_one(vector)))
        model.learn_one(vector)
    assert all(flags[-100:])
    later, _ = _flags(AutoencoderScorer("cpu"), spec, model.to_bytes(), 300, True, rng)
    assert sum(later[-100:]) <= 4


def test_adoption_is_two_hours_and_at_least_24_windows() -> None:
    assert [adopt_after(w) for w in (30.0, 60.0, 300.0, 3600.0)] == [240, 120, 24, 24]
