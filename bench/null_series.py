"""How often the default alerts on series with nothing to find, by family of series.

``adaptive``'s score is calibrated so that 0.9 means a tail probability of 1e-4, "about once
in 10,000 normal windows" of the series (docs/configuration.md). That claim is checked here
on series that hold no anomaly by construction, one family of shapes at a time: our own
seeded data, not a public corpus, so the numbers say how the calibration behaves per shape
of noise, not what a user's series will show (NAB's figures are in docs/benchmarks.md).

Families (``--windows`` windows each, 5-minute steps unless said):

- ``gaussian``: i.i.d. normal noise around a constant
- ``heavy``: i.i.d. Student-t noise with 3 degrees of freedom (a few 10-20 sigma points
  per 10,000 windows are normal here)
- ``lognormal``: a daily cycle times lognormal noise (spiky, skewed, positive)
- ``random_walk``: Gaussian steps, no level to return to
- ``ar1``: an AR(1) with coefficient 0.95 (slow wander around a level)
- ``trend``: a linear trend under Gaussian noise
- ``sparse``: counts of 0-5 rare events per window, mostly zeros
- ``quantised``: a daily cycle rounded to integers (few distinct values)
- ``daily_30min`` and ``daily_hourly``: a daily cycle with lower weekends at 30 minutes
  and an hour, 5 % noise
- ``irregular``: the same cycle sampled at exponential gaps (mean 5 minutes, at least 30 s)
- ``poisson_2``, ``poisson_15``, ``poisson_100``: record counts of a topic with nothing
  but counting noise, Poisson with a mean of 2, 15 or 100 a window times the daily cycle

For each family it runs detect's default for ``--metric-kind`` (scores before learning, as
``dqpulse detect --csv`` prints them) and counts, after the probation ``series_eval.py``
uses (15 % of a series, at most 750 rows), the rows at or above the threshold and the alert
episodes (runs of such rows), per 10,000 scored rows. A calibrated score would put about
one row per 10,000 at 0.9; ``report_share`` (3.0) and the long-view evidence move that on
purpose, so the number to read is how far each family sits from the others.

    .venv/bin/python bench/null_series.py                   # 5 seeds per family
    .venv/bin/python bench/null_series.py --seeds 1-10 --param report_share=1

Standard library and dqpulse only; runs in-process.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from special_days import seeds_from  # noqa: E402

from dqpulse.detectors import create  # noqa: E402
from dqpulse.detectors.offline import detector_for_kind  # noqa: E402
from dqpulse.sources.embedded import poisson  # noqa: E402

DAY = 86400.0
#: 2015-01-01 00:00 UTC, a Thursday
START = 1420070400.0


def daily(t: float) -> float:
    """A daily cycle in [0.2, 2.2] peaking mid-afternoon, weekends at 80 %."""
    phase = 2.0 * math.pi * ((t % DAY) / DAY - 0.3)
    weekend = 0.8 if int((t // DAY + 3) % 7) >= 5 else 1.0
    return (1.2 + math.sin(phase)) * weekend


class Family:
    """One shape of series: its step between windows and its next value."""

    def __init__(self, step: Callable[[random.Random], float],
                 value: Callable[[random.Random, float, int, list[float]], float]) -> None:
        self.step = step
        self.value = value


def _five(_: random.Random) -> float:
    return 300.0


def _student_t3(rng: random.Random) -> float:
    return rng.gauss(0.0, 1.0) / math.sqrt(rng.gammavariate(1.5, 1.0 / 1.5))


def _walk(rng: random.Random, _t: float, _i: int, state: list[float]) -> float:
    state[0] += rng.gauss(0.0, 1.0)
    return 50.0 + state[0]


def _ar1(rng: random.Random, _t: float, _i: int, state: list[float]) -> float:
    state[0] = 0.95 * state[0] + rng.gauss(0.0, 1.0)
    return 100.0 + state[0]


def _counts(mean: float) -> Family:
    return Family(_five, lambda rng, t, i, s: float(poisson(rng, mean * daily(t))))


FAMILIES: dict[str, Family] = {
    "gaussian": Family(_five, lambda rng, t, i, s: 100.0 + rng.gauss(0.0, 5.0)),
    "heavy": Family(_five, lambda rng, t, i, s: 100.0 + _student_t3(rng)),
    "lognormal": Family(_five, lambda rng, t, i, s: math.exp(rng.gauss(0.0, 0.5)) * daily(t)),
    "random_walk": Family(_five, _walk),
    "ar1": Family(_five, _ar1),
    "trend": Family(_five, lambda rng, t, i, s: 10.0 + 0.01 * i + rng.gauss(0.0, 1.0)),
    "sparse": Family(_five, lambda rng, t, i, s: float(sum(rng.random() < 0.06
                                                             for _ in range(5)))),
    "quantised": Family(_five, lambda rng, t, i, s: float(round(
        1.0 + 2.0 * daily(t) + rng.gauss(0.0, 0.4)))),
    "daily_30min": Family(lambda rng: 1800.0,
                          lambda rng, t, i, s: 1000.0 * daily(t) * (1 + rng.gauss(0.0, 0.05))),
    "daily_hourly": Family(lambda rng: 3600.0,
                           lambda rng, t, i, s: 1000.0 * daily(t) * (1 + rng.gauss(0.0, 0.05))),
    "irregular": Family(lambda rng: max(30.0, rng.expovariate(1.0 / 300.0)),
                        lambda rng, t, i, s: 1000.0 * daily(t) * (1 + rng.gauss(0.0, 0.05))),
    "poisson_2": _counts(2.0),
    "poisson_15": _counts(15.0),
    "poisson_100": _counts(100.0),
}


def run(args: tuple[str, int, int, float, str, dict[str, Any]]) -> tuple[str, int, int, int]:
    """(family, rows at or above the threshold, alert episodes, rows scored) of one seed."""
    family_name, seed, windows, threshold, kind, overrides = args
    family = FAMILIES[family_name]
    rng = random.Random(zlib.crc32(f"{family_name}/{seed}".encode()))
    name, params = detector_for_kind(kind, None, **overrides)
    detector = create(name, **params)
    probation = min(int(0.15 * windows), 750)
    t, state = START, [0.0]
    above_rows = episodes = scored = 0
    above_before = False
    for i in range(windows):
        t += family.step(rng)
        x = {"value": family.value(rng, t, i, state), "t": t}
        score = detector.score_one(x)
        detector.learn_one(x)
        if i < probation:
            continue
        scored += 1
        above = score >= threshold
        above_rows += above
        episodes += above and not above_before
        above_before = above
    return family_name, above_rows, episodes, scored


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", default="1-5")
    parser.add_argument("--windows", type=int, default=8000, help="windows per series")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"comma-separated, of: {', '.join(FAMILIES)}")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--metric-kind", default="distribution",
                        help="production defaults of this kind (default: detect's own)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a detector param over the kind's defaults (JSON value)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    overrides: dict[str, Any] = {}
    for item in args.param:
        key, _, text = item.partition("=")
        try:
            overrides[key] = json.loads(text)
        except ValueError:
            overrides[key] = text
    seeds = seeds_from(args.seeds)
    jobs = [(f, s, args.windows, args.threshold, args.metric_kind, overrides)
            for f in families for s in seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, jobs))
    totals: dict[str, list[int]] = {f: [0, 0, 0] for f in families}
    for family, rows, episodes, scored in results:
        total = totals[family]
        total[0] += rows
        total[1] += episodes
        total[2] += scored
    print(f"{len(seeds)} seeds x {args.windows} windows per family, threshold "
          f"{args.threshold}, metric kind {args.metric_kind}",
          *(f"{k}={v}" for k, v in overrides.items()))
    print("| family | rows >= threshold per 10k | alert episodes | per 10k rows |")
    print("|---|---:|---:|---:|")
    for family in families:
        rows, episodes, scored = totals[family]
        print(f"| {family} | {1e4 * rows / max(scored, 1):.1f} | {episodes} "
              f"| {1e4 * episodes / max(scored, 1):.1f} |")
    rows = sum(t[0] for t in totals.values())
    episodes = sum(t[1] for t in totals.values())
    scored = sum(t[2] for t in totals.values())
    print(f"| all | {1e4 * rows / max(scored, 1):.1f} | {episodes} "
          f"| {1e4 * episodes / max(scored, 1):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
