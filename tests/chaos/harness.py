"""One chaos run: a fresh database and topic on the private stack, real ingest worker
processes, a producer that keeps producing through the faults, and the checks made after.

Event times are synthetic and monotonic per partition (an hour ahead of the wall clock,
advancing faster than it), so which window a record falls in is known exactly and no
record is late however long a fault lasts (lateness is another promise, tested elsewhere).
The expected volume of a window is what the broker *acknowledged* for it (Jepsen's rule:
check what was acknowledged). When producing stops, one record per partition far ahead
closes every window before it.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from sqlalchemy import func, select

from dqpulse.store.db import make_engine
from dqpulse.store.tables import metric_points, partition_checkpoints, window_partials
from tests.chaos.conftest import ROOT, PrivateStack
from tests.integration.helpers import create_database, drop_database, wait_until

WINDOW_S = 5
FLUSH_WINDOWS = 3  # the closing record's distance, in windows, past the last record


def say(message: str) -> None:
    """A timestamped progress line (shown with -s, and in a failure's captured output)."""
    print(f"{time.strftime('%H:%M:%S')} chaos: {message}", file=sys.stderr, flush=True)


class ChaosRun:
    def __init__(self, stack: PrivateStack, tmp_path: Path, client: str, *,
                 partitions: int = 4, rate: float = 1500.0, speed: float = 2.5) -> None:
        self.stack, self.tmp_path, self.client = stack, tmp_path, client
        self.partitions, self.rate = partitions, rate
        self.topic = f"chaos-{uuid.uuid4().hex[:8]}"
        self.db_url = create_database(stack.admin_url, "dqpulse_chaos")
        self.engine = make_engine(self.db_url, pool_size=1)
        admin = AdminClient({"bootstrap.servers": stack.bootstrap})
        admin.create_topics([NewTopic(self.topic, num_partitions=partitions,
                                      replication_factor=1)])[self.topic].result(60)
        self.env = dict(os.environ)
        self.env.update({
            "PYTHONPATH": str(ROOT), "DQPULSE_DATABASE_URL": self.db_url,
            "DQPULSE_KAFKA_BOOTSTRAP": stack.bootstrap, "DQPULSE_KAFKA_CLIENT": client,
            "DQPULSE_KAFKA_GROUP": f"g-{self.topic}", "DQPULSE_WORKER_METRICS_PORT": "0",
            "DQPULSE_IDLE_PARTITION_TIMEOUT_S": "3", "DQPULSE_CHECKPOINT_INTERVAL_S": "0.5",
            "DQPULSE_KAFKA_SESSION_TIMEOUT_MS": "6000", "DQPULSE_LOG_LEVEL": "WARNING",
            "DQPULSE_AUTOENCODER": "off", "PYTHONFAULTHANDLER": "1"})
        config = tmp_path / "dqpulse.yaml"
        config.write_text(f"""
datasets:
  - name: chaos
    topic: {self.topic}
    event_time: ts
    window: {WINDOW_S}s
    lateness: 2s
    fields:
      value: {{type: number}}
      label: {{type: string}}
""")
        subprocess.run([sys.executable, "-m", "workers.cli", "apply", "-f", str(config)],
                       env=self.env, check=True, capture_output=True, timeout=120, cwd=ROOT)
        # an hour ahead, on a window boundary; event time runs `speed` x the wall clock
        self.t0 = math.floor((time.time() + 3600) / WINDOW_S) * WINDOW_S
        self.step = speed * partitions / rate
        self.acked: Counter[float] = Counter()
        self.delivery_errors: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        # log_level 2: the broker's absence is expected here; errors still reach `delivered`
        self._producer = Producer({"bootstrap.servers": stack.bootstrap, "linger.ms": 20,
                                   "enable.idempotence": True, "log_level": 2})
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.exits: list[int] = []  # return codes of workers that ended on their own

    # -- workers ------------------------------------------------------------------------
    def start_worker(self) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"worker-{len(self.workers) + len(self.exits)}.log",  # noqa: SIM115
                   "ab")
        process = subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "ingest"],
                                   env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=ROOT)
        self.workers.append(process)
        return process

    def kill_worker(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(15)
        self.workers.remove(process)

    def worker_logs(self) -> str:
        return "".join(path.read_text(errors="replace")
                       for path in sorted(self.tmp_path.glob("worker-*.log")))

    def log_tail(self, chars: int = 3000) -> str:
        """The end of each worker's log, for a failure's message (pytest prunes its
        temporary folders: the files may be gone by the time someone looks)."""
        parts = []
        for path in sorted(self.tmp_path.glob("worker-*.log")):
            text = path.read_text(errors="replace")
            # what ended the process, in full: an uncaught exception's line, a C abort
            fatal = [line[:6000] for line in text.splitlines()
                     if '"CRITICAL"' in line or "Fatal Python error" in line
                     or "Assertion" in line]
            parts.append(f"\n--- {path.name} ---\n" + "\n".join(fatal[:3])
                         + ("\n[...]\n" if fatal else "") + text[-chars:])
        return "".join(parts)

    def wait(self, predicate: Callable[[], bool], timeout_s: float, message: str,
             interval_s: float = 0.5) -> None:
        try:
            wait_until(predicate, timeout_s, interval_s=interval_s, message=message)
        except AssertionError as exc:
            raise AssertionError(f"{exc}{self.log_tail()}") from None

    def assert_workers_alive(self) -> None:
        """No worker has exited on its own: each recovered from the fault by itself."""
        dead = [p.returncode for p in self.workers if p.poll() is not None]
        assert not dead, f"worker(s) exited with {dead}{self.log_tail()}"

    # -- producing ----------------------------------------------------------------------
    def start_producing(self) -> None:
        self._thread.start()

    def _record(self, seq: int, partition: int) -> tuple[float, bytes]:
        ts = self.t0 + seq * self.step
        return ts, orjson.dumps({"ts": ts, "value": (seq * 7919 + partition) % 1000 / 10.0,
                                 "label": f"l{seq % 5}"})

    def _send(self, partition: int, ts: float, value: bytes, count: bool = True) -> None:
        window = math.floor(ts / WINDOW_S) * WINDOW_S

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                self.delivery_errors.append(str(err))
            elif count:
                self.acked[window] += 1

        while True:
            try:
                self._producer.produce(self.topic, value=value, partition=partition,
                                       on_delivery=delivered)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _produce(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while self.sent < due:
                partition = self.sent % self.partitions
                ts, value = self._record(self.sent // self.partitions, partition)
                self._send(partition, ts, value)
                self.sent += 1
            self._producer.poll(0)
            self._stop.wait(0.02)

    def stop_producing(self) -> None:
        """Stop, then close every window: one record per partition far ahead (not expected
        in any closed window), and wait until the broker has acknowledged everything."""
        self._stop.set()
        self._thread.join(30)
        last = self.t0 + (self.sent // self.partitions) * self.step
        self.closing_ts = last + FLUSH_WINDOWS * WINDOW_S
        for partition in range(self.partitions):
            self._send(partition, self.closing_ts,
                       orjson.dumps({"ts": self.closing_ts, "value": 0.0, "label": "end"}),
                       count=False)
        remaining = self._producer.flush(120)
        assert remaining == 0, f"{remaining} records not acknowledged"
        assert not self.delivery_errors, self.delivery_errors[:3]
        assert sum(self.acked.values()) == self.sent

    def finish(self) -> None:
        """Stop producing, wait until every window is final, and check them."""
        say("stop producing")
        self.stop_producing()
        self.wait_final()
        say("all windows final")
        self.check()
        say("checked")

    # -- checks -------------------------------------------------------------------------
    def volumes(self) -> dict[float, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(metric_points.c.window_start, metric_points.c.value)
                                .where(metric_points.c.dataset == "chaos",
                                       metric_points.c.metric == "volume.records",
                                       metric_points.c.field == "")).all()
        return {r.window_start: int(r.value or 0) for r in rows}

    def wait_final(self, timeout_s: float = 150) -> None:
        expected = set(self.acked)
        self.wait(lambda: expected <= set(self.volumes()), timeout_s,
                  "every window finalized", interval_s=1.0)

    def check(self) -> None:
        """Exact volumes, no partial state, every offset consumed, workers alive."""
        self.assert_workers_alive()
        # windows past the last record, before the closing one, are finalized empty
        volumes = {w: v for w, v in self.volumes().items()
                   if w < self.closing_ts - WINDOW_S and (v or w in self.acked)}
        assert volumes == dict(self.acked), _diff(volumes, self.acked)
        with self.engine.connect() as conn:
            leftover = conn.execute(select(func.count()).select_from(window_partials)
                                    .where(window_partials.c.window_start.in_(
                                        list(self.acked)))).scalar()
            per_window = conn.execute(select(metric_points.c.window_start, func.count())
                                      .where(metric_points.c.dataset == "chaos")
                                      .group_by(metric_points.c.window_start)).all()
        assert leftover == 0, f"{leftover} partials of finalized windows left behind"
        counts = {w: n for w, n in per_window if w in self.acked and w > min(self.acked)}
        # every finalized window has its whole set of points, not some of them (the first
        # has no drift metrics: it has no previous window)
        assert len(set(counts.values())) == 1, counts
        self.wait(self._consumed, 60, "every offset checkpointed")

    def _consumed(self) -> bool:
        ends = end_offsets(self.stack.bootstrap, self.topic, self.partitions)
        with self.engine.connect() as conn:
            offsets = dict(conn.execute(select(partition_checkpoints.c.partition,
                                               partition_checkpoints.c.next_offset)).all())
        return offsets == ends

    def close(self) -> None:
        self._stop.set()
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.engine.dispose()
        drop_database(self.stack.admin_url, self.db_url)


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{topic}"})
    try:
        return {p: consumer.get_watermark_offsets(CkTopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
    finally:
        consumer.close()


def _diff(got: dict[float, int], want: Counter[float]) -> str:
    keys = sorted(set(got) | set(want))
    wrong = [(k, got.get(k), want.get(k)) for k in keys if got.get(k) != want.get(k)]
    return f"{len(wrong)} windows differ (window, counted, acknowledged): {wrong[:8]}"
