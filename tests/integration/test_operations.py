"""What an operator runs into: SIGTERM (a fast graceful stop, nothing lost or doubled),
liveness and readiness probes, JSON logs without secrets, and ``dqpulse doctor``."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, func, select, text

from dqpulse.alerts import incidents as inc
from dqpulse.alerts.anomalies import Anomaly
from dqpulse.config import Settings
from dqpulse.health import Health, database_check, serve
from dqpulse.ingest import IngestWorker
from dqpulse.spec import load_spec, parse_spec
from dqpulse.store.db import make_engine
from dqpulse.store.tables import metric_points, notification_outbox
from dqpulse.telemetry import Telemetry
from tests.integration.helpers import (
    WorkerThread,
    drop_database,
    json_bytes,
    produce,
    set_connections,
    wait_until,
)
from tests.integration.receivers import webhook_receiver
from workers.ingest import make_source

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STOP_LIMIT_S = 5.0
PARTITIONS = 8
N_RECORDS = 120_000
EVENT_SPAN_S = 240  # 240 one-second windows; 60 s lateness keeps ~60 per partition open
DB_PASSWORD = "ops-db-pass-7f3a"  # the local Postgres trusts loopback: never checked
API_TOKEN = "ops-api-token-91c2e4"
CHANNEL_SECRET = "ops-channel-secret-5d6e"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user.split(':')[0]}:{DB_PASSWORD}@{host}"


def _env(**values: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), DQPULSE_LOG_FORMAT="json",
               DQPULSE_API_TOKENS=API_TOKEN, OPS_SECRET=CHANNEL_SECRET)
    env.update(values)
    return env


def _stop_and_time(process: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    return time.monotonic() - started


def _json_lines(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    assert lines, f"{path} is empty"
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"{path.name}:{number} is not JSON: {line[:200]}") from None
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
    return records


def _assert_no_secret(path: Path) -> None:
    content = path.read_text()
    for secret in (DB_PASSWORD, API_TOKEN, CHANNEL_SECRET):
        assert secret not in content, f"{secret!r} in {path.name}"


def _apply(config: Path, env: dict[str, str]) -> None:
    """``dqpulse apply -f``: the processes run the model stored in the database."""
    subprocess.run([sys.executable, "-m", "workers.cli", "apply", "-f", str(config)],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)


def _ingest(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "ingest"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigterm_stops_a_busy_ingest_worker_within_5s_and_its_successor_counts_exactly(
        fresh_db, make_topic, kafka_bootstrap, tmp_path):
    """Records flowing on 8 partitions, hundreds of windows in state: SIGTERM, < 5 s to
    exit with a last checkpoint; a second worker takes over and every window counts
    exactly what was produced into it."""
    topic = make_topic("ops", partitions=PARTITIONS)
    receiver_port = _free_port()
    config = tmp_path / "dqpulse.yaml"
    config.write_text(f"""
datasets:
  - name: events
    topic: {topic}
    event_time: ts
    window: 1s
    lateness: 60s
    fields:
      value: {{type: number}}
notifications:
  - name: hook
    type: webhook
    url: http://127.0.0.1:{receiver_port}/dq
    secret: ${{OPS_SECRET}}
