"""A record that kills the worker as it is counted (a crash in native code, the kernel's
out-of-memory killer: nothing the process could catch) was read again after every
restart, for ever. Now the restores of a checkpoint are counted, and from the second the
partition is counted carefully, each run of records noted in the database before it is
counted: the next worker counts the run where one died record by record, the one after it
counts the record where that one died alone once more, and if it dies too, the next one
dead-letters that record (reason ``killed_worker``) and reads on. Real processes killed
with SIGKILL by the record, a real Kafka and Postgres."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest
from confluent_kafka import Consumer

from dqpulse.store import checkpoints
from dqpulse.store import metrics as metric_store
from dqpulse.store.db import make_engine
from tests.integration.helpers import json_bytes, produce

pytestmark = pytest.mark.integration

KILLER = -666.0

# one worker process: it reads until the checkpoint reaches ``target`` (then stops as
# usual) or dies; its window update kills the process when it meets the killer record
# (``kills`` times in all, counted in a file: -1 for ever)
CHILD = f"""
import logging, os, signal, sys, threading, time
from prometheus_client import CollectorRegistry
from dqpulse.config import Settings
from dqpulse.ingest import IngestWorker
from dqpulse.metrics import WindowState
from dqpulse.spec import parse_spec
from dqpulse.store import checkpoints
from dqpulse.store.db import make_engine
from dqpulse.telemetry import Telemetry
from workers.ingest import make_source
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(levelname)s %(name)s %(message)s")
url, bootstrap, topic, dlq, target, kills, tally = sys.argv[1:8]
real = WindowState.update

def update(self, batch):
    if (batch.frame["amount"] == {KILLER}).any():
        done = len(open(tally).read()) if os.path.exists(tally) else 0
        if int(kills) < 0 or done < int(kills):
            with open(tally, "a") as out:
                out.write("x")
            os.kill(os.getpid(), signal.SIGKILL)
    real(self, batch)

WindowState.update = update
# a group of its own: the dead worker before would hold the partition for its session
settings = Settings(database_url=url, kafka_bootstrap=bootstrap,
                    kafka_group="g-" + topic + "-" + str(os.getpid()),
                    dead_letter_topic=dlq, checkpoint_interval_s=0.3,
                    idle_partition_timeout_s=600.0, poll_max_records=1000)
spec = parse_spec("datasets:\\n  - {{name: crashy, topic: " + topic
                  + ", event_time: ts, window: 1h, lateness: 0s}}\\n")
engine = make_engine(url)
source, dead_letter = make_source(settings)
worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                      source=source, dead_letter=dead_letter,
                      telemetry=Telemetry(CollectorRegistry()))
thread = threading.Thread(target=worker.run, daemon=True)
thread.start()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    with engine.connect() as conn:
        saved = checkpoints.get(conn, dataset="crashy", partition=0)
    if saved is not None and saved.next_offset >= int(target):
        break
    time.sleep(0.2)
