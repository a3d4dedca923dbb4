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
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
# --compare runs this script with another checkout's code (its dqpulse) on the path
sys.path.insert(0, os.environ.get("DQPULSE_BENCH_CODE", str(ROOT)))

from dqpulse.records import MetricPoint  # noqa: E402
from dqpulse.services.exposition import DatasetMetricsCollector  # noqa: E402
from dqpulse.spec import parse_spec  # noqa: E402
from dqpulse.store import checkpoints, datasets, incidents  # noqa: E402
from dqpulse.store import metrics as metric_store  # noqa: E402
from dqpulse.store.db import make_engine, upgrade_to_head  # noqa: E402
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


try:  # what the API's /metrics serves
    from dqpulse.services.exposition import render  # noqa: E402
except ImportError:  # an older checkout (--compare): its route used generate_latest
    render = generate_latest


def _scrape(registry: CollectorRegistry) -> tuple[float, int, float]:
    """Wall ms, body bytes, and the CPU ms of this process (what contention cannot
    inflate much; the database's share is in the wall time only)."""
    started, cpu = time.perf_counter(), time.process_time()
    body = render(registry)
    return ((time.perf_counter() - started) * 1000, len(body),
            (time.process_time() - cpu) * 1000)


def _new_collector(engine, budget: int) -> tuple[DatasetMetricsCollector, CollectorRegistry]:
    telemetry = Telemetry(CollectorRegistry())
    # one process: the leader lock is not what is measured (and a closed collector's lock
    # is released asynchronously, which would make the next one wait a scrape)
    collector = DatasetMetricsCollector(engine, field_series_budget=budget, elect=False)
    telemetry.registry.register(collector)
    return collector, telemetry.registry


def _measure(engine, names: list[str], fields: int, windows: int, budget: int,
             repeat: int) -> dict[str, tuple[float, int, float]]:
    out = {}
    collector, registry = _new_collector(engine, budget)
    try:
        out["first scrape, cold process"] = _scrape(registry)
    finally:
        collector.close()
    collector, registry = _new_collector(engine, budget)
    try:
        if hasattr(collector, "warm"):  # the API collects once as it starts (warm(); its
            collector.collect()  # guard for a shared test connection does not apply here)
        out["first scrape after startup"] = _scrape(registry)
        moved, still = [], []
        for n in range(repeat):
            _write_window(engine, names, fields, windows + n)
            moved.append(_scrape(registry))
            still.append(_scrape(registry))
        for case, runs in (("every dataset one window on", moved), ("nothing changed", still)):
            out[case] = (statistics.median(r[0] for r in runs), runs[-1][1],
                         statistics.median(r[2] for r in runs))
        return out
    finally:
        collector.close()


def _windows_stored(engine) -> int:
    with engine.connect() as conn:
        top = conn.execute(text("SELECT max(window_start) FROM metric_points")).scalar()
    return 0 if top is None else int(top // WINDOW) + 1


def _exists(admin: str, name: str) -> bool:
    engine = make_engine(admin)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                     {"n": name}).scalar())
    finally:
        engine.dispose()


