"""schemathesis 4 against a real ``dqpulse api`` process on a throwaway Postgres database.

Every check (server errors, status codes, content types, headers, response schemas,
positive and negative data, Allow on 405, auth, use-after-free, resource availability),
every phase (examples, coverage, fuzzing, stateful), a fixed seed in deterministic mode so
a run is repeatable. The API runs with auth required and the fuzzer holds an admin token:
it reaches every endpoint, and the auth checks send requests without it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from dqpulse.records import MetricPoint
from dqpulse.services import tokens as token_service
from dqpulse.spec import parse_spec
from dqpulse.store import datasets as dataset_store
from dqpulse.store import incidents as incident_store
from dqpulse.store import metrics as metric_store
from dqpulse.store import silences as silence_store
from dqpulse.store.db import make_engine
from tests.integration.helpers import stop_processes, wait_until

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).with_name("schemathesis.toml")
MIN_CASES = 2_000
SPEC = """
datasets:
  - {name: orders, topic: orders, owner: payments}
  - {name: clicks, topic: clicks, owner: growth}
lineage:
  - {from: clicks, to: orders}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _seed(url: str) -> str:
    """Datasets, incidents and silences to find, and an admin token for the fuzzer."""
    engine = make_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=parse_spec(SPEC))
        for index in range(1, 4):
            incident_store.create(
                conn, dataset="orders", kind="volume", metric="volume.records", field="",
                severity="critical", status="open", dedup_key=f"orders:volume:{index}",
                opened_at=now, last_alert_at=now, summary="volume dropped", score=1.0,
                owner="payments")
        silence_store.create(conn, dataset="orders", owner=None, kind=None, starts_at=now,
                             ends_at=now + timedelta(days=1), comment=None, created_by="seed")
        first = (int(now.timestamp()) // 60 - 120) * 60
        for index in range(120):  # two hours of one-minute windows for the history endpoint
            start = float(first + 60 * index)
            metric_store.create_window(conn, dataset="orders", window_start=start,
                                       window_end=start + 60, points=[
                                           MetricPoint("volume.records", float(index % 7)),
                                           MetricPoint("completeness.null_ratio", 0.01,
                                                       "amount")])
    token, _ = token_service.create_token(engine, name="fuzzer", role="admin")
    engine.dispose()
    return token


def test_schemathesis_finds_no_failure_in_the_api(fresh_db, tmp_path):
    token = _seed(fresh_db)
    port = _free_port()
    env = {**os.environ, "DQPULSE_DATABASE_URL": fresh_db, "DQPULSE_LOG_LEVEL": "WARNING",
           "DQPULSE_AUTH": "required"}
    env.pop("DQPULSE_API_TOKENS", None)
    api = subprocess.Popen([sys.executable, "-m", "workers.cli", "api", "--port", str(port)],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    report = tmp_path / "schemathesis.json"
    try:
        wait_until(lambda: _answers(f"{base}/healthz"), 60, message="dqpulse api listening")
        result = subprocess.run(
            [str(Path(sys.executable).with_name("st")), "--config-file", str(CONFIG), "run",
             f"{base}/openapi.json", "--checks", "all",
             "--header", f"Authorization: Bearer {token}",
             "--report", "json", "--report-json-path", str(report), "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    finally:
        stop_processes([api])
    summary = json.loads(report.read_text())
    tail = result.stdout[-6000:]
    assert result.returncode == 0, tail
    assert summary["failures"] == [] and summary["errors"] == [], tail
    assert summary["operations"]["tested"] == summary["operations"]["total"], tail
    assert {name: phase["status"] for name, phase in summary["phases"].items()
            if name != "examples"} == {"coverage": "success", "fuzzing": "success",
                                       "stateful": "success"}, tail
    # the admin token held to the end (no operation answered only 401/403)
    assert summary["warnings"]["missing_auth"] == [], tail
    assert summary["test_cases"]["generated"] >= MIN_CASES, tail


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
