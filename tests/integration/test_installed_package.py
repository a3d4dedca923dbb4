"""What the image runs: the wheel, installed in a clean virtualenv with no source tree on the
path, runs migrate, apply, the API, two ingest workers and the notifier against the real
local stack; records produced to Kafka come back as metrics through the API (exact count)
and a signed-webhook receiver gets the incident."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.helpers import json_bytes, produce, stop_processes, wait_until
from tests.integration.receivers import webhook_receiver

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 10
WINDOWS = 30
BROKEN = range(20, 24)  # windows with negative amounts: a validity rule breaks
SECRET = "wheel-test-secret"
_SKIP = {".git", ".venv", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache",
         ".pytest_cache", ".run", ".cache", "tests", "bench", "docs"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bin/`` of a fresh virtualenv holding only the wheel built from this tree (and its
    dependencies from PyPI or pip's cache)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    shutil.copytree(ROOT, source, ignore=lambda _d, names: [n for n in names if n in _SKIP
                                                            or n.endswith(".egg-info")])
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(base / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = list((base / "dist").glob("dqpulse-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                             "--disable-pip-version-check", str(wheel)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    shutil.rmtree(source)  # nothing of the source tree is left to import from
    return venv / "bin"


def _spec(topic: str, url: str) -> str:
    return f"""
datasets:
  - name: orders
    topic: {topic}
    event_time: ts
    window: {WINDOW}s
    lateness: 0s
    owner: payments
    fields:
      amount: {{type: number, min: 0}}
notifications:
  - name: oncall
    type: webhook
    url: {url}
    secret: ${{WHEEL_TEST_SECRET}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _records(base: float, per_window: int) -> list[tuple[int | None, bytes]]:
    out: list[tuple[int | None, bytes]] = []
    for window in range(WINDOWS):
        for i in range(per_window):
            amount = -5.0 if window in BROKEN and i % 2 == 0 else 10.0 + (i * 7919 % 90)
            out.append((None, json_bytes({"ts": base + window * WINDOW + i * WINDOW / per_window,
                                          "amount": amount})))
    return out


def test_the_installed_wheel_runs_the_whole_service(
        installed: Path, fresh_db: str, make_topic: Any, kafka_bootstrap: str,
        tmp_path: Path) -> None:
    topic = make_topic("orders", partitions=4)
    base = math.floor(time.time() / WINDOW) * WINDOW - (WINDOWS + 3) * WINDOW
    records = _records(base, 40)
    produce(kafka_bootstrap, topic, records)
    receiver = webhook_receiver(SECRET)
    spec = tmp_path / "dqpulse.yaml"
    spec.write_text(_spec(topic, receiver.url))
    # a user's environment: the installed venv's commands, no PYTHONPATH, cwd outside the repo
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DQPULSE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({"DQPULSE_DATABASE_URL": fresh_db, "DQPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                "DQPULSE_KAFKA_GROUP": f"g-{topic}", "DQPULSE_IDLE_PARTITION_TIMEOUT_S": "1",
                "DQPULSE_CHECKPOINT_INTERVAL_S": "0.5", "DQPULSE_WORKER_METRICS_PORT": "0",
                "DQPULSE_AUTOENCODER": "off", "DQPULSE_LOG_LEVEL": "WARNING",
                "PATH": f"{installed}:{os.environ.get('PATH', '')}"})
    # only the notifier holds the channel's secret: apply stores the ${VAR} reference
    notifier_env = {**env, "WHEEL_TEST_SECRET": SECRET}
    dqpulse = str(installed / "dqpulse")

    def cli(*args: str) -> str:
        result = subprocess.run([dqpulse, *args], env=env, cwd=tmp_path, capture_output=True,
                                text=True, timeout=180)
        assert result.returncode == 0, (args, result.stdout[-1000:], result.stderr[-2000:])
        return result.stdout

    where = subprocess.run([str(installed / "python"), "-c",
                            "import dqpulse, service, workers; print(dqpulse.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "site-packages" in where.stdout and str(ROOT) not in where.stdout

    cli("migrate")
    applied = cli("apply", "-f", str(spec))
    assert "model version 1 applied" in applied, applied
    token = cli("token", "create", "--name", "wheel", "--role", "admin").strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {token}"}
    port = _free_port()
    quiet = {"env": env, "cwd": tmp_path, "stdout": subprocess.DEVNULL,
             "stderr": subprocess.DEVNULL}
    processes = [
        subprocess.Popen([dqpulse, "api", "--port", str(port)], **quiet),  # type: ignore[call-overload]
        subprocess.Popen([dqpulse, "worker", "ingest", "--max-seconds", "240"], **quiet),  # type: ignore[call-overload]
        subprocess.Popen([dqpulse, "worker", "ingest", "--max-seconds", "240"], **quiet),  # type: ignore[call-overload]
        subprocess.Popen([dqpulse, "worker", "notify"],  # type: ignore[call-overload]
                         **{**quiet, "env": notifier_env}),
    ]
    base_url = f"http://127.0.0.1:{port}/api/v1"
    try:
        def counted() -> int:
            try:
                points = httpx.get(f"{base_url}/datasets/orders/metrics/volume.records",
                                   headers=auth, timeout=3).json()["points"]
            except (httpx.HTTPError, KeyError, ValueError):
                return -1
            return int(sum(p["value"] for p in points))

        # every record produced, counted exactly once across the two workers
        wait_until(lambda: counted() >= len(records), 150, interval_s=1,
                   message="every produced record through the API")
        time.sleep(2)
        assert counted() == len(records)
        received = receiver.wait_for(1, timeout_s=60)
        opened = [r for r in received if r.json.get("event") == "opened"]
        assert opened, [r.json for r in received]
        assert opened[0].json["dataset"] == "orders"
        assert not receiver.rejected()  # every delivery carried a valid signature
        model = httpx.get(f"{base_url}/model", headers=auth, timeout=5)
        assert model.status_code == 200 and model.json()["version"] == 1
        assert model.json()["model"]["notifications"][0]["secret"] == "${WHEEL_TEST_SECRET}"
        assert SECRET not in model.text
    finally:
        stop_processes(processes)
        receiver.down()
