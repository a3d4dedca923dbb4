"""Console load times on the real stack: a dataset page over 30 days of 1-minute windows,
and the incidents page paging through 10,000 incidents.

WHAT THIS MEASURES
    A throwaway Postgres database (the local stack's server) is seeded with one dataset,
    ``--series`` metric series of 43,200 one-minute windows each (30 days; every point
    with a score and an explanation holding its expected band, as the detectors write
    them) and ``--incidents`` incidents. ``dqpulse api`` serves it; Debian's chromium
    (Playwright) opens the console:

    1. ``/ui/datasets/bench?range=30d``: time from navigation to the first screen of
       charts drawn (``window.dqpulse.ready``: every chart in view has its points): the
       first load after the API started, a first visit with an empty browser cache (a new
       browser context; median of 3) and reloads (median). The page asks for each series
       with ``step=7200`` (360 buckets), aggregated in Postgres.
    2. The history API alone, one series over 30 days: ``step=7200`` against the baseline
       of reading the raw 43,200 points (``limit=100000``, no step); ratio printed.
    3. ``/ui/incidents?status=``: the first page, then ``--pages`` clicks on "Older"
       (keyset cursor, 50 per page): median and max per page; then every incident through
       the API by cursor, 500 a page.

Usage:
    python bench/console_load.py [--series 24] [--incidents 10000] [--pages 20]
Needs the local stack (``deploy/local/stack up``; DQPULSE_DATABASE_URL names its server)
and chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.console_browser import ConsolePage, launch_browser  # noqa: E402
from tests.integration.helpers import create_database, drop_database  # noqa: E402

DAYS = 30
WINDOW = 60
SPEC = """
datasets:
  - name: bench
    topic: bench
    event_time: ts
    window: 1m
    owner: payments
    freshness_sla: 5m
    fields:
      amount: {type: number, min: 0}