""")
    env = _env(DQPULSE_DATABASE_URL=_with_password(fresh_db),
               DQPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap, DQPULSE_KAFKA_GROUP=f"ops-{topic}",
               DQPULSE_WORKER_METRICS_PORT="0",
               DQPULSE_CHECKPOINT_INTERVAL_S="0.5", DQPULSE_KAFKA_SESSION_TIMEOUT_MS="6000",
               # no wall-clock ticks: windows close on event time only, so every record
               # lands in its window (a flush record per partition closes the last ones)
               DQPULSE_IDLE_PARTITION_TIMEOUT_S="3600", DQPULSE_AUTOENCODER="off",
               DQPULSE_LOG_LEVEL="INFO")
    # Event time runs 20x faster than the wall clock, from the moment production starts:
    # never behind the wall clock (a partition that has seen no record yet advances its
    # watermark to the wall clock), so no record is late, and after 6 s each partition
    # holds ~60 open windows (the lateness) plus closed ones not yet finalized.
    produced: Counter[float] = Counter()
    done = threading.Event()

    def records():
        for i in range(N_RECORDS):
            target = t0 + 12.0 * i / N_RECORDS  # ~10k records/s for 12 s
            wait = target - time.time()
            if wait > 0:
                time.sleep(wait)
            ts = t0 + EVENT_SPAN_S * i / N_RECORDS
            produced[math.floor(ts)] += 1
            yield i % PARTITIONS, json_bytes({"ts": ts, "value": i % 97})

    def producer() -> None:
        try:
            produce(kafka_bootstrap, topic, records())
        finally:
            done.set()

    _apply(config, env)
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = _ingest(env, logs[0])
    second = None
    engine = make_engine(fresh_db)
    try:
        wait_until(lambda: "assigned 8 partitions" in logs[0].read_text(), 60,
                   message="first worker assigned")
        t0 = time.time() + 1.0
        thread = threading.Thread(target=producer, daemon=True)
        thread.start()
        time.sleep(7.0)  # mid-stream: records flowing, hundreds of open windows
        assert not done.is_set()
        first_stop_s = _stop_and_time(first)
        assert first.returncode == 0, logs[0].read_text()[-2000:]
        second = _ingest(env, logs[1])
        thread.join(120)
        assert done.is_set()
        flush_ts = t0 + EVENT_SPAN_S + 120  # past the last window's end + lateness
        produce(kafka_bootstrap, topic,
                ((p, json_bytes({"ts": flush_ts, "value": 0})) for p in range(PARTITIONS)))
        last = max(produced)

        def final() -> bool:
            with engine.connect() as conn:
                return bool(conn.execute(select(func.count()).select_from(metric_points).where(
                    metric_points.c.metric == "volume.records",
                    metric_points.c.window_start == last)).scalar())

        wait_until(final, 120, interval_s=1.0, message="last window finalized")
        second_stop_s = _stop_and_time(second)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()

    with engine.connect() as conn:
        rows = conn.execute(select(metric_points.c.window_start, metric_points.c.value).where(
            metric_points.c.metric == "volume.records", metric_points.c.field == "",
            metric_points.c.window_start <= last)).all()
    engine.dispose()
    counted = {row.window_start: int(row.value) for row in rows if row.value}
    assert first_stop_s < STOP_LIMIT_S, first_stop_s
    assert second_stop_s < STOP_LIMIT_S, second_stop_s
    assert sum(counted.values()) == N_RECORDS
    assert counted == dict(produced)
    first_log = _json_lines(logs[0])
    messages = [r["message"] for r in first_log]
    assert any(m.startswith("last checkpoint written") for m in messages), messages[-10:]
    assert "ingest stopped" in messages
    stopped = next(r for r in first_log if r["message"] == "ingest stopped")
    assert 0 < stopped["stats"]["accepted"] < N_RECORDS  # stopped mid-stream
    starting = next(r for r in first_log if r["message"] == "ingest starting")
    assert "***" in starting["database"]  # the URL is logged, its password masked
    for log in logs:
        _json_lines(log)
        _assert_no_secret(log)


def _feed_incidents(engine, spec, count: int) -> None:
    """Open one incident per dataset: one outbox row each for the notifier."""
    t0 = datetime.now(UTC).timestamp() // 10 * 10 - 600
    for dataset in spec.datasets[:count]:
        anomaly = Anomaly(dataset.name, "volume", "volume.records", "", t0, t0 + 10, 0.95,
                          None, {"observed": 1.0, "expected_low": 90.0,
                                 "expected_high": 110.0, "direction": "down"})
        with engine.begin() as conn:
            inc.process_window(conn, dataset=dataset, window_start=t0, window_end=t0 + 10,
                               anomalies=[anomaly], notifications=list(spec.notifications),
                               public_url="http://dq.test")


def _notifier(db_url: str, log: Path, port: int) -> subprocess.Popen[bytes]:
    env = _env(DQPULSE_WORKER_METRICS_PORT=str(port - 2), DQPULSE_LOG_LEVEL="INFO")
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.notify",
             "--database-url", db_url, "--poll-interval", "0.05", "--timeout", "10"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigterm_stops_a_notifier_with_deliveries_in_flight_within_5s_once_per_key(
        fresh_db, tmp_path):
    receiver = webhook_receiver(CHANNEL_SECRET)
    receiver.delay_s = 1.5  # 8 parallel sends of 1.5 s each: 40 rows take ~7.5 s
    names = [f"d{i:02d}" for i in range(40)]
    config = tmp_path / "dqpulse.yaml"
    config.write_text("datasets:\n" + "".join(
        f"  - {{name: {n}, topic: {n}, window: 10s}}\n" for n in names) +
        f"notifications:\n  - name: hook\n    type: webhook\n    url: {receiver.url}/dq\n"
        "    secret: ${OPS_SECRET}\n    rate_limit_per_minute: 6000\n")
    spec = load_spec(config, environ={"OPS_SECRET": CHANNEL_SECRET})
    _apply(config, _env(DQPULSE_DATABASE_URL=fresh_db))
    engine = make_engine(fresh_db)
    _feed_incidents(engine, spec, len(names))
    logs = [tmp_path / "notify1.log", tmp_path / "notify2.log"]
    port = _free_port()
    first = _notifier(fresh_db, logs[0], port)
    second = None
    try:
        wait_until(lambda: receiver.started >= 4, 30, interval_s=0.05,
                   message="deliveries in flight")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert "dqpulse_notifications" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        stop_s = _stop_and_time(first)
        assert first.returncode == 0, logs[0].read_text()[-2000:]
        delivered_by_first = len(receiver.accepted())
        # the claimed rows it did not send are released at once (not after the 60 s lease)
        second = _notifier(fresh_db, logs[1], _free_port())

        def all_delivered() -> bool:
            with engine.connect() as conn:
                return all(r.status == "delivered" for r in conn.execute(
                    select(notification_outbox.c.status)))

        wait_until(all_delivered, 30, message="every notification delivered")
        time.sleep(0.5)
        second_stop_s = _stop_and_time(second)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
        receiver.down()
    with engine.connect() as conn:
        keys = {r.idempotency_key for r in conn.execute(
            select(notification_outbox.c.idempotency_key))}
    engine.dispose()
    assert stop_s < STOP_LIMIT_S, stop_s
    assert second_stop_s < STOP_LIMIT_S, second_stop_s
    assert 0 < delivered_by_first < len(names)  # it was stopped with work left
    accepted = receiver.accepted_keys()
    assert len(keys) == len(names)
    assert set(accepted) == keys
    assert all(count == 1 for count in accepted.values()), accepted
    assert receiver.rejected() == []
    for log in logs:
        _json_lines(log)
        _assert_no_secret(log)


class _BlockablePoll:
    """The real Kafka source with a test hook that blocks the worker's loop in poll()."""

    def __init__(self, source) -> None:
        self._source = source
        self.unblocked = threading.Event()
        self.unblocked.set()

    def poll(self, max_records: int, timeout_s: float):
        self.unblocked.wait()
        return self._source.poll(max_records, timeout_s)

    def __getattr__(self, name: str):
        return getattr(self._source, name)


