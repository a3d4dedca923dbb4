"""A partition whose position its log does not hold (dqpulse.ingest.resets). Before session
46 the consumer went back to the log's start silently, and the worker skipped every record
below its checkpoint as counted before: a deleted and recreated topic lost its records
until their offsets passed the old ones. Now each source reports the reset and the worker
says what happened, counts it, and counts every record the log still holds exactly once.
A real Kafka (topics deleted and recreated, records deleted as retention does) and a real
Postgres, with both Kafka clients. And a topic recreated with fewer partitions: the
checkpoints of the partitions it lost held every later window back, for ever."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry

from dqpulse.aggregate import PartitionAggregator
from dqpulse.config import Settings
from dqpulse.ingest import IngestWorker
from dqpulse.spec import DatasetSpec, parse_spec
from dqpulse.store import checkpoints
from dqpulse.store.db import make_engine
from dqpulse.telemetry import Telemetry
from tests.integration.helpers import WorkerThread, json_bytes, produce, wait_until
from workers.ingest import make_source

pytestmark = pytest.mark.integration

CLIENTS = ["confluent", "kafka-python"]


def _records(first: int, count: int, base: float,
             partition: int = 0) -> list[tuple[int, bytes]]:
    return [(partition, json_bytes({"ts": base + i, "amount": float(i)}))
            for i in range(first, first + count)]


def _recreate(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic])[topic].result(timeout=30)

    def created() -> bool:
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                return False  # still being deleted
            # the local broker creates a topic a client asks metadata of (a closing
            # consumer did, once the delete had ended): a new log all the same
            described = admin.list_topics(topic, timeout=10).topics.get(topic)
            return described is not None and len(described.partitions) == partitions
        return True

    wait_until(created, 60, interval_s=1.0, message="the topic created again")


class _Run:
    """Workers of one data set reading a topic, one after the other."""

    def __init__(self, url: str, bootstrap: str, topic: str, client: str) -> None:
        self.url, self.topic = url, topic
        self.settings = Settings(database_url=url, kafka_bootstrap=bootstrap,
                                 kafka_group=f"g-{topic}", kafka_client=client,
                                 checkpoint_interval_s=0.3, idle_partition_timeout_s=600.0)
        self.spec = parse_spec(f"datasets:\n  - {{name: resets, topic: {topic}, "
                               "event_time: ts, window: 1h, lateness: 0s}\n")
        self.engine = make_engine(url)

    def worker(self) -> IngestWorker:
        source, dead_letter = make_source(self.settings)
        return IngestWorker(settings=self.settings, engine=self.engine,
                            datasets=self.spec.datasets, source=source,
                            dead_letter=dead_letter, telemetry=Telemetry(CollectorRegistry()))

    def saved(self, partition: int = 0) -> checkpoints.Checkpoint | None:
        with self.engine.connect() as conn:
            return checkpoints.get(conn, dataset="resets", partition=partition)

    def saved_offset(self, partition: int = 0) -> int | None:
        checkpoint = self.saved(partition)
        return None if checkpoint is None else checkpoint.next_offset

    def read(self, accepted: int, *offsets: int) -> IngestWorker:
        """A worker that reads until it accepted ``accepted`` records and checkpointed
        ``offsets`` (one per partition), then stops."""
        worker = self.worker()
        with WorkerThread(worker):
            wait_until(lambda: worker.stats.accepted >= accepted and all(
                self.saved_offset(partition) == offset
                for partition, offset in enumerate(offsets)), 60,
                       message=f"{accepted} records accepted and offsets {offsets} saved")
        return worker

    def counted(self, partition: int = 0) -> float:
        saved = self.saved(partition)
        assert saved is not None
        aggregator = PartitionAggregator.restore(
            DatasetSpec(name="resets", topic=self.topic, event_time="ts", window=3600,
                        lateness=0), partition, saved.state)
        return aggregator.counters["accepted"]


def _sample(worker: IngestWorker, name: str, **labels: str) -> float:
    value = worker.telemetry.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.mark.parametrize("client", CLIENTS)
def test_a_recreated_topic_is_counted_from_its_start(fresh_db, make_topic, kafka_bootstrap,
                                                      client, caplog):
    topic = make_topic("recreated")
    base = (time.time() - 7200) // 3600 * 3600
    produce(kafka_bootstrap, topic, _records(0, 100, base))
    run = _Run(fresh_db, kafka_bootstrap, topic, client)
    run.read(100, 100)

    _recreate(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, _records(100, 30, base))  # offsets 0-29 of the new log
    worker = run.worker()
    with WorkerThread(worker):
        wait_until(lambda: worker.stats.accepted >= 30, 60, message="30 records accepted")
        # the new log passes the checkpoint's witness (offset 99) while this worker reads
        # it: compared with a record of the new log, the old witness would reset it again
        produce(kafka_bootstrap, topic, _records(130, 100, base))  # offsets 30-129
        wait_until(lambda: run.saved_offset() == 130, 60, message="offset 130 saved")

    assert worker.stats.accepted == 130  # every record of the new log, once
    assert run.counted() == 230
    assert _sample(worker, "dqpulse_ingest_offset_resets_total", dataset="resets",
                   reason="log_shorter") == 1
    assert (f"{topic}[0]: its log holds offsets 0-29, and resets had read it up to offset "
            "100: the topic was deleted and recreated") in caplog.text


@pytest.mark.parametrize("client", CLIENTS)
def test_a_recreated_topic_longer_than_the_old_position_is_counted_from_its_start(
        fresh_db, make_topic, kafka_bootstrap, client, caplog):
    """The topic was deleted and recreated while no worker read it, and holds more records
    than the checkpoint's offset when one comes back: not out of range, so offsets alone
    took it for the old log and skipped its first 100 records as counted (session 46's
    known limit). The checkpoint's witness, the record it counted at offset 99, tells the
    logs apart (dqpulse.ingest.witness)."""
    topic = make_topic("outgrown")
    base = (time.time() - 7200) // 3600 * 3600
    produce(kafka_bootstrap, topic, _records(0, 100, base))
    run = _Run(fresh_db, kafka_bootstrap, topic, client)
    run.read(100, 100)
    saved = run.saved()
    assert saved is not None and saved.witness is not None and saved.witness[0] == 99

    # the same log, restarted: the witness is read again, matches, and is not counted
    produce(kafka_bootstrap, topic, _records(100, 20, base))
    worker = run.read(20, 120)
    assert worker.stats.accepted == 20 and run.counted() == 120
    assert _sample(worker, "dqpulse_ingest_offset_resets_total", dataset="resets",
                   reason="replaced") == 0

    _recreate(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, _records(120, 150, base))  # offsets 0-149 of the new log
    worker = run.read(150, 150)
    assert worker.stats.accepted == 150  # every record of the new log, once
    assert run.counted() == 270
    assert _sample(worker, "dqpulse_ingest_offset_resets_total", dataset="resets",
                   reason="replaced") == 1
    assert (f"{topic}[0]: the record at offset 119 is not the one resets counted there: the "
            "topic was deleted and recreated") in caplog.text


@pytest.mark.parametrize("client", CLIENTS)
def test_a_topic_recreated_and_refilled_while_a_worker_reads_it_is_counted_from_its_start(
        fresh_db, make_topic, kafka_bootstrap, client):
    """The worker reads on while its topic is deleted, recreated and refilled past its
    position: its fetch at offset 100 fails out of range while the new log is short
    (10 records), and the log is refilled to 0-149 once the worker has said so. Every
    record of the new log counts once. (Session 47 found a timing of this where the log
    already held 0-149 when the source read its bounds: offsets alone took it for a
    fetch retried on the old log, ``retried``, and read on from 100; the witness is now
    compared again after a retried fetch, dqpulse.ingest.witness, unit-tested. Where the
    new log is refilled past the position before the worker's next fetch at all, nothing
    fails and its first 100 records are not counted: a known limit, docs/operations.md;
    under CPU load this test met that timing in 1 run of 2 to 8 before it waited for the
    report, session 49.)"""
    topic = make_topic("refilled")
    base = (time.time() - 7200) // 3600 * 3600
    produce(kafka_bootstrap, topic, _records(0, 100, base))
    run = _Run(fresh_db, kafka_bootstrap, topic, client)
    worker = run.worker()

    def resets() -> float:
        return sum(_sample(worker, "dqpulse_ingest_offset_resets_total", dataset="resets",
                           reason=reason) for reason in ("log_shorter", "replaced"))

    with WorkerThread(worker):
        wait_until(lambda: run.saved_offset() == 100, 60, message="offset 100 saved")
        _recreate(kafka_bootstrap, topic)
        produce(kafka_bootstrap, topic, _records(100, 10, base))  # offsets 0-9
        wait_until(lambda: resets() == 1, 60, message="the short new log reported")
        produce(kafka_bootstrap, topic, _records(110, 140, base))  # offsets 10-149
        wait_until(lambda: run.saved_offset() == 150 and worker.stats.accepted >= 250, 60,
                   message="the new log's 150 records accepted and offset 150 saved")
    assert worker.stats.accepted == 250 and run.counted() == 250  # each record once
    assert resets() == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_records_deleted_before_they_were_read_are_counted_as_unread(
        fresh_db, make_topic, kafka_bootstrap, client, caplog):
    """Partition 0 lost records to retention; partition 1, read at the same time, did not
    (the consumer moved partition 0 and left partition 1 where it was)."""
    topic = make_topic("retention", partitions=2)
    base = (time.time() - 7200) // 3600 * 3600
    produce(kafka_bootstrap, topic, _records(0, 100, base) + _records(0, 100, base, 1))
    run = _Run(fresh_db, kafka_bootstrap, topic, client)
    run.read(200, 100, 100)
    produce(kafka_bootstrap, topic, _records(100, 100, base) + _records(100, 400, base, 1))
    # the workers were away while retention deleted partition 0's log up to offset 150
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    [future] = admin.delete_records([CkTopicPartition(topic, 0, 150)]).values()
    assert future.result(timeout=30).low_watermark == 150

    worker = run.read(450, 200, 500)
    assert worker.stats.accepted == 450  # what the logs still hold, once
    assert (run.counted(0), run.counted(1)) == (150, 500)
    assert _sample(worker, "dqpulse_ingest_offset_resets_total", dataset="resets",
                   reason="retention") == 1
    assert _sample(worker, "dqpulse_ingest_records_unread_total", dataset="resets") == 50
    assert (f"{topic}[0]: offsets 100-149 were deleted from the topic (its retention, or "
            "deleted records) before they were read: 50 records of resets never counted"
            ) in caplog.text


def test_a_topic_recreated_with_fewer_partitions_lets_its_windows_close(
        fresh_db, make_topic, kafka_bootstrap, caplog):
    """Partition 1 is gone: its checkpoint is retired, the window it held open is
    finalized with what it had counted, and the windows after it close as partition 0
    reads on."""
    from dqpulse.store import metrics as metric_store

    topic = make_topic("shrunk", partitions=2)
    base = (time.time() - 7200) // 60 * 60
    # minutes 0-4: 60 records a minute on each partition (minute 4 still open at the end)
    produce(kafka_bootstrap, topic, _records(0, 300, base) + _records(0, 300, base, 1))
    run = _Run(fresh_db, kafka_bootstrap, topic, "confluent")
    run.spec = parse_spec(f"datasets:\n  - {{name: resets, topic: {topic}, "
                          "event_time: ts, window: 1m, lateness: 0s}\n")
    run.read(600, 300, 300)

    _recreate(kafka_bootstrap, topic, partitions=1)
    # minutes 5-14 on the one partition left: 10 records a minute, offsets 0-99
    produce(kafka_bootstrap, topic, [(0, json_bytes({"ts": base + 300 + 6 * j, "amount": 1.0}))
                                     for j in range(100)])
    worker = run.worker()
    with WorkerThread(worker):
        def finalized() -> list[dict]:
            with run.engine.connect() as conn:
                return metric_store.get_points(conn, dataset="resets", metric="volume.records")

        wait_until(lambda: len(finalized()) >= 14, 60, message="windows 0-13 finalized")
    assert run.saved(1) is None  # retired
    counts = [point["value"] for point in finalized()][:14]
    assert counts == [120.0] * 5 + [10.0] * 9  # partition 1's open minute 4 included
    assert (f"topic {topic} has 1 partitions, fewer than the 2 of dataset resets's "
            "checkpoints: it was deleted and created again; the checkpoints of partitions "
            "1 are retired") in caplog.text
