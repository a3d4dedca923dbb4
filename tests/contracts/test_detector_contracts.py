"""Every registered detector passes the same checks (River's ``checks/`` pattern)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from dqpulse.detectors import available, create
from dqpulse.detectors.base import Detector, _Learner
from dqpulse.detectors.scoring import detector_for
from dqpulse.spec import DatasetSpec

# Small settings so the whole suite stays fast; every other param is the default.
FAST_PARAMS: dict[str, dict[str, Any]] = {
    "seasonal": {"warm_up": 12},
    "robust": {"warm_up": 12},
    "hst": {"window_size": 20, "warm_up": 40, "n_trees": 5, "height": 6},
    "autoencoder": {"warm_up": 40, "device": "cpu", "batch_size": 16},
    "freshness_sla": {"sla_seconds": 300.0},
    "threshold": {"min": 0.0, "max": 200.0},
}
FEATURES = ("volume.records", "completeness.null_ratio", "distribution.mean")


def make(name: str) -> Detector:
    return create(name, **FAST_PARAMS.get(name, {}))


def stream(detector: Detector, n: int, seed: int = 0, start: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    points = []
    for i in range(start, start + n):
        t = i * 3600.0
        if detector.multivariate:
            points.append({"volume.records": rng.gauss(100, 5),
                           "completeness.null_ratio": abs(rng.gauss(0, 0.002)),
                           "distribution.mean": rng.gauss(50, 2), "t": t})
        else:
            level = 100 + 20 * math.sin(2 * math.pi * i / 24)
            points.append({"value": level + rng.gauss(0, 2), "t": t})
    return points


def extreme(detector: Detector, t: float) -> dict[str, Any]:
    if detector.multivariate:
        return {"volume.records": 1e6, "completeness.null_ratio": 1.0,
                "distribution.mean": -1e6, "t": t}
    return {"value": 1e6, "t": t}


def warm(detector: Detector) -> int:
    return detector.warm_up if isinstance(detector, _Learner) else 0


def train(detector: Detector, n: int | None = None) -> list[dict[str, Any]]:
    points = stream(detector, n if n is not None else warm(detector) + 40)
    for x in points:
        detector.score_one(x)
        detector.learn_one(x)
    return points


def probe_scores(detector: Detector) -> list[float]:
    """Scores of a fixed probe set, with no learning."""
    probes = stream(detector, 10, seed=99, start=5000)
    probes.append(extreme(detector, 5010 * 3600.0))
    return [detector.score_one(x) for x in probes]


DETECTORS = available()


@pytest.fixture(params=DETECTORS)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_builtin_detector_is_registered() -> None:
    expected = {"seasonal", "robust", "hst", "threshold", "freshness_sla", "schema_contract",
                "validity"}
    assert expected <= set(DETECTORS)


def test_score_one_before_any_learning_is_zero_or_a_rule(name: str) -> None:
    detector = make(name)
    x = stream(detector, 1)[0]
    score = detector.score_one(x)
    assert score == 0.0 or not isinstance(detector, _Learner)


def test_score_one_does_not_learn(name: str) -> None:
    scored, plain = make(name), make(name)
    for x in stream(scored, warm(scored) + 30):
        scored.score_one({**x, **({"value": 1e9} if "value" in x else {})})
        scored.score_one(x)
        scored.learn_one(x)
        plain.learn_one(x)
    assert probe_scores(scored) == probe_scores(plain)


def test_warm_up_scores_zero(name: str) -> None:
    detector = make(name)
    if not isinstance(detector, _Learner):
        pytest.skip("static rules have no warm-up")
    for i, x in enumerate(stream(detector, detector.warm_up)):
        assert detector.score_one(x) == 0.0
        assert detector.score_one(extreme(detector, x["t"])) == 0.0, f"point {i}"
        detector.learn_one(x)


def test_clone_is_fresh_and_independent(name: str) -> None:
    detector = make(name)
    train(detector)
    before = probe_scores(detector)
    clone = detector.clone()
    assert clone._get_params() == detector._get_params()
    assert probe_scores(clone) == probe_scores(make(name))
    train(clone, warm(clone) + 60)
    assert probe_scores(detector) == before


def test_state_round_trip_keeps_scores_identical(name: str) -> None:
    detector = make(name)
    train(detector)
    restored = Detector.from_bytes(detector.to_bytes())
    assert type(restored) is type(detector)
    for x in stream(detector, 30, seed=7, start=1000):
        assert restored.score_one(x) == detector.score_one(x)
        restored.learn_one(x)
        detector.learn_one(x)
    assert probe_scores(restored) == probe_scores(detector)


@pytest.mark.parametrize("missing", [None, float("nan"), "absent"])
def test_missing_values_score_zero_and_are_not_learned(name: str, missing: object) -> None:
    detector = make(name)
    train(detector)
    before = probe_scores(detector)
    x: dict[str, Any]
    if detector.multivariate:
        x = {} if missing == "absent" else dict.fromkeys(FEATURES, missing)
    else:
        x = {"t": 0.0} if missing == "absent" else {"value": missing, "t": 0.0}
    assert detector.score_one(x) == 0.0
    detector.learn_one(x)
    assert probe_scores(detector) == before


def test_scores_are_within_zero_and_one(name: str) -> None:
    detector = make(name)
    train(detector)
    for value in (0.0, -1e12, 1e12, 1e-12, 5.0):
        if detector.multivariate:
            x = dict.fromkeys(FEATURES, value)
        else:
            x = {"value": value, "t": 7.0 * 3600}
        assert 0.0 <= detector.score_one(x) <= 1.0
    assert all(0.0 <= s <= 1.0 for s in probe_scores(detector))


def test_anomalies_are_not_learned(name: str) -> None:
    detector = make(name)
    points = train(detector)
    outlier = extreme(detector, points[-1]["t"] + 3600.0)
    score = detector.score_one(outlier)
    if not isinstance(detector, _Learner):
        pytest.skip("static rules learn nothing")
    assert score >= detector.threshold, f"{name} does not flag an outlier of 1e6"
    before = probe_scores(detector)
    for _ in range(5):
        detector.learn_one(outlier)
    after = probe_scores(detector)
    # the normal probes score exactly as before: nothing of the outliers was learned
    assert after[:-1] == before[:-1]
    # the extreme probe may report more once it continues a run of anomalies (the
    # adaptive detector's sustain_windows drops its report share), never less
    assert after[-1] >= before[-1] >= detector.threshold


def test_explain_has_the_common_keys(name: str) -> None:
    detector = make(name)
    points = train(detector)
    explanation = detector.explain(extreme(detector, points[-1]["t"] + 3600.0))
    assert {"expected_low", "expected_high", "observed", "direction"} <= set(explanation)
    assert explanation["direction"] in ("up", "down", None)


def test_feedback_accepts_both_verdicts_and_rejects_others(name: str) -> None:
    detector = make(name)
    points = train(detector)
    detector.feedback(points[-1], "false_positive")
    detector.feedback(points[-1], "confirmed")
    with pytest.raises(ValueError):
        detector.feedback(points[-1], "maybe")  # type: ignore[arg-type]


# The same protocol with the parameters the service really uses, one metric per default.
PRODUCTION = {metric: detector_for(DatasetSpec(name="d", topic="t"), metric)
              for metric in ("volume.records", "freshness.seconds_since_last_record",
                             "distribution.mean", "distribution.psi",
                             "completeness.null_ratio")}


@pytest.mark.parametrize("metric", sorted(PRODUCTION))
def test_production_defaults_keep_the_protocol(metric: str) -> None:
    name, params = PRODUCTION[metric]
    detector, plain = create(name, **params), create(name, **params)
    points = stream(detector, warm(detector) + 60)
    for x in points:
        detector.score_one({**x, "value": 1e9})  # scoring never learns
        detector.score_one(x)
        detector.learn_one(x)
        plain.learn_one(x)
    assert probe_scores(detector) == probe_scores(plain)
    outlier = extreme(detector, points[-1]["t"] + 3600.0)
    assert detector.score_one(outlier) >= detector.threshold  # every default is one-sided up
    before = probe_scores(detector)
    assert all(0.0 <= s <= 1.0 for s in before)
    again = Detector.from_bytes(detector.to_bytes())
    assert probe_scores(again) == before
    # the baseline (what a window is expected to be) does not learn anomalies; a
    # persistence memory of recent windows may remember them, and is meant to
    expected = baseline(detector)
    for _ in range(5):
        detector.learn_one(outlier)
    assert baseline(detector) == expected


def baseline(detector: Detector) -> list[object]:
    probes = stream(detector, 10, seed=99, start=5000)
    return [detector.explain(x).get("expected") for x in probes]
