"""Exactly-once metrics under SIGKILL and rebalances, with real worker processes."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dqpulse.store.db import make_engine
from dqpulse.store.tables import metric_points, window_partials
from tests.integration.helpers import json_bytes, produce, stop_processes, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_RECORDS = 200_000
PARTITIONS = 4
WINDOW_S = 5


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "ingest"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_killed_worker_loses_and_double_counts_no_records(
        client, fresh_db, make_topic, kafka_bootstrap, tmp_path):
    topic = make_topic("eo", partitions=PARTITIONS)
    config = tmp_path / "dqpulse.yaml"
    config.write_text(f"""
datasets:
  - name: events
    topic: {topic}
    event_time: ts
    window: {WINDOW_S}s
    lateness: 2s
    fields:
      value: {{type: number}}
""")
    env = dict(os.environ)
    env.update({
        "DQPULSE_DATABASE_URL": fresh_db,
        "DQPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DQPULSE_KAFKA_GROUP": f"eo-{topic}",
        "DQPULSE_WORKER_METRICS_PORT": "0",
        "DQPULSE_IDLE_PARTITION_TIMEOUT_S": "3",
        "DQPULSE_CHECKPOINT_INTERVAL_S": "0.5",
        "DQPULSE_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "DQPULSE_LOG_LEVEL": "WARNING",
        "DQPULSE_KAFKA_CLIENT": client,
    })
    subprocess.run([sys.executable, "-m", "workers.cli", "apply", "-f", str(config)],
                   env=env, check=True, capture_output=True, timeout=120)
    workers = [_start_worker(env, tmp_path / "w0.log"), _start_worker(env, tmp_path / "w1.log")]

    produced_windows: Counter[float] = Counter()
    rng = random.Random(1234)
    done = threading.Event()

    def records():
        start = time.time()
        duration = 25.0  # spread the records over ~25 s of event time, produced live
        for i in range(N_RECORDS):
            target = start + duration * i / N_RECORDS
            now = time.time()
            if target > now:
                time.sleep(target - now)
            ts = max(time.time(), target)
            produced_windows[math.floor(ts / WINDOW_S) * WINDOW_S] += 1
            yield i % PARTITIONS, json_bytes({"ts": ts, "value": rng.random(), "i": i})

    def producer():
        try:
            produce(kafka_bootstrap, topic, records())
        finally:
            done.set()

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    kills = 0
    try:
        while kills < 3:
            time.sleep(rng.uniform(2.0, 6.0))
            victim = workers[0]
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            kills += 1
            workers[0] = _start_worker(env, tmp_path / "w0.log")
        thread.join(120)
        assert done.is_set()
        engine = make_engine(fresh_db)
        last_window = max(produced_windows)

        def all_windows_final() -> bool:
            with engine.connect() as conn:
                count = conn.execute(select(func.count()).select_from(metric_points).where(
                    metric_points.c.metric == "volume.records",
                    metric_points.c.window_start == last_window)).scalar()
            return bool(count)

        wait_until(all_windows_final, 120, interval_s=1.0, message="last window finalized")
    finally:
        stop_processes(workers)

    with engine.connect() as conn:
        rows = conn.execute(select(metric_points.c.window_start, metric_points.c.value).where(
            metric_points.c.metric == "volume.records", metric_points.c.field == "")).all()
        leftover = conn.execute(select(func.count()).select_from(window_partials)).scalar()
    counted = {row.window_start: int(row.value) for row in rows if row.value}
    assert kills == 3
    assert sum(counted.values()) == N_RECORDS
    assert counted == dict(produced_windows)
    assert leftover == 0
    engine.dispose()
