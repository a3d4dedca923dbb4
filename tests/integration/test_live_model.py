"""A model applied to running workers: two `dqpulse worker ingest` processes consume four
topics while records flow; `dqpulse apply` then adds a dataset, changes a rule on another
and removes a third. Within 10 s the new topic is measured, the rule applies from the
next windows, the removed dataset stops, and no record of the kept datasets is lost or
counted twice (exact counts), for both Kafka clients."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dqpulse.store.db import make_engine
from dqpulse.store.tables import metric_points
from tests.integration.helpers import json_bytes, stop_processes, wait_until

pytestmark = pytest.mark.integration

WINDOW = 2
RATE = 60  # records per second per topic
PICK_UP_S = 10  # the bound for a running worker to follow a new model


def _model(topics: dict[str, str], *, names: tuple[str, ...], amount_min: int) -> str:
    blocks = []
    for name in names:
        rule = f"\n    fields:\n      amount: {{type: number, min: {amount_min}}}" \
            if name == "checked" else ""
        blocks.append(f"  - name: {name}\n    topic: {topics[name]}\n    event_time: ts\n"
                      f"    window: {WINDOW}s\n    lateness: 2s{rule}")
    return "datasets:\n" + "\n".join(blocks) + "\n"


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_apply_reaches_running_workers_without_losing_or_double_counting(
        client: str, fresh_db: str, make_topic: Any, kafka_bootstrap: str,
        tmp_path: Path) -> None:
    names = ("steady", "checked", "retired", "fresh")
    topics = {name: make_topic(name, partitions=2) for name in names}
    env = {**os.environ, "DQPULSE_DATABASE_URL": fresh_db,
           "DQPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap, "DQPULSE_KAFKA_CLIENT": client,
           "DQPULSE_KAFKA_GROUP": f"g-{topics['steady']}", "DQPULSE_WORKER_METRICS_PORT": "0",
           "DQPULSE_IDLE_PARTITION_TIMEOUT_S": "3", "DQPULSE_CHECKPOINT_INTERVAL_S": "0.5",
           "DQPULSE_MODEL_POLL_INTERVAL_S": "1", "DQPULSE_KAFKA_SESSION_TIMEOUT_MS": "6000",
           "DQPULSE_AUTOENCODER": "off", "DQPULSE_LOG_LEVEL": "INFO"}

    def apply(text: str) -> str:
        path = tmp_path / "dqpulse.yaml"
        path.write_text(text)
        result = subprocess.run([sys.executable, "-m", "workers.cli", "apply", "-f", str(path)],
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    apply(_model(topics, names=("steady", "checked", "retired"), amount_min=-10))
    logs = [open(tmp_path / f"w{i}.log", "ab") for i in range(2)]  # noqa: SIM115
    workers = [subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "ingest"],
                                env=env, stdout=log, stderr=subprocess.STDOUT) for log in logs]

    produced: dict[str, Counter[float]] = {name: Counter() for name in names}
    below_zero: Counter[float] = Counter()  # records of "checked" with amount < 0
    stop = threading.Event()

    failures: list[Any] = []

    def producer() -> None:
        """A batch per topic every quarter second, event time = now, one client."""
        from confluent_kafka import Producer

        client = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5,
                           "enable.idempotence": True})

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(err)

        step, start = 0.25, time.time()
        while not stop.is_set():
            while time.time() < start + step:
                time.sleep(0.02)
            for name in names:
                for i in range(int(RATE * step)):
                    ts = start + i / RATE
                    window = math.floor(ts / WINDOW) * WINDOW
                    produced[name][window] += 1
                    amount = -1.0 if i % 5 == 0 else 10.0  # 20 % below 0, none below -10
                    if amount < 0 and name == "checked":
                        below_zero[window] += 1
                    client.produce(topics[name], json_bytes({"ts": ts, "amount": amount}),
                                   partition=i % 2, on_delivery=delivered)
            client.poll(0)
            start += step
        assert client.flush(30) == 0

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    engine = make_engine(fresh_db)

    def windows(name: str, metric: str = "volume.records", field: str = "",
                nonzero: bool = False) -> dict[float, float]:
        with engine.connect() as conn:
            rows = conn.execute(select(metric_points.c.window_start, metric_points.c.value)
                                .where(metric_points.c.dataset == name,
                                       metric_points.c.metric == metric,
                                       metric_points.c.field == field)).all()
        return {float(r.window_start): float(r.value) for r in rows
                if r.value is not None and (r.value or not nonzero)}

    try:
        wait_until(lambda: len(windows("steady")) >= 4 and len(windows("retired")) >= 4, 90,
                   interval_s=0.5, message="the first model's windows")
        applied_at = time.time()
        out = apply(_model(topics, names=("steady", "checked", "fresh"), amount_min=0))
        assert "dataset fresh: created" in out and "dataset retired: removed" in out
        assert "dataset checked: updated (fields)" in out

        wait_until(lambda: bool(windows("fresh")), PICK_UP_S + 2 * WINDOW + 5,
                   interval_s=0.5, message="the new dataset measured")
        time.sleep(PICK_UP_S + 3 * WINDOW)
        stop.set()
        thread.join(30)
        assert not failures and not thread.is_alive()
        last = max(max(c) for c in produced.values())
        wait_until(lambda: last in windows("steady") and last in windows("checked")
                   and last in windows("fresh"), 90, interval_s=0.5,
                   message="the last window finalized")
    finally:
        stop.set()
        stop_processes(workers)
        for log in logs:
            log.close()

    logged = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
    # kept datasets: every record counted once, window by window, across the apply
    # (windows after the producer stopped close empty: left out)
    for name in ("steady", "checked"):
        assert windows(name, nonzero=True) == {k: float(v) for k, v in produced[name].items()}
    # the new dataset: read from the start of its topic, so every record of it is counted
    assert windows("fresh", nonzero=True) == {k: float(v)
                                              for k, v in produced["fresh"].items()}
    # the removed dataset: nothing finalized for windows after the workers followed
    retired = windows("retired")
    assert retired and max(retired) < applied_at + PICK_UP_S, logged[-3000:]
    # the changed rule: no violations before the apply; after pick-up, exactly the
    # records below the new minimum
    ratio = windows("checked", "validity.violation_ratio", "amount:min")
    before = [v for start, v in ratio.items() if start + WINDOW <= applied_at]
    after = {start: v for start, v in ratio.items()
             if start >= applied_at + PICK_UP_S and produced["checked"][start]}
    assert len(after) >= 3, ratio
    assert after == {start: below_zero[start] / produced["checked"][start] for start in after}
    assert before and all(v == 0.0 for v in before), ratio
    assert logged.count("model version 2") >= 2, logged[-3000:]  # both workers followed
    engine.dispose()
