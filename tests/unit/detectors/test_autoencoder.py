from __future__ import annotations

import random

import pytest

pytest.importorskip("torch")

from dqpulse.detectors.autoencoder import AutoencoderDetector  # noqa: E402

FEATURES = [f"m{i}" for i in range(8)]


def window(rng: random.Random, shift: dict[str, float] | None = None) -> dict[str, float]:
    level = rng.gauss(100, 5)
    x = {name: level * (i + 1) + rng.gauss(0, 2) for i, name in enumerate(FEATURES)}
    for name, delta in (shift or {}).items():
        x[name] += delta
    return x


def trained(seed: int = 0, n: int = 300) -> AutoencoderDetector:
    rng = random.Random(seed)
    detector = AutoencoderDetector(device="cpu", warm_up=64, batch_size=32, seed=seed)
    for _ in range(n):
        x = window(rng)
        detector.score_one(x)
        detector.learn_one(x)
    return detector


def test_autoencoder_flags_a_shifted_feature_and_attributes_it() -> None:
    detector = trained()
    rng = random.Random(9)
    normal = [detector.score_one(window(rng)) for _ in range(50)]
    assert sum(s >= detector.threshold for s in normal) <= 1
    broken = window(rng, {"m3": 150.0})
    assert detector.score_one(broken) >= detector.threshold
    explanation = detector.explain(broken)
    assert explanation["top_feature"] == "m3"
    assert explanation["direction"] == "up"


def test_autoencoder_false_positive_feedback_lowers_the_score() -> None:
    detector = trained()
    x = window(random.Random(4), {"m1": 60.0})
    before = detector.score_one(x)
    detector.feedback(x, "false_positive")
    assert detector.score_one(x) < before


def test_autoencoder_confirmed_feedback_removes_the_window_from_the_buffer() -> None:
    detector = AutoencoderDetector(device="cpu", warm_up=10, learn_anomalies=True)
    rng = random.Random(1)
    for _ in range(20):
        detector.learn_one(window(rng))
    spike = window(rng, {"m0": 1e4})
    detector.learn_one(spike)
    size = detector._buffer_len
    detector.feedback(spike, "confirmed")
    assert detector._buffer_len == size - 1


def test_values_whose_squares_overflow_leave_the_model_finite() -> None:
    """A producer's 1e160 (or an overflowed metric) is read as 1e100, as the streaming
    detectors read it: the running mean and spread stay finite, so the model is not blind
    (inf, then NaN) for every later window."""
    import warnings

    import numpy as np

    detector = AutoencoderDetector(device="cpu", warm_up=64, batch_size=32, seed=0)
    rng = random.Random(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in numpy raised before the fix
        for k in range(120):  # learned while warming up
            x = window(rng, {"m2": 1e160 if k % 2 else -1e160} if k % 10 == 0 else None)
            detector.score_one(x)
            detector.learn_one(x)
    assert np.isfinite(detector._mean).all() and np.isfinite(detector._m2).all()
    assert 0.0 <= detector.score_one(window(rng)) <= 1.0


def test_a_lasting_change_is_adopted_though_some_windows_score_under_the_threshold() -> None:
    # relearn_after (the finalize step sets two hours of windows) learns anomalies once
    # they are most of the recent windows: a change interrupted by a normal-looking
    # window every eighth one is adopted all the same (a run counted window by window
    # started over at each of them and never reached relearn_after).
    detector = trained()
    detector.relearn_after = 24
    rng = random.Random(11)
    flags = []
    for i in range(500):
        x = window(rng, None if i % 8 == 7 else {"m3": 150.0})
        flags.append(detector.score_one(x) >= detector.threshold)
        detector.learn_one(x)
    assert all(flags[:20:8]) and sum(flags[:23]) >= 18
    assert sum(flags[-100:]) <= 5


def test_a_short_incident_is_not_learned() -> None:
    detector = trained()
    detector.relearn_after = 24
    rng = random.Random(12)
    for _ in range(10):  # ten windows of a defect, then normal ones
        x = window(rng, {"m3": 150.0})
        assert detector.score_one(x) >= detector.threshold
        detector.learn_one(x)
    for _ in range(20):
        x = window(rng)
        detector.score_one(x)
        detector.learn_one(x)
    assert detector.score_one(window(rng, {"m3": 150.0})) >= detector.threshold
    restored = AutoencoderDetector.from_bytes(detector.to_bytes())
    assert restored._anomaly_share == detector._anomaly_share > 0.0