PROBE_INTERVAL_S = 1.0


def _probe_until(url: str, status: int, within_s: float) -> dict:
    """Probe every PROBE_INTERVAL_S until ``status``; at most ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        response = httpx.get(url, timeout=5)
        if response.status_code == status:
            return response.json()
        if time.monotonic() >= deadline:
            raise AssertionError(f"{url}: {response.status_code} {response.text}, "
                                 f"not {status} within {within_s}s")
        time.sleep(PROBE_INTERVAL_S)


def test_probes_follow_the_database_and_a_stuck_loop(fresh_db, pg_admin_url, make_topic,
                                                     kafka_bootstrap):
    topic = make_topic("probe", partitions=2)
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", checkpoint_interval_s=0.3,
                        idle_partition_timeout_s=1.0)
    spec = parse_spec(f"datasets:\n  - {{name: probe, topic: {topic}, event_time: ts, "
                      "window: 10s, lateness: 5s}\n")
    source, _ = make_source(settings)
    blockable = _BlockablePoll(source)
    # alive: the loop turned within 1.5 s; ready: a checkpoint within 30 s, database up
    health = Health(stall_s=1.5, progress_max_age_s=30.0)
    check, probe_engine = database_check(fresh_db)
    health.add_check("database", check)
    registry = CollectorRegistry()
    engine = make_engine(fresh_db)
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=blockable, telemetry=Telemetry(registry), health=health)
    server = serve("127.0.0.1", 0, registry=registry, health=health)
    base = f"http://127.0.0.1:{server.port}"
    database = fresh_db.rsplit("/", 1)[1]
    produce(kafka_bootstrap, topic, ((i % 2, json_bytes({"ts": time.time(), "i": i}))
                                     for i in range(2_000)))
    try:
        with WorkerThread(worker):
            wait_until(lambda: worker.stats.checkpoints >= 2, 30, message="checkpoints")
            assert _probe_until(f"{base}/readyz", 200, 5) == {"ready": True, "checks": {}}
            assert _probe_until(f"{base}/healthz", 200, 0)["alive"] is True
            assert "dqpulse_checkpoints_total" in httpx.get(f"{base}/metrics").text

            set_connections(pg_admin_url, database, allowed=False)
            try:
                body = _probe_until(f"{base}/readyz", 503, 2 * PROBE_INTERVAL_S)
                assert "database" in body["checks"], body
                assert _probe_until(f"{base}/healthz", 200, 0)["alive"] is True
            finally:
                set_connections(pg_admin_url, database, allowed=True)
            _probe_until(f"{base}/readyz", 200, 2 * PROBE_INTERVAL_S)

            blockable.unblocked.clear()  # the loop is stuck in poll()
            try:
                body = _probe_until(f"{base}/healthz", 503, 2 * PROBE_INTERVAL_S + 1.5)
                assert body["alive"] is False and body["seconds_since_loop_turned"] > 1.5
            finally:
                blockable.unblocked.set()
            _probe_until(f"{base}/healthz", 200, 2 * PROBE_INTERVAL_S)
            assert httpx.get(f"{base}/nope").status_code == 404
            worker.stop()  # not ready while it stops: no new traffic to a leaving worker
            assert "stopping" in _probe_until(f"{base}/readyz", 503, 0)["checks"]
    finally:
        server.close()
        probe_engine.dispose()
        engine.dispose()


def _doctor(env: dict[str, str], *args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "workers.cli", "doctor", "--timeout", "3",
                             *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout, time.monotonic() - started


def _line(output: str, name: str) -> str:
    for line in output.splitlines():
        if line[5:].startswith(f"{name}:"):
            return line
    raise AssertionError(f"no line for check {name!r} in:\n{output}")


def test_doctor_names_each_broken_part_and_passes_a_sound_setup(
        fresh_db, pg_admin_url, make_topic, kafka_bootstrap, tmp_path):
    topic = make_topic("doc", partitions=3)
    missing_topic = f"doctor-missing-{topic}"
    receiver_port = _free_port()
    config = tmp_path / "dqpulse.yaml"
    config.write_text(f"""
