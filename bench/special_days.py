"""Whole days at another level on a seasonal series: each one caught, and the days after it.

A city's trips per half hour (the shape of NAB's ``realKnownCause/nyc_taxi``: two daily
peaks, weekends lower, a few per cent of noise) has special days: holidays at half the
traffic, a marathon or a storm well above or below it. Such a day is held long enough to
be adopted as a new level, and the next morning the old level is back. This generates
seeded series of that shape (our own data, not NAB's: ``--days`` days at ``--step``
seconds, special days at least two weeks apart after three weeks of warm-up, each at a
seeded factor in 0.4-0.7 or 1.3-1.6 of the usual traffic), runs detect's default (the
``adaptive`` detector with the ``distribution`` kind's defaults, scores before learning,
as ``dqpulse detect --csv`` prints them; ``--metric-kind volume``: the record counts'
``seasonal``) and reports per seed: the special days caught
(a score of at least the threshold inside the day), the false alert episodes on the other
days (runs of windows at or above the threshold starting outside every special day and
the day after it), and the lowest forecast on those days (a trip count never goes below
zero).

    .venv/bin/python bench/special_days.py                 # seeds 1-8, 215 days, 30 minutes
    .venv/bin/python bench/special_days.py --seeds 1-20 --step 3600
    .venv/bin/python bench/special_days.py --holiday      # a lower season around two of them
    .venv/bin/python bench/special_days.py --growth 1.0   # traffic doubling over the run

Standard library and dqpulse only; runs in-process.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dqpulse.detectors import create  # noqa: E402
from dqpulse.detectors.offline import detector_for_kind  # noqa: E402

DAY = 86400.0
#: 2014-07-01 00:00 UTC, a Tuesday (the shape's weekends are Saturday and Sunday)
START = 1404172800.0


def trips(t: float, rng: random.Random, factor: float = 1.0) -> float:
    """Trips in the window starting at ``t``: two daily peaks (9:00 and 19:00), weekends at
    80 %, 5 % noise."""
    hour = (t % DAY) / 3600.0
    shape = 0.25 + 0.75 * (math.exp(-(((hour - 9.0) / 2.5) ** 2))
                           + 1.1 * math.exp(-(((hour - 19.0) / 3.0) ** 2)))
    weekend = 0.8 if int((t // DAY + 3) % 7) >= 5 else 1.0  # day 0 of the epoch: Thursday
    return max(0.0, 20000.0 * shape * weekend * factor * (1.0 + rng.gauss(0.0, 0.05)))


def special_days(rng: random.Random, days: int) -> dict[int, float]:
    """Day index -> traffic factor: from day 21 on, 14-35 days apart."""
    chosen: dict[int, float] = {}
    day = 21 + rng.randrange(14)
    while day < days - 1:
        low = rng.random() < 0.6
        chosen[day] = rng.uniform(0.4, 0.7) if low else rng.uniform(1.3, 1.6)
        day += rng.randrange(14, 36)
    return chosen


#: a holiday season: this many days at ``HOLIDAY_LEVEL`` of the usual traffic, with two
#: special days inside it (its 4th and 11th) at 0.45-0.6 of the usual traffic
HOLIDAY_DAYS = 12
HOLIDAY_LEVEL = 0.8


def holiday(seed: int, days: int, special: dict[int, float]) -> tuple[set[int], dict[int, float]]:
    """(the holiday's plain days, its two special days), seeded apart from the noise; the
    special days drawn near it are dropped from ``special``."""
    rng = random.Random(seed + 100_000)
    start = rng.randrange(60, days - HOLIDAY_DAYS - 10)
    period = set(range(start, start + HOLIDAY_DAYS))
    inner = {start + 3: rng.uniform(0.45, 0.6), start + 10: rng.uniform(0.45, 0.6)}
    for day in list(special):
        if start - 2 <= day <= start + HOLIDAY_DAYS + 1:
            del special[day]
    return period - set(inner), inner


@dataclass
class Result:
    seed: int
    special: dict[int, float]
    caught: dict[int, float]  # day -> highest score in it
    false_episodes: int
    scored_windows: int
    lowest_forecast: float
    inner: dict[int, float]  # the holiday's special days -> highest score (``--holiday``)


def run(args: tuple[Any, ...]) -> Result:
    """One seed: (seed, days, step, threshold, kind, overrides, with_holiday[, growth])."""
    seed, days, step, threshold, kind, overrides, with_holiday, *rest = args
    growth = float(rest[0]) if rest else 0.0
    rng = random.Random(seed)
    special = special_days(rng, days)
    plain: set[int] = set()
    inner: dict[int, float] = {}
    if with_holiday:
        plain, inner = holiday(seed, days, special)
        special.update(inner)
    name, params = detector_for_kind(kind, None, **overrides)
    detector = create(name, **params)
    per_day = int(round(DAY / step))
    highest: dict[int, float] = {}
    false_episodes, scored, above_before = 0, 0, False
    lowest = math.inf
    for i in range(days * per_day):
        t = START + i * step
        day = i // per_day
        factor = special.get(day, HOLIDAY_LEVEL if day in plain else 1.0)
        factor *= 1.0 + growth * i / (days * per_day)
        x = {"value": trips(t, rng, factor), "t": t}
        score = detector.score_one(x)
        above = score >= threshold
        if day in special:
            highest[day] = max(highest.get(day, 0.0), score)
        elif day - 1 not in special and day >= 21 and day not in plain and day - 1 not in plain:
            scored += 1
            if above and not above_before:
                false_episodes += 1
            expected = detector.explain(x).get("expected")
            if expected is not None:
                lowest = min(lowest, expected)
        above_before = above
        detector.learn_one(x)
    return Result(seed, special, highest, false_episodes, scored, lowest,
                  {day: highest.get(day, 0.0) for day in inner})


def seeds_from(text: str) -> list[int]:
    """``1-8`` or ``3,5,9``."""
    if "-" in text:
        low, high = text.split("-", 1)
        return list(range(int(low), int(high) + 1))
    return [int(part) for part in text.split(",") if part]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", default="1-8")
    parser.add_argument("--days", type=int, default=215)
    parser.add_argument("--step", type=float, default=1800.0, help="window width, seconds")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--metric-kind", default="distribution",
                        help="production defaults of this kind (default: detect's own)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a detector param over the kind's defaults (JSON value)")
    parser.add_argument("--holiday", action="store_true",
                        help=f"add a holiday season per seed: {HOLIDAY_DAYS} days at "
                             f"{HOLIDAY_LEVEL:g} of the traffic (neither caught nor false) "
                             "with two special days inside it at 0.45-0.6")
    parser.add_argument("--growth", type=float, default=0.0,
                        help="a trend: the traffic grows by this share of itself over the "
                             "whole run (1.0 doubles it, -0.5 halves it)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.param:
        key, _, text = item.partition("=")
        try:
            overrides[key] = json.loads(text)
        except ValueError:
            overrides[key] = text
    seeds = seeds_from(args.seeds)
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, [(seed, args.days, args.step, args.threshold,
                                       args.metric_kind, overrides, args.holiday,
                                       args.growth)
                                      for seed in seeds]))
    print(f"{args.days} days at {args.step:g} s windows, threshold {args.threshold}, "
          f"metric kind {args.metric_kind}", *(f"{k}={v}" for k, v in overrides.items()),
          *([f"growth {args.growth:+g}"] if args.growth else []))
    print("| seed | special days caught | missed (factor: highest score) "
          "| false episodes on other days | per 10k windows | lowest forecast |")
    print("|---:|---:|---|---:|---:|---:|")
    caught_all = days_all = false_all = scored_all = 0
    for r in results:
        caught = sum(score >= args.threshold for score in r.caught.values())
        missed = ", ".join(f"{r.special[d]:.2f}: {r.caught[d]:.2f}" for d in sorted(r.caught)
                           if r.caught[d] < args.threshold) or "-"
        caught_all += caught
        days_all += len(r.special)
        false_all += r.false_episodes
        scored_all += r.scored_windows
        print(f"| {r.seed} | {caught} / {len(r.special)} | {missed} | {r.false_episodes} "
              f"| {1e4 * r.false_episodes / max(r.scored_windows, 1):.1f} "
              f"| {r.lowest_forecast:,.0f} |")
    print(f"| all | {caught_all} / {days_all} | | {false_all} "
          f"| {1e4 * false_all / max(scored_all, 1):.1f} | |")
    if args.holiday:
        inner = [score for r in results for score in r.inner.values()]
        print(f"special days inside a holiday season: "
              f"{sum(score >= args.threshold for score in inner)} / {len(inner)} caught "
              f"(highest scores {', '.join(f'{score:.2f}' for score in inner)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
