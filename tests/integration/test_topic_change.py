"""A dataset moved to another topic, with fewer partitions, while a worker measures it: the
worker follows the model, reads the new topic from its start, and the dataset's windows
go on being finalized (the old topic's partitions 2 and 3, which the new one lacks, do
not hold its watermark back), every record counted once on either side of the move.

Found in session 48: the move was taken for the old topic deleted and recreated (errors,
the log-reset alert), and librdkafka's second report of one failed fetch counted 19
records twice. The checkpoints now name their topic (migration 0013)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dqpulse.store.db import make_engine
from tests.integration.helpers import PacedProducer, stop_processes, volumes, wait_until

pytestmark = pytest.mark.integration
WINDOW = 2


def _model(topic: str) -> str:
    return (f"datasets:\n  - name: moved\n    topic: {topic}\n    event_time: ts\n"
            f"    window: {WINDOW}s\n    lateness: 2s\n")


def test_a_dataset_moved_to_a_topic_with_fewer_partitions_keeps_finalizing(
        fresh_db: str, make_topic: Any, kafka_bootstrap: str, tmp_path: Path) -> None:
    old, new = make_topic("moved-from", partitions=4), make_topic("moved-to", partitions=2)
    env = {**os.environ, "DQPULSE_DATABASE_URL": fresh_db,
           "DQPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap, "DQPULSE_KAFKA_CLIENT": "confluent",
           "DQPULSE_KAFKA_GROUP": f"g-{old}", "DQPULSE_WORKER_METRICS_PORT": "0",
           "DQPULSE_IDLE_PARTITION_TIMEOUT_S": "3", "DQPULSE_CHECKPOINT_INTERVAL_S": "0.5",
           "DQPULSE_MODEL_POLL_INTERVAL_S": "1", "DQPULSE_AUTOENCODER": "off"}
    config = tmp_path / "dqpulse.yaml"

    def apply(text: str) -> None:
        config.write_text(text)
        r = subprocess.run([sys.executable, "-m", "workers.cli", "apply", "-f", str(config)],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr

    apply(_model(old))
    log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "ingest"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    engine = make_engine(fresh_db)
    stream = PacedProducer(kafka_bootstrap, old, rate=40, window=WINDOW, partitions=4)
    try:
        with stream:
            wait_until(lambda: len(volumes(engine, "moved")) >= 3, 60, interval_s=0.5,
                       message="first windows")
            stream.topic = None  # a pause: what the old topic holds is all of its part
            time.sleep(0.5)
            before = max(stream.produced)
            wait_until(lambda: before in volumes(engine, "moved"), 60, interval_s=0.5,
                       message="the old topic's last window finalized")
            apply(_model(new))
            wait_until(lambda: "model applied" in (tmp_path / "worker.log").read_text(), 30,
                       interval_s=0.2, message="the worker following the new model")
            stream.partitions, stream.topic = 2, new
            time.sleep(5)
        last = max(stream.produced)
        wait_until(lambda: last in volumes(engine, "moved"), 60, interval_s=0.5,
                   message="the windows after the move finalized")
    finally:
        stream.halt()
        stop_processes([worker])
        log.close()
    got = volumes(engine, "moved")
    assert any(start > before for start in got)  # windows of the new topic
    logged = (tmp_path / "worker.log").read_text()
    assert "moved from topic" in logged, logged[-3000:]
    errors = [line for line in logged.splitlines() if '"level": "ERROR"' in line]
    assert not errors, errors[:3]  # a move meant is no recreated topic
    assert got == {k: float(v) for k, v in stream.produced.items()}
    engine.dispose()
