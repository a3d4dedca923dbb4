"""Cost of one Prometheus scrape of the API's /metrics with many datasets and fields.

WHAT THIS MEASURES
    A throwaway Postgres database (the local stack's server) holds ``--datasets`` datasets
    of ``--fields`` fields each, with ``--windows`` finalized windows of history: per window
    the dataset-level points of a real window (volume, freshness, schema, quality) and, per
    field, 23 per-field points (completeness, distribution statistics and quantiles,
    distinct values, top-k share, drift against the previous window and the baseline),
    every point with a detector score; plus 3 open incidents per dataset.

    The API's registry (process counters + the data-quality collector,
    ``dqpulse.services.exposition``) is rendered as Prometheus does when it scrapes
    ``/metrics`` (``generate_latest``): the time and the size of the body, for

    1. the first scrape of a new process (every dataset's newest window read),
    2. a scrape after every dataset finalized one more window (the worst steady state: each
       dataset's window read again),
    3. a scrape where nothing changed (the usual case: a scrape interval shorter than the
       windows),

    each with the default field series budget (200), a budget of 2,000 and one that admits
    every per-field series. Median of ``--repeat`` for 2 and 3 (2 writes a window each time).

Usage:
    python bench/scrape_cost.py [--datasets 50] [--fields 20] [--windows 30]
Needs the local stack (``deploy/local/stack up``; DQPULSE_DATABASE_URL names its server).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dqpulse.records import MetricPoint  # noqa: E402
from dqpulse.services.exposition import DatasetMetricsCollector  # noqa: E402
from dqpulse.spec import parse_spec  # noqa: E402
from dqpulse.store import checkpoints, datasets, incidents  # noqa: E402
from dqpulse.store import metrics as metric_store  # noqa: E402
from dqpulse.store.db import make_engine  # noqa: E402
from dqpulse.telemetry import Telemetry  # noqa: E402
from tests.integration.helpers import create_database, drop_database  # noqa: E402

WINDOW = 60.0
DATASET_METRICS = (
    "volume.records", "volume.bytes", "volume.late_records", "freshness.event_lag_p50_seconds",
    "freshness.event_lag_p95_seconds", "freshness.event_lag_max_seconds",
    "freshness.seconds_since_last_record", "freshness.consumer_lag_records",
    "schema.observed_fields", "schema.untracked_fields", "schema.new_fields",
    "schema.removed_fields", "schema.type_changes", "schema.contract_violations",
    "quality.completeness", "quality.validity", "quality.uniqueness", "quality.timeliness",
    "quality.consistency")
FIELD_METRICS = (
    "completeness.null_ratio", "completeness.empty_ratio", "distribution.min",
    "distribution.max", "distribution.mean", "distribution.std", "distribution.p01",
    "distribution.p05", "distribution.p25", "distribution.p50", "distribution.p75",
    "distribution.p95", "distribution.p99", "distribution.distinct_count",
    "distribution.top_k_share", "distribution.psi", "distribution.ks", "distribution.js",
    "distribution.wasserstein", "distribution.psi_baseline", "distribution.ks_baseline",
    "distribution.js_baseline", "distribution.wasserstein_baseline")


def _window_points(fields: int, index: int) -> list[MetricPoint]:
    points = [MetricPoint(metric, float(index % 7 + n)) for n, metric in
              enumerate(DATASET_METRICS)]
    points += [MetricPoint(metric, 0.001 * (index + n), f"field_{f:02d}")
               for f in range(fields) for n, metric in enumerate(FIELD_METRICS)]
    return points


def _write_window(engine, names: list[str], fields: int, index: int) -> None:
    start = index * WINDOW
    points = _window_points(fields, index)
    with engine.begin() as conn:
        for name in names:
            metric_store.create_window(conn, dataset=name, window_start=start,
                                       window_end=start + WINDOW, points=points)
        # every point scored, as the detectors leave them (one statement, not one per point)
        conn.execute(text("UPDATE metric_points SET score = 0.1 WHERE window_start = :s"),
                      {"s": start})
        for name in names:
            checkpoints.mark_finalized(conn, dataset=name, until=start + WINDOW, baseline=b"",
                                       last_schema={})


def _seed(engine, names: list[str], fields: int, windows: int) -> None:
    body = "datasets:\n" + "".join(f"  - {{name: {n}, topic: {n}, owner: team-{i % 5}, "
                                   f"freshness_sla: 5m, quality_objective: 0.9}}\n"
                                   for i, n in enumerate(names))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        datasets.apply_spec(conn, spec=parse_spec(body))
        for name in names:
            checkpoints.set_partition_count(conn, dataset=name, partition_count=1)
            for kind in ("volume", "validity", "freshness"):
                incidents.create(conn, dataset=name, kind=kind, severity="warning",
                                 status="open", dedup_key=f"{name}:{kind}", opened_at=now,
                                 last_alert_at=now, summary="bench")
    for index in range(windows):
        _write_window(engine, names, fields, index)


def _scrape(registry: CollectorRegistry) -> tuple[float, int]:
    started = time.perf_counter()
    body = generate_latest(registry)
    return (time.perf_counter() - started) * 1000, len(body)


def _measure(engine, names: list[str], fields: int, windows: int, budget: int,
             repeat: int) -> dict[str, tuple[float, int]]:
    telemetry = Telemetry(CollectorRegistry())
    # one process: the leader lock is not what is measured (and a closed collector's lock
    # is released asynchronously, which would make the next one wait a scrape)
    collector = DatasetMetricsCollector(engine, field_series_budget=budget, elect=False)
    telemetry.registry.register(collector)
    try:
        out = {"first scrape": _scrape(telemetry.registry)}
        moved, still = [], []
        for n in range(repeat):
            _write_window(engine, names, fields, windows + n)
            moved.append(_scrape(telemetry.registry))
            still.append(_scrape(telemetry.registry))
        out["every dataset one window on"] = (statistics.median(m[0] for m in moved),
                                              moved[-1][1])
        out["nothing changed"] = (statistics.median(s[0] for s in still), still[-1][1])
        return out
    finally:
        collector.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=50)
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    admin = os.environ.get("DQPULSE_DATABASE_URL",
                           "postgresql+psycopg://dqpulse@127.0.0.1:55432/dqpulse")
    url = create_database(admin, "dqpulse_bench_scrape")
    engine = make_engine(url)
    names = [f"ds_{i:03d}" for i in range(args.datasets)]
    try:
        started = time.perf_counter()
        _seed(engine, names, args.fields, args.windows)
        per_field = args.datasets * args.fields * len(FIELD_METRICS)
        print(f"{os.cpu_count()} CPUs, {platform.machine()}, "
              f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}")
        print(f"seeded {args.datasets} datasets x {args.fields} fields x {args.windows} "
              f"windows ({per_field} per-field series) in {time.perf_counter() - started:.0f}s")
        windows = args.windows
        for budget in (200, 2000, per_field):
            results = _measure(engine, names, args.fields, windows, budget, args.repeat)
            windows += args.repeat
            for case, (ms, size) in results.items():
                print(f"budget {budget:>6}  {case:<28} {ms:8.1f} ms  {size / 1024:8.1f} KiB")
    finally:
        engine.dispose()
        drop_database(admin, url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
