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


def test_passes_that_never_ended_count_as_failed_tries_of_their_first_window(caplog):
    """The stored count of passes begun at a window without committing past it: those this
    process did not see end (it restarted, the pass killed it) count as failed tries."""
    telemetry = Telemetry(CollectorRegistry())
    failures = WindowFailures(max_attempts=3, telemetry=telemetry)
    sample = telemetry.registry.get_sample_value
    assert failures.begin_try("orders", 60.0, (None, 0), span=600.0) == 1  # first try
    assert failures.failing("orders") is None and not failures.careful("orders", 120.0)
    assert failures.begin_try("orders", 60.0, (60.0, 1), span=600.0) == 2  # its own: ended
    assert failures.failing("orders") is None

    restarted = WindowFailures(max_attempts=3, telemetry=telemetry)
    with caplog.at_level(logging.WARNING):
        assert restarted.begin_try("orders", 60.0, (60.0, 2), span=600.0) == 3
    assert "2 finalize passes of orders beginning at the window at 1970-01-01T00:01:00Z " \
           "never ended" in caplog.text and "is tried alone (2 failed tries)" in caplog.text
    assert sample("dqpulse_finalize_failures_total", {"dataset": "orders"}) == 2
    assert restarted.failing("orders") == 60.0 and restarted.mode("orders", 60.0) is Mode.FULL
    # the windows the dead pass covered go one per pass; after them, as usual
    assert restarted.careful("orders", 600.0) and not restarted.careful("orders", 660.0)
    assert not restarted.careful("payments", 60.0)
    # another process tried it once more and died: one more failed try
    assert restarted.begin_try("orders", 60.0, (60.0, 4), span=600.0) == 5
    assert restarted.mode("orders", 60.0) is Mode.UNALERTED
    # a stored count of another window is stale (the window was committed since)
    assert restarted.begin_try("orders", 120.0, (60.0, 4), span=600.0) == 1
    assert sample("dqpulse_finalize_failures_total", {"dataset": "orders"}) == 3


def test_a_pass_stopped_before_its_first_window_is_no_try_and_the_ladder_goes_on():
    failures = WindowFailures(max_attempts=2)
    tries = failures.begin_try("orders", 60.0, (60.0, 0), span=60.0)
    failures.end_untried("orders", 60.0, tries)  # stored back as 0: no try
    assert failures.begin_try("orders", 60.0, (60.0, 0), span=60.0) == 1
    assert failures.failing("orders") is None
    # unfinished tries on top of failures raised in this process
    _fail(failures, 60.0)
    assert failures.begin_try("orders", 60.0, (60.0, 3), span=60.0) == 4  # 2 unaccounted
    assert failures.mode("orders", 60.0) is Mode.UNSCORED  # 1 raised + 2 died: 2 beyond
    assert failures.begin_try("orders", 60.0, (60.0, 5), span=60.0) == 6
    assert failures.mode("orders", 60.0) is Mode.SKIPPED