worker.stop()
thread.join(30)
print("stats", dict(worker.stats.by_reason), worker.stats.accepted, flush=True)
"""


def _crash_loop(url: str, bootstrap: str, topic: str, dlq: str, tally: str,
                kills: int) -> list[subprocess.CompletedProcess[str]]:
    """Workers started one after the other on 200 records (offset 120 the killer, which
    kills ``kills`` workers in all: -1 every one) until one reads them all and stops."""
    def run(target: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", CHILD, url, bootstrap, topic, dlq,
                               str(target), str(kills), tally],
                              capture_output=True, text=True, timeout=120)

    base = (time.time() - 7200) // 3600 * 3600
    records = [json_bytes({"ts": base + i, "amount": KILLER if i == 120 else float(i)})
               for i in range(200)]
    produce(bootstrap, topic, [(0, r) for r in records[:50]])
    first = run(50)
    assert first.returncode == 0, first.stderr[-3000:]
    produce(bootstrap, topic, [(0, r) for r in records[50:]])
    runs = []
    for _ in range(7):
        runs.append(run(200))
        if runs[-1].returncode == 0:
            break
    print("\n".join(f"-- run {n}: {run.returncode}\n" + "\n".join(
        line for line in run.stderr.splitlines() if line.startswith(("WARNING", "ERROR")))
        for n, run in enumerate(runs)))  # shown when the test fails
    return runs


def test_a_record_that_kills_every_worker_is_found_dead_lettered_and_passed(
        fresh_db, make_topic, kafka_bootstrap, tmp_path):
    topic, dlq = make_topic("crashy", partitions=1), make_topic("crashy-dlq", partitions=1)
    runs = _crash_loop(fresh_db, kafka_bootstrap, topic, dlq, str(tmp_path / "kills"), -1)
    assert [run.returncode for run in runs] == [-9, -9, -9, -9, 0]
    # each careful step said what it does
    assert "noting each run of records in the database" in runs[1].stderr
    assert "counting offsets 50-199, where the worker before died, one record at a time" \
        in runs[2].stderr
    assert "counting offset 120, where the worker before died counting it alone, alone " \
        "once more" in runs[3].stderr
    assert "dead-lettering offset 120, which killed 2 workers counting it alone" \
        in runs[4].stderr
    assert "offset 120 killed 2 workers counting it alone" in runs[4].stderr
    assert "stats {'killed_worker': 1} 149" in runs[4].stdout

    engine = make_engine(fresh_db)
    with engine.connect() as conn:
        saved = checkpoints.get(conn, dataset="crashy", partition=0)
        marks = conn.exec_driver_sql(
            "select restores, careful_first, careful_last, careful_at, careful_tries "
            "from partition_checkpoints where dataset = 'crashy'").one()
    assert saved is not None and saved.next_offset == 200
    assert tuple(marks) == (0, None, None, None, None)  # passed: a save cleared the notes

    # every other record counted exactly once: the window's count and mean
    from dqpulse.aggregate import PartitionAggregator
    from dqpulse.spec import DatasetSpec
    aggregator = PartitionAggregator.restore(
        DatasetSpec(name="crashy", topic=topic, event_time="ts", window=3600, lateness=0),
        0, saved.state)
    assert aggregator.counters["accepted"] == 199
    assert aggregator.counters["bad.killed_worker"] == 1
    with engine.connect() as conn:
        assert not metric_store.get_points(conn, dataset="crashy", metric="volume.records")
    engine.dispose()

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"check-{dlq}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([dlq])
    dead = []
    deadline = time.time() + 30
    while not dead and time.time() < deadline:
        dead += [msg for msg in consumer.consume(10, 1.0) if msg.error() is None]
    consumer.close()
    assert len(dead) == 1 and orjson.loads(dead[0].value())["amount"] == KILLER
    headers = dict(dead[0].headers())
    assert headers["dqpulse.reason"] == b"killed_worker"
    assert headers["dqpulse.source"] == f"{topic}:0:120".encode()


def test_a_record_one_worker_died_counting_alone_is_counted_when_the_next_survives_it(
        fresh_db, make_topic, kafka_bootstrap, tmp_path):
    """The third death, counting offset 120 alone, was the last one (as when something
    else killed that worker in those few milliseconds, its supervisor say): the next
    worker counts the record alone once more, survives, and the record is counted like
    every other, not dead-lettered."""
    topic, dlq = make_topic("onekill", partitions=1), make_topic("onekill-dlq", partitions=1)
    runs = _crash_loop(fresh_db, kafka_bootstrap, topic, dlq, str(tmp_path / "kills"), 3)
    assert [run.returncode for run in runs] == [-9, -9, -9, 0]
    assert "counting offset 120, where the worker before died counting it alone, alone " \
        "once more" in runs[3].stderr
    assert "stats {} 150" in runs[3].stdout
    assert "killed_worker" not in runs[3].stderr

    engine = make_engine(fresh_db)
    with engine.connect() as conn:
        saved = checkpoints.get(conn, dataset="crashy", partition=0)
    engine.dispose()
    assert saved is not None and saved.next_offset == 200
    from dqpulse.aggregate import PartitionAggregator
    from dqpulse.spec import DatasetSpec
    aggregator = PartitionAggregator.restore(
        DatasetSpec(name="crashy", topic=topic, event_time="ts", window=3600, lateness=0),
        0, saved.state)
    assert aggregator.counters["accepted"] == 200
    assert "bad.killed_worker" not in aggregator.counters
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"check-{dlq}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([dlq])
    dead = [msg for msg in consumer.consume(10, 5.0) if msg.error() is None]
    consumer.close()
    assert not dead


def test_a_worker_that_outlives_a_crash_loop_clears_the_restores_of_its_partitions(
        fresh_db, make_topic, kafka_bootstrap, monkeypatch):
    """The partitions of a worker that crash-looped were restored again and again, the
    idle ones too (nothing arrives to move their checkpoints): a worker that has owned
    them for ``SURVIVED_S`` did not die of them, so their count of restores is cleared
    and the careful count of the idle one ends (before, `dqpulse doctor` named an idle
    partition until it next moved)."""
    from prometheus_client import CollectorRegistry

    from dqpulse.config import Settings
    from dqpulse.doctor import window_checks
    from dqpulse.ingest import IngestWorker
    from dqpulse.ingest import careful as careful_module
    from dqpulse.spec import parse_spec
    from dqpulse.telemetry import Telemetry
    from tests.integration.helpers import WorkerThread, wait_until
    from workers.ingest import make_source

    monkeypatch.setattr(careful_module, "SURVIVED_S", 2.0)
    topic = make_topic("survivor", partitions=2)
    base = (time.time() - 7200) // 3600 * 3600
    produce(kafka_bootstrap, topic, [(p, json_bytes({"ts": base + i, "amount": float(i)}))
                                     for i in range(20) for p in (0, 1)])
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", checkpoint_interval_s=0.3,
                        idle_partition_timeout_s=600.0)
    spec = parse_spec(f"datasets:\n  - {{name: survivor, topic: {topic}, event_time: ts, "
                      "window: 1h, lateness: 0s}\n")
    engine = make_engine(fresh_db)

    def worker() -> IngestWorker:
        source, dead_letter = make_source(settings)
        return IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                            source=source, dead_letter=dead_letter,
                            telemetry=Telemetry(CollectorRegistry()))

    def restores() -> dict[int, int]:
        with engine.connect() as conn:
            return {int(row.partition): int(row.restores) for row in conn.exec_driver_sql(
                "select partition, restores from partition_checkpoints")}

    first = worker()
    with WorkerThread(first):
        wait_until(lambda: len(restores()) == 2 and first.stats.accepted == 40, 60,
                   message="both partitions read and checkpointed")
    with engine.begin() as conn:  # two workers restored them and died (as in a crash loop)
        for partition in (0, 1):
            for _ in range(2):
                checkpoints.note_restore(conn, dataset="survivor", partition=partition,
                                         version=checkpoints.get(
                                             conn, dataset="survivor",
                                             partition=partition).version)
    assert restores() == {0: 2, 1: 2}
    survivor = worker()
    with WorkerThread(survivor):
        wait_until(lambda: len(survivor.owned) == 2 and restores() == {0: 3, 1: 3}, 60,
                   message="restored a third time")
        assert set(survivor._careful) == {("survivor", 0), ("survivor", 1)}
        [line] = [c for c in window_checks(engine, None, 5.0) if c.name == "partitions"]
        assert not line.ok
        wait_until(lambda: restores() == {0: 0, 1: 0}, 30,
                   message="cleared once the worker outlived SURVIVED_S")
        assert not survivor._careful  # the idle partitions are counted as usual again
        [line] = [c for c in window_checks(engine, None, 5.0) if c.name == "partitions"]
        assert line.ok
    engine.dispose()
