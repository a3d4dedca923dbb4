"""End-to-end ingest benchmark: the real ``IngestWorker`` on the local Kafka and Postgres.

Produces the 10-field data set of ``bench/ingest_compute.py`` (>= 1,000,000 records) into
fresh topics on the local broker (``deploy/local/stack up``), creates a throwaway
database at Alembic head, and measures in one run, each path in a fresh process pinned to
one core (``--repeat`` rounds, interleaved; medians reported):

1. bare consume + ``orjson.loads`` per record, confluent-kafka and kafka-python (the
   ceiling of each client: assign, consume, decode, discard),
2. the real ``IngestWorker`` (the Kafka source under test, checkpoints to Postgres every
   ``checkpoint_interval_s`` (default 2 s), window finalization) consuming every record of a
   1-partition topic: from the first poll (group join included) until every offset is
   checkpointed, with the worker's peak RSS, for both sources (kafka-python only in the
   first ``--kafka-python-rounds`` rounds: it is slow),
3. one worker, then two worker processes in one consumer group, on a 4-partition topic
   (scaling 1 -> 2; aggregate rate = all records / (last checkpoint - first poll)),
4. whylogs 1.6.4 profiling the same records (``ingest_compute.py``'s whylogs runner, in
   its own virtualenv; it reads them from the file, not from Kafka).

The broker and Postgres share this machine's cores with the workers.
Usage: ``eval "$(deploy/local/stack env)"; .venv/bin/python bench/ingest_e2e.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import ingest_compute as compute  # noqa: E402  (the data set, pinning, whylogs runner)

DEFAULT_PG = "postgresql+psycopg://dqpulse@127.0.0.1:55432/dqpulse"
DEFAULT_KAFKA = "127.0.0.1:19092"
POLL = compute.BATCH  # records per poll: the worker's default, for the bare consumers too


# -- set-up -------------------------------------------------------------------------------
def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                            replication_factor=1)])
    futures[name].result(30)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(names).values():
        try:
            future.result(30)
        except Exception as exc:  # noqa: BLE001 - a leftover bench topic is harmless
            print(f"could not delete a topic: {exc}", file=sys.stderr)


def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> float:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                         "batch.num.messages": 10_000, "queue.buffering.max.messages": 500_000,
                         "enable.idempotence": True})
    errors: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    started = time.perf_counter()
    for index, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value=value, partition=index % partitions,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if index % 20_000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining or errors:
        raise RuntimeError(f"{remaining} undelivered, errors: {errors[:3]}")
    return time.perf_counter() - started


def create_database(admin_url: str) -> str:
    from tests.integration.helpers import create_database as create

    return create(admin_url, "dqpulse_bench")


def drop_database(admin_url: str, url: str) -> None:
    from tests.integration.helpers import drop_database as drop

    drop(admin_url, url)


# -- children -----------------------------------------------------------------------------
def child_bare(client: str, bootstrap: str, topic: str, partitions: int,
               expected: int) -> dict[str, float]:
    """Consume every record of ``topic`` and ``orjson.loads`` each one: the ceiling."""
    import orjson

    compute.pin(1)
    loads = orjson.loads
    count = 0
    first = 0.0
    if client == "confluent":
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                             "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                             "max.partition.fetch.bytes": 4_194_304,
                             "fetch.queue.backoff.ms": 10,
                             "queued.min.messages": 20_000})  # as ConfluentSource
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        while count < expected:
            messages = consumer.consume(num_messages=POLL, timeout=1.0)
            if messages and not first:
                first = time.perf_counter()
            for message in messages:
                if message.error() is None:
                    loads(message.value())
                    count += 1
        consumer.close()
    else:
        from kafka import KafkaConsumer
        from kafka import TopicPartition as KpTopicPartition

        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                 max_poll_records=POLL, fetch_max_bytes=52_428_800,
                                 max_partition_fetch_bytes=4_194_304)
        tps = [KpTopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while count < expected:
            batches = consumer.poll(timeout_ms=1000, max_records=POLL)
            if batches and not first:
                first = time.perf_counter()
            for records in batches.values():
                for record in records:
                    loads(record.value)
                    count += 1
        consumer.close()
    elapsed = time.perf_counter() - first
    return {"records": count, "seconds": elapsed, "peak_rss_mib": compute.peak_rss_mib()}


def child_worker(client: str, bootstrap: str, db_url: str, topic: str, dataset: str,
                 group: str, cpu: int, partitions: int, end_offset_total: int) -> dict[str, Any]:
    """The real IngestWorker until every partition's offsets are checkpointed."""
    compute.pin(cpu)
    from sqlalchemy import func, select

    from dqpulse.config import Settings
    from dqpulse.ingest import IngestWorker
    from dqpulse.store.db import make_engine
    from dqpulse.store.tables import partition_checkpoints

    settings = Settings(database_url=db_url, kafka_bootstrap=bootstrap, kafka_group=group,
                        kafka_client=client)  # type: ignore[arg-type]
    if client == "confluent":
        from dqpulse.sources.kafka_confluent import ConfluentSource
        source: Any = ConfluentSource(settings)
    else:
        from dqpulse.sources.kafka_python import KafkaPythonSource
        source = KafkaPythonSource(settings)
    engine = make_engine(db_url)
    spec = compute.bench_spec(dataset, topic)
    worker = IngestWorker(settings=settings, engine=engine, datasets=[spec], source=source)
    started = time.time()
    worker.start()
    first_poll: float | None = None
    last_record = 0.0
    next_check = 0.0
    query = select(func.count(), func.coalesce(func.sum(partition_checkpoints.c.next_offset), 0)
                   ).where(partition_checkpoints.c.dataset == dataset)

    def all_checkpointed() -> bool:
        with engine.connect() as conn:
            rows, offsets = conn.execute(query).one()
        return int(rows) == partitions and int(offsets) >= end_offset_total

    while True:
        polled = worker.stats.polled
        before = time.time()
        worker.run_once()
        if worker.stats.polled > polled:
            last_record = time.time()
            if first_poll is None:
                first_poll = before
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 0.1
            if all_checkpointed():
                break
    done = time.time()
    worker.source.close()
    engine.dispose()
    stats = worker.stats
    return {"polled": stats.polled, "accepted": stats.accepted, "bad": stats.bad,
            "late": stats.late, "checkpoints": stats.checkpoints, "windows": stats.windows,
            "started": started, "first_poll": first_poll or started, "last_record": last_record,
            "done": done, "peak_rss_mib": compute.peak_rss_mib()}


