"""bench/special_days.py: seeded special days on a taxi-shaped series, and what the
default detector makes of them."""

from __future__ import annotations

import random

import pytest

from tests.unit.conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("special_days")


def test_special_days_are_weeks_apart_after_the_warm_up_and_off_the_usual_level(bench) -> None:
    for seed in range(20):
        days = bench.special_days(random.Random(seed), 215)
        ordered = sorted(days)
        assert ordered[0] >= 21 and ordered[-1] < 214
        assert all(14 <= b - a <= 35 for a, b in zip(ordered, ordered[1:], strict=False))
        assert all(0.4 <= f <= 0.7 or 1.3 <= f <= 1.6 for f in days.values())


def test_trips_follow_the_day_and_the_week(bench) -> None:
    rng = random.Random(1)
    monday_9 = bench.START + 6 * bench.DAY + 9 * 3600.0  # 2014-07-07, a Monday
    saturday_9 = bench.START + 4 * bench.DAY + 9 * 3600.0
    monday_3 = bench.START + 6 * bench.DAY + 3 * 3600.0
    mean = lambda t, f=1.0: sum(bench.trips(t, rng, f) for _ in range(400)) / 400  # noqa: E731
    assert mean(saturday_9) / mean(monday_9) == pytest.approx(0.8, rel=0.02)
    assert mean(monday_3) < 0.4 * mean(monday_9)
    assert mean(monday_9, 0.5) / mean(monday_9) == pytest.approx(0.5, rel=0.02)


def test_the_default_catches_a_deep_day_and_keeps_its_forecasts_positive(bench) -> None:
    # hourly windows, 70 days: quick, and every special day of seed 3 is scored
    result = bench.run((3, 70, 3600.0, 0.9, "distribution", {}, False))
    assert set(result.caught) == set(result.special)
    assert any(factor <= 0.45 for factor in result.special.values())  # a day at 44 %
    assert all(result.caught[day] >= 0.9 for day in result.special)
    assert result.lowest_forecast > 0.0
    assert result.false_episodes <= 2


def test_a_holiday_season_holds_two_deep_days_and_no_other_special_day(bench) -> None:
    for seed in range(10):
        special = bench.special_days(random.Random(seed), 215)
        plain, inner = bench.holiday(seed, 215, special)
        start = min(plain | set(inner))
        assert sorted(inner) == [start + 3, start + 10]
        assert len(plain) + len(inner) == bench.HOLIDAY_DAYS
        assert all(0.45 <= f <= 0.6 for f in inner.values())
        assert not any(start - 2 <= day <= start + bench.HOLIDAY_DAYS + 1 for day in special)


def test_growth_scales_the_traffic_along_the_run_and_keeps_the_special_days(bench) -> None:
    # the same seed with and without a trend: the same special days, and a run whose
    # forecasts end about twice as high (the detector follows the trend)
    flat = bench.run((3, 40, 3600.0, 0.9, "distribution", {}, False))
    grown = bench.run((3, 40, 3600.0, 0.9, "distribution", {}, False, 1.0))
    assert grown.special == flat.special
    assert grown.lowest_forecast > flat.lowest_forecast
