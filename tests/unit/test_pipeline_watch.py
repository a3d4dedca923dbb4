from __future__ import annotations

from dqpulse.pipeline import DETECTED_METRICS, is_detected, is_watched
from dqpulse.spec import DatasetSpec

SPEC = DatasetSpec(name="orders", topic="orders", key="order_id")


def test_the_key_field_has_no_value_distribution_alerts() -> None:
    assert not is_watched(SPEC, "distribution.mean", "order_id")
    assert not is_watched(SPEC, "distribution.p50", "order_id")
    assert is_watched(SPEC, "distribution.mean", "amount")
    assert is_watched(SPEC, "uniqueness.duplicate_ratio", "order_id")
    assert is_watched(SPEC, "completeness.null_ratio", "order_id")


def test_only_detected_metrics_are_watched() -> None:
    assert is_watched(SPEC, "volume.records")
    assert not is_watched(SPEC, "volume.bytes")
    assert all(is_detected(metric) for metric in DETECTED_METRICS)


def test_noisy_series_do_not_alert() -> None:
    # sampling-noise-dominated drift scores and a label balance that reads 1.0 when a
    # class is absent would page someone every quiet night
    assert not is_detected("distribution.psi")
    assert not is_detected("distribution.linf")
    assert not is_detected("ml_data.minority_ratio")