# -- parent -------------------------------------------------------------------------------
def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", *args],
                            stdout=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"child failed with {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def polled_any(outs: list[dict[str, Any]]) -> bool:
    return any(o["polled"] for o in outs)


def run_workers(client: str, bootstrap: str, db_url: str, topic: str, partitions: int,
                total: int, workers: int, label: str) -> dict[str, Any]:
    dataset = f"bench_{label}_{uuid.uuid4().hex[:6]}"
    group = f"bench-{dataset}"
    procs = [spawn("worker", client, bootstrap, db_url, topic, dataset, group,
                   str(i if workers > 1 else 1), str(partitions), str(total))
             for i in range(workers)]
    outs = [collect(p) for p in procs]
    first = min(o["first_poll"] for o in outs if o["polled"]) if polled_any(outs) else 0.0
    done = max(o["done"] for o in outs)
    consumed = max(o["last_record"] for o in outs)
    polled = sum(o["polled"] for o in outs)
    return {"records": total, "polled": polled, "seconds": done - first,
            "consume_seconds": consumed - first,
            "startup_seconds": first - min(o["started"] for o in outs),
            "accepted": sum(o["accepted"] for o in outs), "bad": sum(o["bad"] for o in outs),
            "late": sum(o["late"] for o in outs),
            "peak_rss_mib": max(o["peak_rss_mib"] for o in outs),
            "per_worker_polled": [o["polled"] for o in outs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--skip-whylogs", action="store_true")
    parser.add_argument("--kafka-python-rounds", type=int, default=1,
                        help="rounds that include kafka-python (slow: ~1 min per 1M records)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "bare":
            result: dict[str, Any] = child_bare(rest[0], rest[1], rest[2], int(rest[3]),
                                                int(rest[4]))
        else:
            result = child_worker(rest[0], rest[1], rest[2], rest[3], rest[4], rest[5],
                                  int(rest[6]), int(rest[7]), int(rest[8]))
        print(json.dumps(result))
        return

    bootstrap = os.environ.get("DQPULSE_KAFKA_BOOTSTRAP", DEFAULT_KAFKA)
    admin_url = os.environ.get("DQPULSE_DATABASE_URL", DEFAULT_PG)
    data = args.data or Path(tempfile.gettempdir()) / f"dqpulse-bench-{args.records}.ndjson"
    if not data.exists():
        print(f"generating {args.records:,} records -> {data}", file=sys.stderr)
        compute.generate(data, args.records)
    values = compute.read_values(data)
    total = len(values)
    run_id = uuid.uuid4().hex[:8]
    topic1, topic4 = f"bench-e2e-{run_id}-p1", f"bench-e2e-{run_id}-p4"
    create_topic(bootstrap, topic1, 1)
    create_topic(bootstrap, topic4, 4)
    db_url = create_database(admin_url)
    try:
        produced1 = produce(bootstrap, topic1, values, 1)
        produced4 = produce(bootstrap, topic4, values, 4)
        del values
        print(f"data: {total:,} records, {data.stat().st_size / total:.0f} bytes/record; "
              f"produced in {produced1:.1f} s (1 partition) and {produced4:.1f} s (4); "
              f"cpu count {os.cpu_count()}; poll batches of {POLL}")
        clients = ["confluent"] + (["kafka-python"] if args.kafka_python_rounds else [])
        runs: dict[str, list[dict[str, Any]]] = {}
        for round_ in range(args.repeat):
            for client in clients:
                if client == "kafka-python" and round_ >= args.kafka_python_rounds:
                    continue
                runs.setdefault(f"bare {client}", []).append(
                    collect(spawn("bare", client, bootstrap, topic1, "1", str(total))))
                runs.setdefault(f"worker {client}", []).append(
                    run_workers(client, bootstrap, db_url, topic1, 1, total, 1,
                                f"{client.replace('-', '')}{round_}"))
            runs.setdefault("worker confluent, 4 partitions", []).append(
                run_workers("confluent", bootstrap, db_url, topic4, 4, total, 1, f"s1{round_}"))
            runs.setdefault("2 workers confluent, 4 partitions", []).append(
                run_workers("confluent", bootstrap, db_url, topic4, 4, total, 2, f"s2{round_}"))
        why = None
        if not args.skip_whylogs:
            python = compute.ensure_whylogs()
            if python:
                why = compute.run_child(python, "whylogs", str(data))
    finally:
        drop_database(admin_url, db_url)
        delete_topics(bootstrap, [topic1, topic4])

    def rate(result: dict[str, Any]) -> float:
        return float(result["records"] / result["seconds"])

    def median(name: str) -> dict[str, Any]:
        return sorted(runs[name], key=rate)[len(runs[name]) // 2]

    print(f"\n{'path (median of ' + str(args.repeat) + ')':46s} {'rec/s':>10s} "
          f"{'consumed/s':>11s} {'peak RSS MiB':>13s}  runs (rec/s)")
    for name, results in runs.items():
        middle = median(name)
        consumed = (f"{middle['records'] / middle['consume_seconds']:11,.0f}"
                    if "consume_seconds" in middle else f"{'':11s}")
        every = ", ".join(f"{rate(r):,.0f}" for r in results)
        print(f"{name:46s} {rate(middle):10,.0f} {consumed} {middle['peak_rss_mib']:13.0f}  "
              f"{every}")
    for name, results in runs.items():
        if name.startswith(("worker", "2 workers")):
            middle = median(name)
            print(f"  {name}: accepted {middle['accepted']:,}, bad {middle['bad']}, "
                  f"late {middle['late']}, setup before the first poll "
                  f"{middle['startup_seconds']:.1f} s, "
                  f"per worker polled {middle['per_worker_polled']}")
    for client in clients:
        ratios = sorted(rate(w) / rate(b) for b, w in
                        zip(runs[f"bare {client}"], runs[f"worker {client}"], strict=True))
        print(f"worker / bare consume+loads ({client}): per round "
              f"{', '.join(f'{r:.2f}' for r in ratios)}")
    scaling = sorted(rate(two) / rate(one) for one, two in
                     zip(runs["worker confluent, 4 partitions"],
                         runs["2 workers confluent, 4 partitions"], strict=True))
    print(f"scaling 1 -> 2 worker processes (4 partitions), per round: "
          f"{', '.join(f'{r:.2f}x' for r in scaling)}")
    if len(clients) == 2:
        faster = sorted(rate(c) / rate(k) for c, k in
                        zip(runs["worker confluent"], runs["worker kafka-python"], strict=False))
        print(f"worker confluent / worker kafka-python, per round: "
              f"{', '.join(f'{r:.2f}x' for r in faster)}")
    if why is not None:
        why_rate = why["records"] / why["seconds"]
        only = why["profile_only_records"] / why["profile_only_seconds"]
        print(f"whylogs 1.6.4 (from the file): parse+flatten+DataFrame+profile {why_rate:,.0f} "
              f"rec/s, profiling alone {only:,.0f} rec/s, peak RSS {why['peak_rss_mib']:.0f} MiB")
        dq = rate(median("worker confluent"))
        print(f"worker confluent / whylogs: {dq / why_rate:.1f}x vs parse+...+profile, "
              f"{dq / only:.1f}x vs profiling alone; target end to end >= 150,000 rec/s")


if __name__ == "__main__":
    main()