def _create_named(admin: str, name: str) -> str:
    engine = make_engine(admin)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            f'CREATE DATABASE "{name}"')
    engine.dispose()
    url = admin.rsplit("/", 1)[0] + "/" + name
    upgrade_to_head(url)
    return url


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _run_checkout(root: Path, url: str, args: argparse.Namespace, budget: int
                  ) -> dict[str, tuple[float, int, float]]:
    """One measurement by the bench of the checkout at ``root`` (its own code), as JSON."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scrape_cost.py"), "--url", url,
         "--datasets", str(args.datasets), "--fields", str(args.fields),
         "--repeat", str(args.repeat), "--budget", str(budget), "--json"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root),
                            "DQPULSE_BENCH_CODE": str(root)}, check=True,
        capture_output=True, text=True).stdout
    return {case: tuple(v) for case, v in json.loads(out.splitlines()[-1]).items()}


def _compare(url: str, args: argparse.Namespace, budgets: list[int]) -> None:
    """This checkout and ``--compare`` in turn, ``--rounds`` times, on the same database."""
    roots = {"this": ROOT, "compared": args.compare.resolve()}
    for budget in budgets:
        runs: dict[str, list[dict[str, tuple[float, int, float]]]] = {
            label: [] for label in roots}
        for round_ in range(args.rounds):
            order = list(roots.items()) if round_ % 2 == 0 else list(roots.items())[::-1]
            for label, root in order:
                runs[label].append(_run_checkout(root, url, args, budget))
        print(f"budget {budget} [load {_load_average()}], median of {args.rounds} rounds "
              "(wall ms; CPU ms of the scraping process):")
        for case in runs["this"][0]:
            this = [statistics.median(r[case][i] for r in runs["this"]) for i in (0, 2)]
            if not all(case in r for r in runs["compared"]):
                print(f"  {case:<30} this {this[0]:7.1f} ms (CPU {this[1]:6.1f})")
                continue
            base = [statistics.median(r[case][i] for r in runs["compared"]) for i in (0, 2)]
            print(f"  {case:<30} this {this[0]:7.1f} ms (CPU {this[1]:6.1f})  compared "
                  f"{base[0]:7.1f} ms (CPU {base[1]:6.1f})  ratio {this[0] / base[0]:.2f} "
                  f"(CPU {this[1] / base[1]:.2f})  body "
                  f"{runs['this'][-1][case][1] / 1024:.1f} KiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=50)
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", metavar="NAME",
                        help="a named database on the same server, kept and reused (seeded "
                             "if it does not exist yet)")
    parser.add_argument("--compare", metavar="CHECKOUT", type=Path,
                        help="another checkout of dqpulse (e.g. a `git worktree` of an older "
                             "commit): both measured in turn on the same data, ratios printed")
    parser.add_argument("--rounds", type=int, default=3, help="with --compare")
    parser.add_argument("--budget", type=int, action="append",
                        help="field series budget(s) (default: 200, 2000 and every series)")
    parser.add_argument("--url", help=argparse.SUPPRESS)  # --compare's child runs
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = [f"ds_{i:03d}" for i in range(args.datasets)]
    per_field = args.datasets * args.fields * len(FIELD_METRICS)
    budgets = args.budget or [200, 2000, per_field]
    if args.url:  # one measurement on a seeded database, for --compare
        engine = make_engine(args.url)
        try:
            result = _measure(engine, names, args.fields, _windows_stored(engine), budgets[0],
                              args.repeat)
        finally:
            engine.dispose()
        print(json.dumps(result))
        return 0
    admin = os.environ.get("DQPULSE_DATABASE_URL",
                           "postgresql+psycopg://dqpulse@127.0.0.1:55432/dqpulse")
    seeded = args.database is not None and _exists(admin, args.database)
    if args.database is None:
        url = create_database(admin, "dqpulse_bench_scrape")
    elif seeded:
        url = admin.rsplit("/", 1)[0] + "/" + args.database
    else:
        url = _create_named(admin, args.database)
    engine = make_engine(url)
    try:
        print(f"{os.cpu_count()} CPUs, {platform.machine()}, "
              f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
              f"load average {_load_average()}", flush=True)
        if not seeded:
            started = time.perf_counter()
            _seed(engine, names, args.fields, args.windows)
            print(f"seeded {args.datasets} datasets x {args.fields} fields x {args.windows} "
                  f"windows ({per_field} per-field series) in "
                  f"{time.perf_counter() - started:.0f}s", flush=True)
        if args.compare is not None:
            _compare(url, args, budgets)
            return 0
        windows = _windows_stored(engine)
        for budget in budgets:
            results = _measure(engine, names, args.fields, windows, budget, args.repeat)
            windows += args.repeat
            for case, (ms, size, cpu) in results.items():
                print(f"budget {budget:>6}  {case:<30} {ms:8.1f} ms (CPU {cpu:6.1f} ms)  "
                      f"{size / 1024:8.1f} KiB"
                      f"  [load {_load_average()}]", flush=True)
    finally:
        engine.dispose()
        if args.database is None:
            drop_database(admin, url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
