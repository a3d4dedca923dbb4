from __future__ import annotations

import pytest

from dqpulse.detectors import available, create, get, register
from dqpulse.detectors.base import _REGISTRY, Detector, DetectorStateError
from dqpulse.detectors.robust import RobustDetector
from dqpulse.errors import ConfigError


def test_registering_a_name_twice_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("robust")(RobustDetector)


def test_create_builds_with_params_and_rejects_unknown_ones() -> None:
    detector = create("robust", z_threshold=4.0)
    assert isinstance(detector, RobustDetector) and detector.z_threshold == 4.0
    with pytest.raises(ConfigError, match="robust"):
        create("robust", no_such_param=1)


def test_unknown_detector_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="seasonal"):
        get("prophet")


class Constant(RobustDetector):
    pass


def test_third_party_detector_registers_and_round_trips() -> None:
    register("test_constant")(Constant)
    try:
        assert "test_constant" in available()
        restored = Detector.from_bytes(create("test_constant").to_bytes())
        assert isinstance(restored, Constant)
    finally:
        _REGISTRY.pop("test_constant")


def test_corrupt_state_raises_a_state_error() -> None:
    with pytest.raises(DetectorStateError):
        Detector.from_bytes(b"nonsense")
    good = create("robust").to_bytes()
    with pytest.raises(DetectorStateError):
        Detector.from_bytes(good[:-5])
    with pytest.raises(DetectorStateError):
        RobustDetector.from_bytes(create("seasonal").to_bytes())
