"""The shipped Alertmanager config on a real Alertmanager: while every ingest worker of a
stack is down, that stack's data alerts are muted (they measure nothing); one worker down
mutes nothing (its partitions move to the others), and another stack's alerts are never
muted (the rule's ``equal`` labels)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.integration.helpers import stop_processes, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    if BINARY is None:
        pytest.skip("no alertmanager binary (deploy/local/stack installs it)")
    port = _free_port()
    process = subprocess.Popen(
        [BINARY, f"--config.file={ROOT / 'deploy' / 'alertmanager' / 'alertmanager.yml'}",
         f"--storage.path={tmp_path}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 30, message="private alertmanager ready")
        yield url
    finally:
        stop_processes([process])


def _alert(**labels: str) -> dict[str, object]:
    now = datetime.now(UTC)
    return {"labels": {"severity": "warning", **labels},
            "annotations": {"summary": "test"},
            "startsAt": (now - timedelta(minutes=1)).isoformat(),
            "endsAt": (now + timedelta(minutes=10)).isoformat()}


def _inhibited(url: str) -> dict[tuple[str, str, str], bool]:
    alerts = httpx.get(f"{url}/api/v2/alerts", timeout=5).json()
    return {(a["labels"]["alertname"], a["labels"].get("dataset", ""),
             a["labels"].get("stack", "")): bool(a["status"]["inhibitedBy"]) for a in alerts}


def test_all_ingest_down_mutes_its_stacks_data_alerts_only(alertmanager: str) -> None:
    data = [_alert(alertname=name, dataset=ds, stack=stack)
            for name in ("DqpulseDatasetStale", "DqpulseQualityBelowObjective",
                         "DqpulseDecodeErrorsHigh")
            for ds, stack in (("orders", "a"), ("users", "b"))]
    one_worker = _alert(alertname="DqpulseWorkerDown", instance="w1:9108", job="dqpulse-ingest",
                        stack="b", severity="critical")
    response = httpx.post(f"{alertmanager}/api/v2/alerts", json=[*data, one_worker], timeout=5)
    assert response.status_code == 200
    wait_until(lambda: len(_inhibited(alertmanager)) == 7, 10, message="alerts received")
    time.sleep(1)
    assert not any(_inhibited(alertmanager).values()), "one worker down must mute nothing"

    all_down = _alert(alertname="DqpulseIngestDown", stack="a", severity="critical")
    assert httpx.post(f"{alertmanager}/api/v2/alerts", json=[all_down],
                      timeout=5).status_code == 200

    def muted() -> bool:
        state = _inhibited(alertmanager)
        return all(state[(n, "orders", "a")] for n in ("DqpulseDatasetStale",
                                                      "DqpulseQualityBelowObjective",
                                                      "DqpulseDecodeErrorsHigh"))

    wait_until(muted, 15, message="stack a's data alerts inhibited")
    state = _inhibited(alertmanager)
    assert not any(state[(n, "users", "b")] for n in ("DqpulseDatasetStale",
                                                     "DqpulseQualityBelowObjective",
                                                     "DqpulseDecodeErrorsHigh"))
    assert not state[("DqpulseWorkerDown", "", "b")]
    assert not state[("DqpulseIngestDown", "", "a")]
