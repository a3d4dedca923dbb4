"""What one series costs the service per window, and how much of it is its saved state.

``SeriesScorer.score_window`` as the workers run it: per series and window the state is
read from its bytes, the window scored, explained and learned, and the state written back
to bytes (the workers keep those bytes in Postgres between windows). One data set of 10
series with each metric's production detector: the record count (``seasonal``), and for
three fields (amount, country, status) the null ratio (``robust``), the mean and the
distinct count (``adaptive``). 600 windows of warm-up (two days of 5-minute windows), then
``--windows`` timed; CPU time (``time.process_time``), medians over ``--rounds``.

    .venv/bin/python bench/scoring_cost.py [--rounds 5] [--windows 400]
    .venv/bin/python bench/scoring_cost.py --against ../other-checkout   # side by side

With ``--against`` the two checkouts alternate round by round, each in a subprocess that
imports its own ``dqpulse``: on a noisy box only their ratio means much.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("amount", "country", "status")
METRICS = ("completeness.null_ratio", "distribution.mean", "distribution.distinct_count")
WARM_UP = 600


def measure(windows: int) -> dict[str, Any]:
    """One round in this process (its ``dqpulse`` is the first on ``sys.path``)."""
    from dqpulse.detectors.base import Detector
    from dqpulse.detectors.scoring import SeriesScorer
    from dqpulse.records import MetricPoint
    from dqpulse.spec import DatasetSpec

    scorer = SeriesScorer(DatasetSpec(name="orders", topic="orders"))
    rng = random.Random(1)
    series = [("volume.records", "")] + [(m, f) for f in FIELDS for m in METRICS]

    def value(metric: str) -> float:
        if metric == "volume.records":
            return 300.0 + rng.gauss(0.0, 15.0)
        if metric == "completeness.null_ratio":
            return rng.random() * 0.02
        if metric == "distribution.distinct_count":
            return float(rng.randint(3, 5))
        return rng.gauss(50.0, 3.0)

    def window() -> list[Any]:
        return [MetricPoint(metric, value(metric), field=field) for metric, field in series]

    states: dict[str, bytes] = {}
    for i in range(WARM_UP):
        _, states = scorer.score_window(i * 300.0, window(), states)
    start = time.process_time()
    for i in range(WARM_UP, WARM_UP + windows):
        _, states = scorer.score_window(i * 300.0, window(), states)
    total = (time.process_time() - start) / (windows * len(series))
    # the state's share: the same states read from and written to bytes, nothing else
    repeat = 50
    start = time.process_time()
    for _ in range(repeat):
        for blob in states.values():
            Detector.from_bytes(blob).to_bytes()
    state = (time.process_time() - start) / (repeat * len(states))
    return {"us_per_series_window": 1e6 * total, "us_state_round_trip": 1e6 * state,
            "state_bytes": sum(len(blob) for blob in states.values()) / len(states)}


def run_in(root: Path, windows: int) -> dict[str, Any]:
    code = (f"import sys; sys.path.insert(0, {str(root)!r}); "
            f"sys.path.insert(1, {str(ROOT / 'bench')!r}); import json, scoring_cost; "
            f"print(json.dumps(scoring_cost.measure({windows})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--windows", type=int, default=400)
    parser.add_argument("--against", type=Path, help="another checkout, measured alternately")
    args = parser.parse_args()
    trees = {"this checkout": ROOT}
    if args.against is not None:
        trees = {f"--against {args.against}": args.against.resolve(), **trees}
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
    for _ in range(args.rounds):
        for label, root in trees.items():
            results[label].append(run_in(root, args.windows))
    print("| code | us per series and window (median) | of which state read + write | "
          "state bytes (mean) |")
    print("|---|---:|---:|---:|")
    medians = {}
    for label, rounds in results.items():
        medians[label] = statistics.median(r["us_per_series_window"] for r in rounds)
        state = statistics.median(r["us_state_round_trip"] for r in rounds)
        print(f"| {label} | {medians[label]:.1f} | {state:.1f} | "
              f"{rounds[0]['state_bytes']:.0f} |")
    if args.against is not None:
        first, second = medians.values()
        print(f"\nratio this checkout / other: {second / first:.3f}")


if __name__ == "__main__":
    main()
