"""A dataset's window changed while a worker measures it (session 48).

Applied in place, `window: 2s` -> `5s` used to stop ingest: an open 2 s window and a new
5 s one share their start, so the running worker's checkpoints failed for ever on
window_partials' key (UniqueViolation, retried with back-off, polling paused) and
nothing was finalized after the change. `dqpulse apply` now refuses the change, naming
the file's line and the way out; the worker never sees it and counts on, exactly; the
way out (the new window under a new name, same topic) is measured beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dqpulse.store.db import make_engine
from dqpulse.store.tables import model_versions
from tests.integration.helpers import PacedProducer, stop_processes, volumes, wait_until

pytestmark = pytest.mark.integration


def _model(topic: str, *datasets: tuple[str, int]) -> str:
    return "datasets:\n" + "".join(
        f"  - name: {name}\n    topic: {topic}\n    event_time: ts\n    window: {window}s\n"
        f"    lateness: 2s\n" for name, window in datasets)


def test_a_window_changed_in_place_is_refused_and_ingest_goes_on(
        fresh_db: str, make_topic: Any, kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = make_topic("window-change", partitions=2)
    env = {**os.environ, "DQPULSE_DATABASE_URL": fresh_db,
           "DQPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap, "DQPULSE_KAFKA_CLIENT": "confluent",
           "DQPULSE_KAFKA_GROUP": f"g-{topic}", "DQPULSE_WORKER_METRICS_PORT": "0",
           "DQPULSE_IDLE_PARTITION_TIMEOUT_S": "3", "DQPULSE_CHECKPOINT_INTERVAL_S": "0.5",
           "DQPULSE_MODEL_POLL_INTERVAL_S": "1", "DQPULSE_AUTOENCODER": "off"}
    config = tmp_path / "dqpulse.yaml"

    def apply(text: str) -> subprocess.CompletedProcess[str]:
        config.write_text(text)
        return subprocess.run([sys.executable, "-m", "workers.cli", "apply", "-f", str(config)],
                              env=env, capture_output=True, text=True, timeout=120)

    assert apply(_model(topic, ("w", 2))).returncode == 0
    log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "ingest"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    engine = make_engine(fresh_db)
    stream = PacedProducer(kafka_bootstrap, topic, rate=40, window=2)
    try:
        with stream:
            wait_until(lambda: len(volumes(engine, "w")) >= 3, 60, interval_s=0.5,
                       message="the first windows")
            refused = apply(_model(topic, ("w", 5)))
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert (f"error: {config}:5: datasets[0].window: dataset 'w' has been measured "
                    "in 2s windows and cannot change to 5s in place") in refused.stderr
            with engine.connect() as conn:
                assert conn.execute(select(model_versions.c.version)).scalars().all() == [1]
            # the way out it names: the 5 s windows under a new name, on the same topic
            renamed = apply(_model(topic, ("w", 2), ("w_5s", 5)))
            assert renamed.returncode == 0 and "dataset w_5s: created" in renamed.stdout
            wait_until(lambda: len(volumes(engine, "w_5s")) >= 2, 60, interval_s=0.5,
                       message="the new name's windows")
            time.sleep(3)
        last = max(stream.produced)
        wait_until(lambda: last in volumes(engine, "w"), 60, interval_s=0.5,
                   message="the last window finalized")
    finally:
        stream.halt()
        stop_processes([worker])
        log.close()
    logged = (tmp_path / "worker.log").read_text()
    assert "UniqueViolation" not in logged and "checkpoint failed" not in logged
    # every record counted once, in its 2 s window, across the refused and the added model
    assert volumes(engine, "w") == {k: float(v) for k, v in stream.produced.items()}
    five = volumes(engine, "w_5s")
    assert all(start % 5 == 0 for start in five) and len(five) >= 2
    engine.dispose()
