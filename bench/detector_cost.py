"""Cost of the univariate detectors side by side: microseconds per score_one + learn_one
and saved state size, on the same series in one run (interleaved rounds, medians).

    .venv/bin/python bench/detector_cost.py [--rounds 5] [--csv file.csv ...]

Without ``--csv`` it uses a synthetic seasonal count series (two weeks of 5-minute windows)
and, when the shared NAB corpus sits beside the checkout, one tweet-volume series.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any

from dqpulse.detectors import create
from dqpulse.detectors.offline import parse_timestamp
from dqpulse.detectors.scoring import default_params_for

# (label, detector, params): each with its own defaults, and the production configuration
# of record counts (the seasonal detector with the volume.records params)
DETECTORS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("seasonal", "seasonal", {}),
    ("seasonal (volume.records)", "seasonal", default_params_for("volume.records")),
    ("robust", "robust", {}),
    ("adaptive", "adaptive", {}),
)
NAB = (Path(__file__).resolve().parents[2] / "shared" / "data" / "nab-visible" / "data"
       / "realTweets" / "Twitter_volume_AAPL.csv")


def synthetic(n: int = 4032, seed: int = 1) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        t = i * 300.0
        rate = 300.0 * (1.0 + 0.5 * math.sin(2 * math.pi * (t % 86400.0) / 86400.0))
        rows.append((t, float(max(0, round(rng.gauss(rate, math.sqrt(rate)))))))
    return rows


def read(path: Path) -> list[tuple[float, float]]:
    with open(path, newline="") as handle:
        return [(parse_timestamp(r[0]), float(r[1])) for r in list(csv.reader(handle))[1:]]


def one_pass(name: str, params: dict[str, Any], rows: list[tuple[float, float]]
             ) -> tuple[float, int]:
    detector = create(name, **params)
    start = time.perf_counter()
    for t, value in rows:
        x = {"value": value, "t": t}
        detector.score_one(x)
        detector.learn_one(x)
    elapsed = time.perf_counter() - start
    return 1e6 * elapsed / len(rows), len(detector.to_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--csv", type=Path, action="append", default=[])
    args = parser.parse_args()
    series = {"synthetic counts": synthetic()}
    for path in args.csv or ([NAB] if NAB.exists() else []):
        series[path.name] = read(path)
    print("| series | detector | us per update (median) | state bytes | ratio to seasonal |")
    print("|---|---|---:|---:|---:|")
    for label, rows in series.items():
        times: dict[str, list[float]] = {name: [] for name, _, _ in DETECTORS}
        sizes: dict[str, int] = {}
        for _ in range(args.rounds):
            # interleaved, so drifting machine load hits all alike
            for name, detector, params in DETECTORS:
                micros, size = one_pass(detector, params, rows)
                times[name].append(micros)
                sizes[name] = size
        base = statistics.median(times["seasonal"])
        for name, _, _ in DETECTORS:
            median = statistics.median(times[name])
            print(f"| {label} ({len(rows)} rows) | {name} | {median:.1f} | {sizes[name]} | "
                  f"{median / base:.2f} |")


if __name__ == "__main__":
    main()
