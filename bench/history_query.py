"""Metric history at 10M+ points on the real Postgres: query latency, flatness from 1M to
10M stored points, the write cost of rollups, and the time to drop one day partition.

WHAT THIS MEASURES
    A throwaway database on the local stack's Postgres, at ``alembic upgrade head``
    (``metric_points`` partitioned by UTC day). ``--series`` series (``--per-dataset`` per
    dataset) of ``--days`` days of 15-minute windows each, every point with a score and an
    explanation holding its expected band as the detectors write them, are loaded with
    ``generate_series`` (the partitions for the days are created first, as the retention
    job keeps them); the hourly and daily rollups are then built by the same SQL that
    recomputes a replayed window's buckets. Queries go through the API app in process
    (FastAPI's TestClient: routing, validation, SQL, JSON), each for a random series and
    a random end inside the loaded range:

    1. 7 days of one series at its raw step (672 points, no ``step``): p50 / p99.
    2. 90 days of one series downsampled to at most 500 points: ``step=18000`` (5 h, 432
       buckets, read from the hourly rollup), and as the baseline the same range at
       ``step=15552`` (90 d / 500: not a whole number of hours, so aggregated from the raw
       points). p50 / p99.
    Both are measured first with 1/10 of the series loaded (``--series`` / 10 series:
    about 1M points), then with all of them (about 10M points), on the series of the
    first load: the ratio says whether a query's cost grows with the stored total.
    3. The write path: ``--write-windows`` windows of one dataset (``--per-dataset``
       points each) written by ``metric_store.create_window`` + ``update_scores`` (the
       points and their rollup upserts, as finalize writes them), median ms per window.
    4. Retention: the oldest day partition dropped by ``partitions.drop_partitions_before``
       (a catalog change; no row is read), timed.

Usage:
    python bench/history_query.py [--series 1000] [--days 105] [--queries 300]
Needs the local stack's Postgres (DQPULSE_DATABASE_URL names its server). The load takes
minutes: run it once.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402

from dqpulse.records import MetricPoint  # noqa: E402
from dqpulse.spec import parse_spec  # noqa: E402
from dqpulse.store import datasets as dataset_store  # noqa: E402
from dqpulse.store import metrics as metric_store  # noqa: E402
from dqpulse.store import partitions, rollups  # noqa: E402
from dqpulse.store.db import make_engine, upgrade_to_head  # noqa: E402
from tests.integration.helpers import create_database, drop_database  # noqa: E402

WINDOW = 900
DAY = 86_400
END = 1_798_761_600.0  # 2027-01-01 00:00 UTC: the loaded range ends here


def _spec(datasets: int) -> str:
    names = [f"ds{d:03d}" for d in range(datasets)] + ["written"]
    return "datasets:\n" + "".join(
        f"  - name: {name}\n    topic: {name}\n    window: 15m\n" for name in names)


def _load(engine: Engine, first: int, last: int, per_dataset: int, days: int) -> float:
    """Series ``first``..``last``-1 (dataset = series // per_dataset), one INSERT per day."""
    start = END - days * DAY
    began = time.perf_counter()
    for day in range(days):
        lo = start + day * DAY
        with engine.begin() as conn:
            conn.execute(text("""
                INSERT INTO metric_points (dataset, metric, field, window_start, window_end,
                                           value, score, anomalous, explanation)
                SELECT 'ds' || lpad((s / :per)::text, 3, '0'), 'bench.value',
                       'f' || (s % :per), t::float8, (t + :w)::float8,
                       500 + 100 * sin(t / 86400.0 * 6.283) + (s * 7 + t / 900) % 50,
                       ((s + t / 900) % 97) / 100.0,
                       (s + t / 900) % 4999 = 0,
                       json_build_object('expected_low', 380, 'expected_high', 660,
                                         'observed', 500, 'direction', NULL)
                FROM generate_series(:first, :last - 1) AS s,
                     generate_series(:lo, :hi - :w, :w) AS t
            """), {"per": per_dataset, "w": WINDOW, "first": first, "last": last,
                   "lo": int(lo), "hi": int(lo) + DAY})
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    with engine.begin() as conn:
        rollups.rebuild(conn, start=start, end=END)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    return time.perf_counter() - began


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def _timed(call: Callable[[], None], count: int) -> tuple[float, float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    return _percentiles(samples)


def _queries(clients: dict[str, httpx.Client], pids: dict[str, int], engine: Engine,
             series: int,
             per_dataset: int, days: int, count: int, rng: random.Random
             ) -> dict[str, dict[str, tuple[float, float]]]:
    """p50/p99 over HTTP for each API (the same random queries, sent to each in turn, so a
    change of load hits all alike), then p50/p99 of the store call alone."""
    start = END - days * DAY

    def params(range_days: int) -> tuple[str, dict[str, Any]]:
        s = rng.randrange(series)
        end = rng.uniform(start + range_days * DAY, END)
        end -= end % WINDOW
        return f"ds{s // per_dataset:03d}", {"metric": "bench.value",
                                               "field": f"f{s % per_dataset}",
                                               "start": end - range_days * DAY, "end": end}

    def over_http(client: httpx.Client, dataset: str, query: dict[str, Any],
                  step: float | None, expect: int) -> float:
        query = {k: v for k, v in query.items() if k != "metric"}
        if step is not None:
            query["step"] = step
        began = time.perf_counter()
        response = client.get(f"/api/v1/datasets/{dataset}/metrics/bench.value",
                              params=query)
        body = response.json()
        took = (time.perf_counter() - began) * 1000
        assert response.status_code == 200 and not body["truncated"], body
        assert expect - 1 <= len(body["points"]) <= expect + 1, len(body["points"])
        return took

    def in_store(dataset: str, query: dict[str, Any], step: float | None) -> float:
        began = time.perf_counter()
        with engine.begin() as conn:
            if step is None:
                metric_store.get_points(conn, dataset=dataset, limit=10_001, **query)
            else:
                metric_store.get_buckets(conn, dataset=dataset, step=step,
                                         limit=10_001, **query)
        return (time.perf_counter() - began) * 1000

    shapes = {"7d raw": (7, None, 672), "90d step=18000 (rollup_1h)": (90, 18000, 432),
              "90d step=15552 (raw aggregate)": (90, 15552, 500)}
    for range_days, step, expect in shapes.values():  # warm the caches and the pool
        for _ in range(10):
            for client in clients.values():
                over_http(client, *params(range_days), step, expect)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name, (range_days, step, expect) in shapes.items():
        n = count if "raw aggregate" not in name else max(30, count // 5)
        samples: dict[str, list[float]] = {label: [] for label in [*clients, "store"]}
        cpu = {label: _cpu_seconds(pids[label]) for label in clients}
        for index in range(n):
            dataset, query = params(range_days)
            order = list(clients.items())
            if index % 2:
                order.reverse()  # neither API always goes first
            for label, client in order:
                samples[label].append(over_http(client, dataset, query, step, expect))
            samples["store"].append(in_store(dataset, query, step))
        out[name] = {label: _percentiles(values) for label, values in samples.items()}
        for label in clients:  # CPU of the API process per query: what load cannot inflate
            used = (_cpu_seconds(pids[label]) - cpu[label]) * 1000 / n
            out[name][f"{label} CPU"] = (used, used)
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _print_queries(results: dict[str, dict[str, tuple[float, float]]]) -> None:
    for name, by_label in results.items():
        cells = [f"{label} {p50:.1f} ms/query" if label.endswith("CPU") else
                 f"{label} p50 {p50:.1f} / p99 {p99:.1f} ms"
                 for label, (p50, p99) in by_label.items()]
        print(f"  {name} [load {_load_average()}]: " + "; ".join(cells), flush=True)
        if "compared" in by_label:
            base, new = by_label["compared"], by_label["HTTP"]
            cpu = by_label["HTTP CPU"][0] / by_label["compared CPU"][0]
            print(f"    this / compared: HTTP p50 {new[0] / base[0]:.2f}, p99 "
                  f"{new[1] / base[1]:.2f}, API CPU per query {cpu:.2f}")


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _write_cost(engine: Engine, per_dataset: int, windows: int) -> float:
    samples = []
    points = [MetricPoint("bench.write", float(i), f"f{i}") for i in range(per_dataset)]
    for w in range(windows):
        at = END - 30 * DAY + w * WINDOW
        began = time.perf_counter()
        with engine.begin() as conn:
            metric_store.create_window(conn, dataset="written", window_start=at,
                                       window_end=at + WINDOW, points=points)
            metric_store.update_scores(conn, dataset="written", window_start=at, scores=[
                ("bench.write", p.field, 0.1, False, {"expected_low": 0.0,
                                                       "expected_high": 1.0})
                for p in points])
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


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


def _start_api(root: Path, url: str) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """``dqpulse api`` of the checkout at ``root`` on ``url``, on a free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "api", "--port", str(port)], cwd=root,
        env={**os.environ, "DQPULSE_DATABASE_URL": url, "DQPULSE_LOG_LEVEL": "WARNING",
             "DQPULSE_AUTH": "open",  # a throwaway database on loopback: no tokens
             "PYTHONPATH": str(root)})
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    for _ in range(150):
        try:
            client.get("/api/v1/datasets")
            break
        except httpx.TransportError:
            time.sleep(0.2)
    return api, client


def _prepare(engine: Engine, args: argparse.Namespace) -> None:
    spec = parse_spec(_spec(args.series // args.per_dataset))
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=spec)
        existing = partitions.day_partitions(conn)  # the migration's days
        for day in range(args.days):
            if END - (args.days - day) * DAY not in existing:
                partitions.create_day(conn, END - (args.days - day) * DAY)


def _stored(engine: Engine) -> str:
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM metric_points")).scalar()
        size = conn.execute(text(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM "
            "pg_class c WHERE c.relname LIKE 'metric_points_p%'")).scalar()
    return f"{stored:,} points ({size})"


def _write_and_retention(engine: Engine, args: argparse.Namespace) -> None:
    write_ms = _write_cost(engine, args.per_dataset, args.write_windows)
    print(f"write path: {write_ms:.1f} ms per window of {args.per_dataset} points "
          "(points + hourly and daily rollups + scores), median")
    with engine.begin() as conn:
        oldest = min(partitions.day_partitions(conn))
        rows = conn.execute(text(
            f"SELECT count(*) FROM {partitions.partition_name(oldest)}")).scalar()
    with engine.begin() as conn:
        began = time.perf_counter()
        dropped = partitions.drop_partitions_before(conn, oldest + DAY)
    total = time.perf_counter() - began
    print(f"retention: dropped {[d.name for d in dropped]} ({rows:,} rows) in "
          f"{dropped[0].seconds * 1000:.1f} ms (DROP), {total * 1000:.1f} ms with commit")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--per-dataset", type=int, default=100)
    parser.add_argument("--days", type=int, default=105)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--write-windows", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--database", metavar="NAME",
                        help="a named database on the same server, kept: loaded (both "
                             "stages, no queries) if it does not exist yet, else reused: "
                             "only the queries at the full size run")
    parser.add_argument("--compare", metavar="CHECKOUT", type=Path,
                        help="another checkout of dqpulse (e.g. a `git worktree` of an "
                             "older commit): its API is queried too, the same queries in "
                             "turn, and the ratio printed")
    args = parser.parse_args()
    if args.days < 91 or args.series % 10 or args.series % args.per_dataset:
        parser.error("--days must be > 90; --series a multiple of 10 and of --per-dataset")

    admin = os.environ.get("DQPULSE_DATABASE_URL",
                           "postgresql+psycopg://dqpulse@127.0.0.1:55432/dqpulse")
    reuse = args.database is not None and _exists(admin, args.database)
    if args.database is None:
        url = create_database(admin, "dqpulse_bench_history")
    elif reuse:
        url = admin.rsplit("/", 1)[0] + "/" + args.database
    else:
        url = _create_named(admin, args.database)
    engine = make_engine(url)
    rng = random.Random(13)
    apis: list[subprocess.Popen[bytes]] = []
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"load average {_load_average()}", flush=True)
    try:
        small = args.series // 10
        if args.database is not None and not reuse:
            _prepare(engine, args)
            for first, last in ((0, small), (small, args.series)):
                took = _load(engine, first, last, args.per_dataset, args.days)
                print(f"loaded {_stored(engine)} in {took:.0f} s", flush=True)
            print(f"kept database {args.database}: rerun with the same --database to query")
            return 0
        clients, pids = {}, {}
        for label, root in (("HTTP", ROOT), ("compared", args.compare)):
            if root is not None:
                api, clients[label] = _start_api(root.resolve(), url)
                apis.append(api)
                pids[label] = api.pid
        if reuse:
            label = _stored(engine)
            print(f"reusing {args.database}: {label}", flush=True)
            _print_queries(_queries(clients, pids, engine, small, args.per_dataset, args.days,
                                    args.queries, rng))
            return 0
        _prepare(engine, args)
        results = {}
        for first, last in ((0, small), (small, args.series)):
            took = _load(engine, first, last, args.per_dataset, args.days)
            label = _stored(engine)
            print(f"loaded {label} in {took:.0f} s", flush=True)
            results[label] = _queries(clients, pids, engine, small, args.per_dataset, args.days,
                                      args.queries, rng)
            _print_queries(results[label])
        (one, many) = results.values()
        for name in one:
            p50 = many[name]["HTTP"][0] / one[name]["HTTP"][0]
            p99 = many[name]["HTTP"][1] / one[name]["HTTP"][1]
            print(f"ratio 10x/1x, {name}: HTTP p50 {p50:.2f}, p99 {p99:.2f}")
        _write_and_retention(engine, args)
    finally:
        for api in apis:
            api.terminate()
            api.wait(10)
        engine.dispose()
        if args.database is None and not args.keep:
            drop_database(admin, url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
