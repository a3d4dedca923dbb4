"""Saved state per series at its largest, not only at the end of a run.

Issue 10's budget is 16 KiB of state per series. A state grows and shrinks as a series
goes (remembered bursts, an open episode, the repeat counters, the daily repeat's days),
so this runs each metric's production detector over every series of a corpus, saves the
state every ``--every`` windows and reports, per metric, the largest state seen (with the
series and the window where it came), the largest at a series' end and the mean.

    .venv/bin/python bench/state_size.py                    # nab-visible, every 25 windows
    .venv/bin/python bench/state_size.py --corpus DIR --every 10

Standard library and dqpulse only; two processes by default.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dqpulse.detectors import create  # noqa: E402
from dqpulse.detectors.offline import parse_timestamp  # noqa: E402
from dqpulse.detectors.scoring import default_detector_for, default_params_for  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "nab-visible"
#: one metric per default detector configuration the service runs
METRICS = ("volume.records", "completeness.null_ratio", "distribution.mean",
           "distribution.distinct_count", "freshness.seconds_since_last_record")
BUDGET = 16 * 1024


def one_series(job: tuple[Path, str, int]) -> tuple[str, str, str, int, int, int, float]:
    """(series, metric, detector, largest state, its window, state at the end, mean)."""
    path, metric, every = job
    name = default_detector_for(metric)
    detector = create(name, **default_params_for(metric))
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle)][1:]
    largest, at, sizes = 0, 0, []
    for index, row in enumerate(rows):
        x = {"value": float(row[1]), "t": parse_timestamp(row[0])}
        detector.score_one(x)
        detector.learn_one(x)
        if index % every == 0 or index == len(rows) - 1:
            size = len(detector.to_bytes())
            sizes.append(size)
            if size > largest:
                largest, at = size, index
    return path.name, metric, name, largest, at, sizes[-1], statistics.fmean(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--every", type=int, default=25, help="save the state every N windows")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    files = sorted((args.corpus / "data").rglob("*.csv"))
    if not files:
        parser.error(f"no CSV files under {args.corpus / 'data'}")
    jobs = [(path, metric, args.every) for path in files for metric in METRICS]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one_series, jobs))
    print(f"{len(files)} series, state saved every {args.every} windows; budget {BUDGET} bytes")
    print("| metric (detector) | largest state | where | largest at the end | mean |")
    print("|---|---:|---|---:|---:|")
    for metric in METRICS:
        mine = [r for r in results if r[1] == metric]
        top = max(mine, key=lambda r: r[3])
        print(f"| {metric} ({top[2]}) | {top[3]:,} | {top[0]}, window {top[4]:,} | "
              f"{max(r[5] for r in mine):,} | {statistics.fmean(r[6] for r in mine):,.0f} |")
    over = [r for r in results if r[3] >= BUDGET]
    print(f"series over the budget at some window: {len(over)}")
    for name, metric, _, largest, at, _, _ in over:
        print(f"  {name} {metric}: {largest:,} bytes at window {at:,}")


if __name__ == "__main__":
    main()
