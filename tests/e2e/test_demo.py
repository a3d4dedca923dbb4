"""The README's demo: `dqpulse demo` serves computed points within a minute."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_demo_serves_datasets_metrics_incidents_and_root_cause_within_a_minute(tmp_path):
    port = _free_port()
    database = f"sqlite:///{tmp_path / 'demo.db'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "demo", "--port", str(port), "--database",
         database, "--speed", "120", "--max-seconds", "90"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        points: list[dict] = []
        while time.monotonic() - started < 60:
            try:
                body = httpx.get(f"{base}/api/v1/datasets/orders/metrics/volume.records",
                                 timeout=2).json()
                points = [p for p in body.get("points", []) if p["value"]]
                if len(points) >= 3:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert len(points) >= 3, "no computed windows within a minute"
        datasets = httpx.get(f"{base}/api/v1/datasets", timeout=5).json()
        assert {d["name"] for d in datasets} == {"orders", "clicks"}
        assert all(0 < p["value"] < 10_000 for p in points)
        nulls = httpx.get(f"{base}/api/v1/datasets/orders/metrics/completeness.null_ratio",
                          params={"field": "amount"}, timeout=5).json()["points"]
        assert nulls and all(0 <= p["value"] <= 1 for p in nulls)
        # the demo injects a null spike in orders.amount at simulated minute 20
        deadline = time.monotonic() + 25
        incidents: list[dict] = []
        while time.monotonic() < deadline and not incidents:
            incidents = httpx.get(f"{base}/api/v1/incidents",
                                  params={"dataset": "orders"}, timeout=5).json()["items"]
            time.sleep(1)
        assert incidents, "the injected null spike opened no incident"
        cause = httpx.get(f"{base}/api/v1/incidents/{incidents[-1]['id']}/root-cause",
                          timeout=5).json()
        assert cause["suspects"] and "impacted" in cause
        lineage = httpx.get(f"{base}/api/v1/lineage", params={"dataset": "orders"},
                            timeout=5).json()
        assert {"source": "clicks", "target": "orders"}.items() <= lineage["edges"][0].items()
        assert httpx.get(f"{base}/docs", timeout=5).status_code == 200
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "dqpulse demo: API at" in output
