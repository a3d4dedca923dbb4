"""A window that fails the same way on every try: tried alone, then without alerting,
then without its hooks, then skipped, and forgotten once the data set's finalization passes it
(dqpulse.finalize.failures)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from dqpulse.finalize.failures import Mode, WindowFailed, WindowFailures
from dqpulse.telemetry import Telemetry


def _fail(failures: WindowFailures, at: float, dataset: str = "orders") -> None:
    mode = failures.mode(dataset, at)
    try:
        raise WindowFailed(dataset, at, mode) from ValueError("a bug")
    except WindowFailed as exc:
        failures.failed(exc)


def test_a_failing_window_is_tried_then_unalerted_then_unscored_then_skipped(caplog):
    telemetry = Telemetry(CollectorRegistry())
    failures = WindowFailures(max_attempts=3, telemetry=telemetry)
    assert failures.failing("orders") is None and failures.mode("orders", 60.0) is Mode.FULL
    with caplog.at_level(logging.ERROR):
        for expected in (Mode.FULL, Mode.FULL, Mode.UNALERTED, Mode.UNSCORED, Mode.SKIPPED):
            _fail(failures, 60.0)
            assert failures.mode("orders", 60.0) is expected
    assert failures.failing("orders") == 60.0
    assert failures.mode("orders", 120.0) is Mode.FULL  # only that window
    assert failures.mode("payments", 60.0) is Mode.FULL  # only that data set
    assert "1970-01-01T00:01:00Z of orders (full) failed (ValueError: a bug)" in caplog.text
    assert "try 1 of 3" in caplog.text and "it will be skipped" in caplog.text
    sample = telemetry.registry.get_sample_value
    assert sample("dqpulse_finalize_failures_total", {"dataset": "orders"}) == 5

    failures.finalized("orders", 60.0, Mode.SKIPPED)
    assert failures.failing("orders") is None
    assert sample("dqpulse_windows_degraded_total",
                  {"dataset": "orders", "outcome": "skipped"}) == 1


def test_a_fluke_passes_and_is_forgotten_and_a_later_window_forgets_it_too():
    telemetry = Telemetry(CollectorRegistry())
    failures = WindowFailures(max_attempts=3, telemetry=telemetry)
    _fail(failures, 60.0)
    failures.finalized("orders", 60.0, Mode.FULL)  # the second try went through
    assert failures.failing("orders") is None
    assert telemetry.registry.get_sample_value(
        "dqpulse_windows_degraded_total", {"dataset": "orders", "outcome": "unscored"}) is None
    _fail(failures, 60.0)
    failures.finalized("orders", 120.0, Mode.FULL)  # another worker finalized it
    assert failures.failing("orders") is None
    _fail(failures, 60.0)
    _fail(failures, 180.0)  # a new failing window starts its own count
    assert failures.failing("orders") == 180.0 and failures.mode("orders", 180.0) is Mode.FULL


def test_one_attempt_goes_straight_to_unalerted_and_zero_is_refused():
    failures = WindowFailures(max_attempts=1)
    _fail(failures, 0.0)
    assert failures.mode("orders", 0.0) is Mode.UNALERTED
    with pytest.raises(ValueError, match="max_attempts must be at least 1, got 0"):
        WindowFailures(max_attempts=0)
