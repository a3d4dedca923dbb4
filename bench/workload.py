"""What ``bench/fleet.py`` and ``bench/soak.py`` share: a throwaway database and topics on the
local stack, a fleet of data sets (``dqpulse apply``), ingest worker processes, a producer
at a steady rate, and readings of the processes and of Postgres (RSS, table sizes,
connections, state bytes)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_PG = "postgresql+psycopg://dqpulse@127.0.0.1:55432/dqpulse"
DEFAULT_KAFKA = "127.0.0.1:19092"


#: every fleet data set's allowed lateness
LATENESS_S = 2


@dataclass
class Fleet:
    """``datasets`` data sets, each on its own topic of ``partitions`` partitions, with
    ``fields`` number fields and event-time windows of ``window_s``."""

    datasets: int
    partitions: int
    fields: int
    window_s: int
    prefix: str = field(default_factory=lambda: f"fl{uuid.uuid4().hex[:6]}")

    def names(self) -> list[str]:
        return [f"{self.prefix}_d{i:03d}" for i in range(self.datasets)]

    def yaml(self) -> str:
        lines = ["datasets:"]
        for name in self.names():
            lines += [f"  - name: {name}", f"    topic: {name}", "    event_time: ts",
                      f"    window: {self.window_s}s", f"    lateness: {LATENESS_S}s",
                      "    fields:"]
            lines += [f"      f{j:02d}: {{type: number}}" for j in range(self.fields)]
        return "\n".join(lines) + "\n"

    def record(self, rng: random.Random, ts: float, i: int) -> bytes:
        import orjson

        row: dict[str, Any] = {"ts": ts, "i": i}
        for j in range(self.fields):
            row[f"f{j:02d}"] = None if rng.random() < 0.01 else round(rng.gauss(100, 15), 3)
        return orjson.dumps(row)


# -- database and topics --------------------------------------------------------------------
def create_database(admin_url: str, prefix: str) -> str:
    from sqlalchemy import create_engine, text

    from dqpulse.store.db import upgrade_to_head

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    upgrade_to_head(url)
    return url


def drop_database(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text

    name = url.rsplit("/", 1)[1]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = :n"), {"n": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions,
                                            replication_factor=1) for n in names])
    for future in futures.values():
        future.result(60)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(names).values():
        try:
            future.result(60)
        except Exception as exc:  # noqa: BLE001 - a leftover bench topic is harmless
            print(f"could not delete a topic: {exc}", file=sys.stderr)


# -- processes ------------------------------------------------------------------------------
def worker_env(db_url: str, bootstrap: str, group: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DQPULSE_DATABASE_URL": db_url, "DQPULSE_KAFKA_BOOTSTRAP": bootstrap,
                "DQPULSE_KAFKA_GROUP": group, "DQPULSE_WORKER_METRICS_PORT": "0",
                "DQPULSE_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def apply_model(env: dict[str, str], yaml_text: str, workdir: Path) -> None:
    config = workdir / "dqpulse.yaml"
    config.write_text(yaml_text)
    subprocess.run([sys.executable, "-m", "workers.cli", "apply", "-f", str(config)],
                   env=env, check=True, capture_output=True, timeout=300, cwd=ROOT)


def start_worker(env: dict[str, str], log_path: Path,
                 cpu: int | None = None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "workers.cli", "worker", "ingest"]
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        command = ["taskset", "-c", str(cpu), *command]
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def stop_worker(process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def rss_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` (VmRSS), MiB; None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- producing ------------------------------------------------------------------------------
class SteadyProducer(threading.Thread):
    """Produces ``rate`` records/s spread over every (topic, partition) of the fleet, event
    time = produce time, until stopped; counts what the broker acknowledged per window."""

    def __init__(self, bootstrap: str, fleet: Fleet, rate: float, seed: int = 7) -> None:
        super().__init__(daemon=True, name="steady-producer")
        from confluent_kafka import Producer

        self.fleet, self.rate = fleet, rate
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                                  "enable.idempotence": True,
                                  "queue.buffering.max.messages": 1_000_000})
        self.stop_event = threading.Event()
        self.sent = 0  # handed to the client
        self.acked = 0  # acknowledged by the broker
        self.errors = 0
        self.rng = random.Random(seed)

    def run(self) -> None:
        names = self.fleet.names()
        slots = [(n, p) for n in names for p in range(self.fleet.partitions)]
        tick = 0.1
        started = time.monotonic()
        while not self.stop_event.is_set():
            due = int((time.monotonic() - started) * self.rate) - self.sent
            now = time.time()
            for _ in range(max(due, 0)):
                topic, partition = slots[self.sent % len(slots)]
                value = self.fleet.record(self.rng, now, self.sent)
                while True:
                    try:
                        self.producer.produce(topic, value=value, partition=partition,
                                              on_delivery=self._delivered)
                        break
                    except BufferError:
                        self.producer.poll(0.05)
                self.sent += 1
            self.producer.poll(0)
            self.stop_event.wait(tick)
        self.producer.flush(60)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors += 1
        else:
            self.acked += 1


# -- Postgres readings ----------------------------------------------------------------------
STATE_TABLES = ("partition_checkpoints", "window_partials", "detector_states",
                "dataset_partitions", "incidents", "alerts", "notification_outbox")


def pg_readings(engine: Any, database: str) -> dict[str, Any]:
    """Table sizes (bytes, metric_points over its partitions), this database's connections,
    and the bytes of checkpoint and detector state."""
    from sqlalchemy import text

    out: dict[str, Any] = {}
    with engine.connect() as conn:
        sizes = {name: conn.execute(text("SELECT pg_total_relation_size(:t)"),
                                    {"t": name}).scalar() for name in STATE_TABLES}
        for parted in ("metric_points", "metric_rollups"):
            # pg_partition_tree lists a partitioned table's leaves and, for a plain table
            # (metric_rollups; metric_points on SQLite-era schemas), nothing at all
            sizes[parted] = conn.execute(text(
                "SELECT greatest(pg_total_relation_size(CAST(:t AS regclass)), "
                "(SELECT coalesce(sum(pg_total_relation_size(relid)), 0) "
                "FROM pg_partition_tree(CAST(:t AS regclass))))"), {"t": parted}).scalar()
        out["table_bytes"] = {k: int(v or 0) for k, v in sizes.items()}
        out["connections"] = int(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :d"),
            {"d": database}).scalar() or 0)
        out["checkpoint_state_bytes"] = int(conn.execute(text(
            "SELECT coalesce(sum(octet_length(state)), 0) FROM partition_checkpoints"))
            .scalar() or 0)
        out["detector_state_bytes"] = int(conn.execute(text(
            "SELECT coalesce(sum(octet_length(state)), 0) FROM detector_states")).scalar() or 0)
        out["detector_series"] = int(conn.execute(text(
            "SELECT count(*) FROM detector_states")).scalar() or 0)
        out["open_partials"] = int(conn.execute(text(
            "SELECT count(*) FROM window_partials")).scalar() or 0)
        out["tuples_written"] = int(conn.execute(text(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
            "FROM pg_stat_user_tables")).scalar() or 0)
    return out


def volume_by_window(engine: Any) -> dict[tuple[str, float], int]:
    from sqlalchemy import select

    from dqpulse.store.tables import metric_points

    with engine.connect() as conn:
        rows = conn.execute(select(metric_points.c.dataset, metric_points.c.window_start,
                                   metric_points.c.value).where(
            metric_points.c.metric == "volume.records", metric_points.c.field == "")).all()
    return {(r.dataset, r.window_start): int(r.value or 0) for r in rows}