"""
FAMILIES = [
    ("volume.records", ""), ("volume.bytes", ""), ("volume.late_records", ""),
    ("freshness.seconds_since_last_record", ""), ("freshness.event_lag_p95_seconds", ""),
    ("freshness.consumer_lag_records", ""), ("completeness.null_ratio", "amount"),
    ("completeness.null_ratio", "country"), ("completeness.null_ratio", "email"),
    ("validity.violation_ratio", "amount:min"), ("validity.violation_ratio", "country:allowed"),
    ("uniqueness.duplicate_ratio", "order_id"), ("distribution.mean", "amount"),
    ("distribution.p95", "amount"), ("distribution.psi", "amount"),
    ("distribution.distinct_count", "country"), ("schema.new_fields", ""),
    ("schema.type_changes", ""), ("quality.completeness", ""), ("quality.validity", ""),
    ("quality.timeliness", ""), ("quality.uniqueness", ""), ("quality.consistency", ""),
    ("anomaly.autoencoder", ""),
]


def _seed(url: str, series: int, incidents: int, end: float) -> int:
    windows = DAYS * 86400 // WINDOW
    start = end - windows * WINDOW
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    rows = 0
    with psycopg.connect(plain) as conn, conn.cursor() as cur:
        for metric, field in FAMILIES[:series]:
            buffer = io.StringIO()
            for i in range(windows):
                t = start + i * WINDOW
                value = 500 + 100 * ((i % 1440) / 1440) + (i * 7919 % 50)
                anomalous = i % 5000 == 0
                explanation = json.dumps({"expected_low": 480.0, "expected_high": 660.0,
                                          "observed": value, "direction": None})
                buffer.write(f"bench\t{metric}\t{field}\t{t}\t{t + WINDOW}\t{value}\t"
                             f"{0.9 if anomalous else 0.05}\t{'t' if anomalous else 'f'}\t"
                             f"{explanation}\n")
            buffer.seek(0)
            with cur.copy("COPY metric_points (dataset, metric, field, window_start, "
                          "window_end, value, score, anomalous, explanation) FROM STDIN") as copy:
                copy.write(buffer.read())
            rows += windows
        opened = datetime.fromtimestamp(start, UTC)
        buffer = io.StringIO()
        for i in range(incidents):
            at = opened + timedelta(minutes=4 * i)
            buffer.write(f"bench\tvolume\tvolume.records\t\\N\twarning\tresolved\tk{i}\t"
                         f"{at.isoformat()}\t{at.isoformat()}\t{at.isoformat()}\t"
                         f"bench: volume.records dropped (#{i})\t0.9\t"
                         f"{start + 240 * i}\n")
        buffer.seek(0)
        with cur.copy("COPY incidents (dataset, kind, metric, field, severity, status, "
                      "dedup_key, opened_at, resolved_at, last_alert_at, summary, score, "
                      "first_window_start) FROM STDIN") as copy:
            copy.write(buffer.read())
        cur.execute("ANALYZE")
        conn.commit()
    return rows


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=24, choices=range(1, len(FAMILIES) + 1),
                        metavar=f"1..{len(FAMILIES)}")
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--reloads", type=int, default=5)
    args = parser.parse_args()

    admin = os.environ.get("DQPULSE_DATABASE_URL",
                           "postgresql+psycopg://dqpulse@127.0.0.1:55432/dqpulse")
    url = create_database(admin, "dqpulse_bench_console")
    api = None
    try:
        end = (time.time() // WINDOW) * WINDOW
        with tempfile.TemporaryDirectory() as folder:
            spec = Path(folder) / "dqpulse.yaml"
            spec.write_text(SPEC)
            env = {**os.environ, "DQPULSE_DATABASE_URL": url, "DQPULSE_AUTH": "open",
                   "DQPULSE_LOG_LEVEL": "WARNING"}
            subprocess.run([sys.executable, "-m", "workers.cli", "apply", "-f", str(spec)],
                           env=env, check=True, capture_output=True)
            t0 = time.perf_counter()
            rows = _seed(url, args.series, args.incidents, end)
            print(f"seeded {rows:,} metric points ({args.series} series x {rows // args.series:,}"
                  f" windows) and {args.incidents:,} incidents in "
                  f"{time.perf_counter() - t0:.1f}s")
            port = _free_port()
            api = subprocess.Popen([sys.executable, "-m", "workers.cli", "api", "--port",
                                    str(port)], env=env)
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            _api_history(base, end)
            _browser(base, args)
    finally:
        if api is not None:
            api.terminate()
            api.wait(20)
        drop_database(admin, url)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}, "
          f"Python {platform.python_version()}; {datetime.now(UTC):%Y-%m-%d %H:%M}Z; "
          f"load average at the end (1, 5, 15 min): {load}")
    return 0


def _api_history(base: str, end: float) -> None:
    start = end - DAYS * 86400
    path = f"{base}/api/v1/datasets/bench/metrics/volume.records"

    def timed(params: dict[str, object]) -> tuple[float, int]:
        t0 = time.perf_counter()
        body = httpx.get(path, params=params, timeout=60).json()
        return time.perf_counter() - t0, len(body["points"])

    timed({"start": start, "end": end + WINDOW, "step": 7200})  # warm the connection pool
    stepped = [timed({"start": start, "end": end + WINDOW, "step": 7200}) for _ in range(5)]
    raw = [timed({"start": start, "end": end + WINDOW, "limit": 100_000}) for _ in range(3)]
    s_med = statistics.median(t for t, _ in stepped)
    r_med = statistics.median(t for t, _ in raw)
    print(f"history API, 30 days of 1-minute windows, one series: step=7200 -> "
          f"{stepped[0][1]} buckets in {s_med * 1000:.0f} ms (median of 5); raw -> "
          f"{raw[0][1]:,} points in {r_med * 1000:.0f} ms (baseline, median of 3); "
          f"ratio {r_med / s_med:.1f}x")


def _browser(base: str, args: argparse.Namespace) -> None:
    with launch_browser() as browser:
        console = ConsolePage(browser, base)
        page = console.page
        page.goto("about:blank")  # the renderer is up: the first load times the app, not chromium
        times = []
        for attempt in range(args.reloads + 1):
            t0 = time.perf_counter()
            page.goto("/ui/datasets/bench?range=30d")
            console.wait_ready()
            elapsed = time.perf_counter() - t0
            drawn = page.evaluate("Object.keys(window.dqpulse.charts).length")
            points = console.chart_points("volume.records")
            times.append(elapsed)
            label = "first load after the API started" if attempt == 0 else f"reload {attempt}"
            print(f"dataset page 30d ({label}): first screen ({drawn} charts, "
                  f"{points} buckets each) in {elapsed * 1000:.0f} ms")
        # a person's first visit: a browser with an empty cache, against an API that has
        # been serving for a while (its connection pool and statement cache are warm)
        fresh_visits = []
        for _ in range(3):
            fresh = ConsolePage(browser, base)
            fresh.page.goto("about:blank")
            t0 = time.perf_counter()
            fresh.page.goto("/ui/datasets/bench?range=30d")
            fresh.wait_ready()
            fresh_visits.append(time.perf_counter() - t0)
            fresh.close()
            fresh.assert_no_errors()
        print(f"dataset page 30d: first load after the API started {times[0] * 1000:.0f} ms; "
              f"first visit with an empty browser cache (median of 3) "
              f"{statistics.median(fresh_visits) * 1000:.0f} ms; reloads median "
              f"{statistics.median(times[1:]) * 1000:.0f} ms, max "
              f"{max(times[1:]) * 1000:.0f} ms (target < 1000 ms)")

        t0 = time.perf_counter()
        console.open("/ui/incidents?status=")
        first = time.perf_counter() - t0
        per_page = []
        seen = set(page.locator("#incidents tbody tr[data-incident]").evaluate_all(
            "rs => rs.map(r => r.dataset.incident)"))
        for _ in range(args.pages):
            before = page.locator("#page-info").inner_text()
            t0 = time.perf_counter()
            page.click("#next-page")
            page.wait_for_function(
                "b => document.getElementById('page-info').textContent !== b", arg=before)
            per_page.append(time.perf_counter() - t0)
            seen.update(page.locator("#incidents tbody tr[data-incident]").evaluate_all(
                "rs => rs.map(r => r.dataset.incident)"))
        print(f"incidents page ({args.incidents:,} incidents): first page {first * 1000:.0f} ms;"
              f" {args.pages} x 'Older': median {statistics.median(per_page) * 1000:.0f} ms, "
              f"max {max(per_page) * 1000:.0f} ms; {len(seen):,} distinct incidents shown")
        console.close()
        console.assert_no_errors()
    # the deepest page through the API, by cursor
    cursor = None
    pages = 0
    t0 = time.perf_counter()
    with httpx.Client(base_url=base, timeout=30) as client:
        while True:
            body = client.get("/api/v1/incidents",
                              params={"limit": 500, **({"cursor": cursor} if cursor else {})}
                              ).json()
            pages += 1
            cursor = body["next_cursor"]
            if not cursor:
                break
    print(f"incidents API: all {args.incidents:,} by cursor in {pages} pages of 500, "
          f"{(time.perf_counter() - t0) * 1000:.0f} ms in all")


if __name__ == "__main__":
    raise SystemExit(main())