datasets:
  - {{name: present, topic: {topic}, window: 10s}}
  - {{name: absent, topic: {missing_topic}, window: 10s}}
notifications:
  - name: hook
    type: webhook
    url: http://127.0.0.1:{receiver_port}/dq
    secret: ${{DOCTOR_TEST_SECRET}}
""")
    # an empty database (never migrated) next to the migrated fresh_db
    empty = pg_admin_url.rsplit("/", 1)[0] + f"/dqpulse_doc_{os.getpid()}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{empty.rsplit("/", 1)[1]}"'))
    admin.dispose()
    env = _env(DQPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap, DQPULSE_DATABASE_URL=empty)
    env.pop("DOCTOR_TEST_SECRET", None)
    try:
        code, out, _ = _doctor(env, "-f", str(config))  # nothing stored: check the file
        assert code == 1, out
        assert _line(out, "database").startswith("ok")
        assert _line(out, "database.migrations").startswith("FAIL")
        assert "dqpulse migrate" in _line(out, "database.migrations")
        assert _line(out, f"topic {topic}").startswith("ok")
        assert "3 partitions" in _line(out, f"topic {topic}")
        assert _line(out, f"topic {missing_topic}").startswith("FAIL")
        assert "missing" in _line(out, f"topic {missing_topic}")
        assert _line(out, "channel hook").startswith("FAIL")
        assert "DOCTOR_TEST_SECRET" in _line(out, "channel hook")

        wrong_port = _free_port()
        code, out, elapsed = _doctor(dict(env, DQPULSE_KAFKA_BOOTSTRAP=f"127.0.0.1:{wrong_port}"),
                                     "-f", str(config))
        assert code == 1, out
        assert _line(out, "kafka").startswith("FAIL")
        assert f"127.0.0.1:{wrong_port}" in _line(out, "kafka")
        assert elapsed < 20, elapsed  # bounded by --timeout, not a hang
    finally:
        drop_database(pg_admin_url, empty)

    sound = dict(env, DQPULSE_DATABASE_URL=fresh_db, DOCTOR_TEST_SECRET="set-for-doctor")
    config.write_text(config.read_text().replace(
        f"  - {{name: absent, topic: {missing_topic}, window: 10s}}\n", ""))
    _apply(config, sound)
    code, out, _ = _doctor(sound)  # the stored model, as the processes run it
    assert code == 0, out
    assert all(line.startswith("ok") for line in out.splitlines()[:-1]), out
    assert _line(out, "channel hook").startswith("ok")
    assert _line(out, "model").startswith("ok   model: version 1")
    assert "set-for-doctor" not in out
    if os.environ.get("DQPULSE_PROMETHEUS_URL"):
        assert _line(out, "prometheus").startswith("ok")



def test_sigterm_stops_the_api_and_the_score_worker_within_5s(fresh_db, tmp_path):
    config = tmp_path / "dqpulse.yaml"
    config.write_text("datasets:\n  - {name: scored, topic: scored, window: 10s}\n")
    probe_port = _free_port()
    env = _env(DQPULSE_DATABASE_URL=fresh_db, DQPULSE_AUTOENCODER="off",
               DQPULSE_WORKER_METRICS_PORT=str(probe_port - 1))  # score: port + 1
    _apply(config, env)
    api_port = _free_port()
    logs = {"api": tmp_path / "api.log", "score": tmp_path / "score.log"}
    commands = {"api": ["api", "--port", str(api_port)], "score": ["worker", "score"]}
    processes = {}
    for name, args in commands.items():
        with logs[name].open("ab") as out:
            processes[name] = subprocess.Popen([sys.executable, "-m", "workers.cli", *args],
                                               cwd=ROOT, env=env, stdout=out,
                                               stderr=subprocess.STDOUT)
    try:
        for url in (f"http://127.0.0.1:{api_port}/readyz",
                    f"http://127.0.0.1:{probe_port}/readyz"):
            wait_until(lambda url=url: _answers(url) == 200, 60, message=url)
        assert httpx.get(f"http://127.0.0.1:{probe_port}/healthz").json()["alive"] is True
        with httpx.Client() as client:  # a keep-alive connection open, as a balancer holds
            assert client.get(f"http://127.0.0.1:{api_port}/healthz").status_code == 200
            stop_s = {name: _stop_and_time(process) for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    assert all(seconds < STOP_LIMIT_S for seconds in stop_s.values()), stop_s
    assert processes["score"].returncode == 0
    # uvicorn ends by re-raising the signal once it has shut down
    assert processes["api"].returncode in (0, -signal.SIGTERM)
    for log in logs.values():
        _json_lines(log)
        _assert_no_secret(log)


def test_an_ingest_worker_without_finalize_leaves_the_windows_to_the_score_worker(
        fresh_db, make_topic, kafka_bootstrap, tmp_path):
    """``DQPULSE_INGEST_FINALIZE=false``: the ingest worker only checkpoints (window
    partials and watermarks, no metric point); a score worker process finalizes and scores
    every window, each counting exactly what was produced into it."""
    topic = make_topic("split", partitions=2)
    config = tmp_path / "dqpulse.yaml"
    config.write_text(f"""
