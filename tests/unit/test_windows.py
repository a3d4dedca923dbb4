from __future__ import annotations

import math

import numpy as np
import polars as pl

from dqpulse.windows import PartitionClock, epoch_seconds, parse_event_times, window_start


def test_window_start_floors_to_the_window():
    assert window_start(119.999, 60) == 60.0
    assert window_start(120.0, 60) == 120.0
    assert window_start(86_399, 86_400) == 0.0


def test_epoch_units_are_told_apart_by_magnitude():
    values = np.array([1_700_000_000, 1_700_000_000_000, 1_700_000_000_000_000], dtype=float)
    assert epoch_seconds(values).tolist() == [1_700_000_000.0] * 3


def test_iso_event_times_with_offsets_and_bad_values():
    column = pl.Series(["2026-01-01T00:00:00Z", "2026-01-01T02:00:00+02:00",
                        "2026-01-01 00:00:01", "yesterday", None])
    seconds = parse_event_times(column, "string")
    assert seconds[:3].tolist() == [1767225600.0, 1767225600.0, 1767225601.0]
    assert math.isnan(seconds[3]) and math.isnan(seconds[4])


def test_watermark_is_monotone_and_closes_windows_after_lateness():
    clock = PartitionClock(window=60, lateness=30, idle_timeout_s=10)
    clock.observe(80.0, now=1000.0)
    clock.observe(50.0, now=1001.0)
    assert clock.watermark == 80.0
    assert not clock.is_closed(0.0)  # 0 + 60 + 30 = 90 > 80
    clock.observe(90.0, now=1002.0)
    assert clock.is_closed(0.0)  # 90 <= 90
    assert not clock.is_closed(60.0)


def test_idle_partition_advances_to_the_wall_clock_only_after_the_timeout():
    clock = PartitionClock(window=60, lateness=0, idle_timeout_s=10)
    clock.observe(100.0, now=1000.0)
    clock.tick(1009.0)
    assert clock.watermark == 100.0
    clock.tick(1010.0)
    assert clock.watermark == 1010.0


def test_clock_round_trips_through_a_dict():
    clock = PartitionClock(window=60, lateness=0, idle_timeout_s=10)
    restored = PartitionClock(window=60, lateness=0, idle_timeout_s=10)
    restored.load(clock.to_dict())
    assert restored.watermark == -math.inf and restored.last_record_at is None


def test_numeric_and_timestamp_event_times_give_nan_for_nulls_and_a_writable_array():
    numbers = parse_event_times(pl.Series([1.7e9, None, 1.7e12]), "number")
    assert numbers[0] == numbers[2] == 1.7e9 and math.isnan(numbers[1])
    integers = parse_event_times(pl.Series([1_700_000_000_000, None], dtype=pl.Int64),
                                 "integer")
    assert integers[0] == 1.7e9 and math.isnan(integers[1])
    stamps = parse_event_times(pl.Series([1.7e9, None]), "timestamp")
    assert stamps[0] == 1.7e9 and math.isnan(stamps[1])
    full = parse_event_times(pl.Series([1.7e9, 1.8e9]), "timestamp")
    full[0] = 0.0  # callers may replace invalid times in place
    assert full.tolist() == [0.0, 1.8e9]
