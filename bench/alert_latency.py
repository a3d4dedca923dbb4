"""Alert delivery latency: anomaly handed to ``process_window`` -> signed webhook received.

WHAT THIS MEASURES (and what it does not)
    The alerting half of detection latency: from the moment the window hook commits an
    anomaly (incident + outbox row, one transaction) to the moment a real loopback HTTP
    receiver has the signed webhook, through a running notifier loop
    (:func:`workers.notify.run_notifier` in a thread, polling every ``--poll-interval``).
    It does NOT include Kafka, ingest, windowing or scoring: the full issue target
    ("first bad record produced to Kafka -> webhook received, p95 <= one window + 5 s with
    10 s windows") adds the window wait (<= window + lateness) and the finalize cadence on
    top of this number; the lead wires that end-to-end run once the pipeline hook exists.

    Baseline, measured in the same run: a direct signed POST of the same message to the same
    receiver (the HTTP floor). Printed: p50/p95/max of both and the ratio.

Usage:
    python bench/alert_latency.py [--database-url URL] [--incidents 200] [--poll-interval 0.1]
--database-url must already be at alembic head (``dqpulse migrate``); without it the
bench uses a temporary SQLite database that it migrates itself.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

from dqpulse.alerts import incidents as inc
from dqpulse.alerts.anomalies import Anomaly
from dqpulse.alerts.dispatch import DispatchOptions
from dqpulse.alerts.notifiers.base import example_message
from dqpulse.alerts.notifiers.webhook import WebhookNotifier, verify_signature
from dqpulse.config import Settings
from dqpulse.spec import DatasetSpec, NotificationSpec, Spec
from dqpulse.store.db import make_engine, upgrade_to_head
from workers.notify import run_notifier

SECRET = "bench-secret"


class _Receiver:
    def __init__(self) -> None:
        self.received: dict[str, float] = {}
        self.event = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.perf_counter()
                ok = verify_signature(SECRET, self.headers.get("X-Dqpulse-Timestamp", ""),
                                      body, self.headers.get("X-Dqpulse-Signature", ""))
                key = orjson.loads(body).get("dataset", "")
                with receiver.event:
                    receiver.received.setdefault(key, arrived)
                    receiver.event.notify_all()
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, key: str, timeout_s: float = 30.0) -> float:
        deadline = time.monotonic() + timeout_s
        with self.event:
            while key not in self.received:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(key)
                self.event.wait(left)
            return self.received[key]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _show(name: str, values: list[float]) -> None:
    print(f"{name:<38} n={len(values):4d}  p50={_pct(values, .5) * 1000:8.1f} ms  "
          f"p95={_pct(values, .95) * 1000:8.1f} ms  max={max(values) * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--poll-interval", type=float, default=0.1)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    url = args.database_url or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    if not args.database_url:
        upgrade_to_head(url)
    engine = make_engine(url)
    receiver = _Receiver()
    channel = NotificationSpec(name="bench", type="webhook", url=receiver.url, secret=SECRET,
                               rate_limit_per_minute=100_000)

    # baseline: the same signed message, POSTed directly
    direct = WebhookNotifier(channel, client=httpx.Client(timeout=5))
    baseline = []
    for i in range(args.incidents):
        key = f"direct-{i}"
        started = time.perf_counter()
        direct.send(example_message(dataset=key))
        baseline.append(receiver.wait(key) - started)
    direct.close()

    datasets = [DatasetSpec(name=f"bench-{i}", topic="bench", window=10.0)
                for i in range(args.incidents)]
    spec = Spec(datasets=datasets, notifications=[channel])
    stop = threading.Event()
    worker = threading.Thread(target=run_notifier, args=(Settings(), engine, spec),
                              kwargs={"stop_event": stop, "poll_interval_s": args.poll_interval,
                                      "options": DispatchOptions(base_backoff_s=0.05,
                                                                 max_backoff_s=1.0)},
                              daemon=True)
    worker.start()
    latencies = []
    start_s = datetime.now(UTC).timestamp() // 10 * 10
    for ds in datasets:
        anomaly = Anomaly(ds.name, "volume", "volume.records", "", start_s, start_s + 10,
                              0.99, None, {"observed": 0.0, "expected_low": 90.0,
                                           "expected_high": 110.0, "direction": "down"})
        started = time.perf_counter()
        with engine.begin() as conn:
            inc.process_window(conn, dataset=ds, window_start=start_s, window_end=start_s + 10,
                               anomalies=[anomaly], notifications=[channel],
                               public_url="http://127.0.0.1:8000")
        latencies.append(receiver.wait(ds.name) - started)
        time.sleep(0.003)
    stop.set()
    worker.join(timeout=10)
    engine.dispose()

    print(f"database: {engine.dialect.name}; notifier poll interval {args.poll_interval}s")
    _show("direct signed POST (baseline)", baseline)
    _show("anomaly commit -> webhook received", latencies)
    print(f"ratio p50 {statistics.median(latencies) / statistics.median(baseline):.1f}x, "
          f"p95 {_pct(latencies, .95) / _pct(baseline, .95):.1f}x "
          f"(the notifier's poll interval dominates; end-to-end adds window + lateness)")


if __name__ == "__main__":
    main()