datasets:
  - name: split
    topic: {topic}
    event_time: ts
    window: 10s
    lateness: 1s
    fields:
      value: {{type: number}}
""")
    score_port = _free_port()
    env = _env(DQPULSE_DATABASE_URL=fresh_db, DQPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
               DQPULSE_KAFKA_GROUP=f"split-{topic}", DQPULSE_CHECKPOINT_INTERVAL_S="0.5",
               DQPULSE_IDLE_PARTITION_TIMEOUT_S="3600", DQPULSE_AUTOENCODER="off",
               DQPULSE_INGEST_FINALIZE="false", DQPULSE_LOG_LEVEL="INFO",
               DQPULSE_WORKER_METRICS_PORT=str(score_port - 1))  # score: port + 1
    base = 1_700_000_000.0  # event times of the past: windows close on event time only
    produced: Counter[float] = Counter()
    rows = []
    for i in range(3000):
        ts = base + 40.0 * i / 3000  # four 10 s windows
        produced[math.floor(ts / 10) * 10] += 1
        rows.append((i % 2, json_bytes({"ts": ts, "value": i % 97})))
    rows += [(p, json_bytes({"ts": base + 100, "value": 0})) for p in range(2)]  # closes them
    _apply(config, env)
    logs = {"ingest": tmp_path / "ingest.log", "score": tmp_path / "score.log"}
    processes: dict[str, subprocess.Popen[bytes]] = {"ingest": _ingest(env, logs["ingest"])}
    engine = make_engine(fresh_db)

    def watermark() -> float | None:
        with engine.connect() as conn:
            return conn.execute(text("SELECT min(watermark) FROM partition_checkpoints "
                                     "HAVING count(*) = 2")).scalar()

    def volumes() -> dict[float, int]:
        with engine.connect() as conn:
            found = conn.execute(select(metric_points.c.window_start, metric_points.c.value)
                                 .where(metric_points.c.metric == "volume.records",
                                        metric_points.c.field == "",
                                        metric_points.c.window_start < base + 100)).all()
        return {row.window_start: int(row.value) for row in found if row.value}

    try:
        produce(kafka_bootstrap, topic, rows)
        wait_until(lambda: (watermark() or 0) >= base + 100, 90, interval_s=0.5,
                   message="every partition checkpointed past the windows")
        time.sleep(2.0)  # a finalizing worker would have finalized them by now
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(metric_points)).scalar() == 0
            partials = conn.execute(text("SELECT count(DISTINCT window_start) "
                                         "FROM window_partials")).scalar()
        assert partials >= len(produced)
        with logs["score"].open("ab") as out:
            processes["score"] = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", "worker", "score"], cwd=ROOT, env=env,
                stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: len(volumes()) == len(produced), 90, interval_s=0.5,
                   message="the score worker finalized every window")
        with engine.connect() as conn:
            unscored = conn.execute(select(func.count()).select_from(metric_points).where(
                metric_points.c.metric == "volume.records", metric_points.c.score.is_(None),
                metric_points.c.window_start < base + 100)).scalar()
        counted = volumes()
        stop_s = {name: _stop_and_time(process) for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
        engine.dispose()
    assert counted == dict(produced)
    assert unscored == 0  # scored by the score worker's detectors
    assert all(seconds < STOP_LIMIT_S for seconds in stop_s.values()), stop_s
    assert all(process.returncode == 0 for process in processes.values())
    for log in logs.values():
        _json_lines(log)


def _answers(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None
