"""Silent topics and bad input on the real local Kafka and Postgres."""

from __future__ import annotations

import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client import CollectorRegistry
from sqlalchemy import delete, insert, select

from dqpulse.config import Settings
from dqpulse.doctor import window_checks
from dqpulse.finalize.scoring import default_hooks
from dqpulse.ingest import IngestWorker
from dqpulse.metrics import WindowState
from dqpulse.spec import parse_spec
from dqpulse.store import checkpoints
from dqpulse.store import metrics as metric_store
from dqpulse.store.db import make_engine
from dqpulse.store.tables import metric_points, window_partials
from dqpulse.telemetry import Telemetry
from dqpulse.utc import iso
from tests.integration.helpers import WorkerThread, json_bytes, produce, wait_until
from tests.integration.test_cli import _dqpulse
from workers.ingest import make_source

pytestmark = pytest.mark.integration


CLIENTS = ["confluent", "kafka-python"]


def _worker(settings, spec_text, telemetry=None, *, scored=False):
    spec = parse_spec(spec_text)
    engine = make_engine(settings.database_url)
    source, dead_letter = make_source(settings)
    telemetry = telemetry or Telemetry(CollectorRegistry())
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, dead_letter=dead_letter, telemetry=telemetry,
                          hooks=default_hooks(spec, settings, telemetry) if scored else ())
    return worker, engine, spec


@pytest.mark.parametrize("client", CLIENTS)
def test_silent_topic_yields_zero_volume_windows_and_growing_staleness(
        client, fresh_db, make_topic, kafka_bootstrap):
    topic = make_topic("silent", partitions=2)
    window = 3.0
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.25, poll_timeout_s=0.1, kafka_client=client)
    worker, engine, _spec = _worker(settings, f"""
datasets:
  - {{name: pulse, topic: {topic}, event_time: ts, window: 3s, lateness: 0s}}
""")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    with WorkerThread(worker):
        end = time.time() + 4.0
        i = 0
        while time.time() < end:
            producer.produce(topic, json_bytes({"ts": time.time(), "i": i}), partition=i % 2)
            producer.poll(0)
            i += 1
            time.sleep(0.01)
        assert producer.flush(10) == 0
        stopped_at = time.time()

        def zero_windows(n: int):
            with engine.connect() as conn:
                points = metric_store.get_points(conn, dataset="pulse", metric="volume.records")
            return [p for p in points if p["value"] == 0 and p["window_start"] >= stopped_at - 0.01]

        wait_until(lambda: len(zero_windows(1)) >= 1, 2 * window + 2.0,
                   message="a zero-volume window within two window lengths of the silence")
        first_zero_after = time.time() - stopped_at
        wait_until(lambda: len(zero_windows(3)) >= 3, 6 * window, message="three zero windows")
    assert first_zero_after <= 2 * window + 2.0
    with engine.connect() as conn:
        staleness = metric_store.get_points(conn, dataset="pulse",
                                            metric="freshness.seconds_since_last_record")
        volume = metric_store.get_points(conn, dataset="pulse", metric="volume.records")
    assert sum(p["value"] for p in volume) == i  # every record produced before the silence
    silent = [p["value"] for p in staleness if p["window_start"] >= stopped_at - 0.01]
    assert len(silent) >= 3
    assert all(b > a for a, b in zip(silent, silent[1:], strict=False)), silent
    assert silent[-1] >= 2 * window
    engine.dispose()


@pytest.mark.parametrize("client", CLIENTS)
def test_bad_messages_are_counted_by_reason_dead_lettered_and_valid_ones_all_count(
        client, fresh_db, make_topic, kafka_bootstrap):
    topic = make_topic("mixed", partitions=3)
    dlq = make_topic("mixed-dlq", partitions=1)
    base = time.time() - 600
    valid, bad = [], []
    expected_reasons: Counter[str] = Counter()
    for i in range(30_000):
        valid.append(json_bytes({"ts": base + i * 0.01, "amount": float(i), "id": i}))
    for i in range(10_000):
        kind = i % 5
        if kind == 0:
            bad.append(b"{not json at all")
            expected_reasons["invalid_json"] += 1
        elif kind == 1:
            full = json_bytes({"ts": base + 1, "amount": 1.0, "id": -i})
            bad.append(full[: len(full) // 2])
            expected_reasons["truncated"] += 1
        elif kind == 2:
            bad.append(b"[1, 2, 3]")
            expected_reasons["not_an_object"] += 1
        elif kind == 3:
            bad.append(json_bytes({"ts": base + 2, "pad": "x" * 20_000}))
            expected_reasons["oversized"] += 1
        else:
            bad.append(b"\"just a string\"")
            expected_reasons["not_an_object"] += 1
    messages, vi, bi = [], 0, 0  # interleave: every 4th message is bad
    for i in range(40_000):
        if i % 4 == 3 and bi < len(bad):
            messages.append(bad[bi])
            bi += 1
        else:
            messages.append(valid[vi])
            vi += 1
    assert vi == 30_000 and bi == 10_000
    produce(kafka_bootstrap, topic, [(i % 3, m) for i, m in enumerate(messages)])

    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.5, dead_letter_topic=dlq,
                        max_message_bytes=10_000, kafka_client=client)
    telemetry = Telemetry(CollectorRegistry())
    worker, engine, _spec = _worker(settings, f"""
datasets:
  - {{name: mixed, topic: {topic}, event_time: ts, window: 1m, lateness: 0s}}
""", telemetry)
    with WorkerThread(worker):
        wait_until(lambda: worker.stats.polled >= 40_000, 90, message="all messages polled")
        wait_until(lambda: worker.finalize_ready() >= 0 and _volume(engine) == 30_000, 60,
                   message="all valid records counted")
    assert dict(worker.stats.by_reason) == dict(expected_reasons)
    assert worker.stats.bad == 10_000
    counted = {
        s.labels["reason"]: s.value
        for metric in telemetry.registry.collect() if metric.name == "dqpulse_decode_errors"
        for s in metric.samples if s.name.endswith("_total")}
    assert counted == {k: float(v) for k, v in expected_reasons.items()}

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"check-{dlq}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([dlq])
    dead: Counter[str] = Counter()
    deadline = time.time() + 60
    while sum(dead.values()) < 10_000 and time.time() < deadline:
        for msg in consumer.consume(1000, 1.0):
            if msg.error() is None:
                dead[dict(msg.headers())["dqpulse.reason"].decode()] += 1
    consumer.close()
    assert dead == expected_reasons
    engine.dispose()


def test_nul_characters_overflowing_numbers_and_absurd_event_times_finalize_every_window(
        fresh_db, make_topic, kafka_bootstrap):
    """Each of these once stopped a data set for good, its windows retried for ever: a
    NUL in a key (PostgreSQL text cannot hold it), a number whose square overflows (its
    window's partials could not be merged), an event time of -1e300 (a window of the
    year -3e283), a key longer than a stored field. These stopped the worker itself, and
    again after each restart: a JSON null first in a batch (SIGSEGV in Arrow's reader),
    a path spelled two ways, a key "", a record nested 1,000 or 2,000 levels deep. Now
    every record counts (the nulls as not an object, 2,000 levels as invalid JSON) and
    every window is written."""
    topic = make_topic("odd", partitions=2)
    base = time.time() - 600
    messages = []
    for i in range(2_000):
        record = {"ts": base + i * 0.1, "amount": float(i)}
        if i % 100 == 7:
            messages.append(json_bytes(record)[:-1] + b', "a\\u0000b": "x\\u0000y"}')
            continue
        if i % 100 == 17:
            record["amount"] = 1e160
        if i % 100 == 27:
            record["ts"] = -1e300
        if i % 100 == 37:  # keys and label values longer than a stored field name
            record["k" * 600] = 1.0
            record["nested"] = {"x" * 300: {"y" * 300: "z"}}
            record["label"] = "v" * 700
        if i == 0 or i % 100 == 47:  # JSON null: first in its partition, then later ones
            messages.append(b"null")
            continue
        if i % 100 == 57:  # one path spelled two ways, and a key that is ""
            record.update({"c.d": 1, "c": {"d": 2}, "": 3})
        if i % 100 in (67, 77):  # nested deeper than Python's recursion limit
            depth = 2_000 if i % 100 == 67 else 1_000
            messages.append(json_bytes(record)[:-1] + b', "deep": '
                            + b'{"a": ' * depth + b"1" + b"}" * depth + b"}")
            continue
        messages.append(json_bytes(record))
    produce(kafka_bootstrap, topic, [(i % 2, m) for i, m in enumerate(messages)])
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.5)
    telemetry = Telemetry(CollectorRegistry())
    worker, engine, _spec = _worker(settings, f"""
datasets:
  - {{name: odd, topic: {topic}, event_time: ts, window: 1m, lateness: 0s, label: label}}
""", telemetry, scored=True)
    with WorkerThread(worker):
        wait_until(lambda: worker.stats.polled >= 2_000, 90, message="all messages polled")
        wait_until(lambda: worker.finalize_ready() >= 0 and _volume(engine, "odd") == 1_959,
                   60, message="every record counted in a written window")
    # the JSON nulls (not an object) and the 2,000-deep records (invalid JSON: deeper than
    # orjson reads, whatever batch they are in)
    assert worker.stats.bad == 41
    with engine.connect() as conn:
        fields = set(conn.execute(select(metric_points.c.field).where(
            metric_points.c.dataset == "odd").distinct()).scalars())
        starts = {p["window_start"] for p in metric_store.get_points(
            conn, dataset="odd", metric="volume.records", limit=10_000)}
    assert "a\ufffdb" in fields
    assert min(starts) >= base - 120  # the -1e300 event times counted at their Kafka time
    # names longer than a stored field (500): cut with a digest of the whole name
    long_names = sorted(f for f in fields if "\u2026" in f)
    assert [len(f) for f in long_names] == [493] * len(long_names) and len(long_names) >= 3
    assert any(f.startswith("kkkk") for f in long_names)
    assert any(f.startswith("label=vvvv") for f in long_names)
    assert any(f.startswith("nested.xxxx") for f in long_names)
    assert any(f.startswith("deep.a.a.a") for f in long_names)
    assert {"c.d", "(empty)"} <= fields
    assert telemetry.registry.get_sample_value("dqpulse_finalize_failures_total",
                                               {"dataset": "odd"}) is None
    engine.dispose()


class FailingHook:
    """A window hook: at ``alerting`` it raises while the window is alerted (a bug in the
    alerting step), at ``always`` on every call (a bug in any hook), at ``once`` on the
    first call only (a fluke)."""

    def __init__(self, *, alerting: float, always: float, once: float) -> None:
        self.alerting, self.always, self.once = alerting, always, once
        self.calls: Counter[float] = Counter()

    def __call__(self, _conn, _dataset, window) -> None:
        at = window.window_start
        self.calls[at] += 1
        if (at == self.always or (at == self.alerting and window.alerting)
                or (at == self.once and self.calls[at] == 1)):
            raise ValueError(f"injected failure at {at}")


def test_a_window_that_fails_every_try_is_finalized_degraded_and_the_rest_go_on(
        fresh_db, make_topic, kafka_bootstrap, tmp_path):
    """A window whose finalization raises the same error on every try used to stop its
    data set for good (retried for ever, every later window waiting behind it). Now a
    fluke passes on the next try; after 3 tries a window whose alerting fails is scored
    without alerting, one whose hooks always fail is written unscored, and one whose
    partials cannot be read is skipped (they stay in window_partials); every other window
    is scored as usual."""
    topic = make_topic("poison", partitions=2)
    base = (time.time() - 900) // 60 * 60
    messages = [(i % 2, json_bytes({"ts": base + i * 0.5, "amount": float(i % 17)}))
                for i in range(1_200)]  # 10 windows of 1 minute, 120 records each
    produce(kafka_bootstrap, topic, messages)
    alerting, once, always, corrupt = base + 120, base + 240, base + 360, base + 420
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.5)
    telemetry = Telemetry(CollectorRegistry())
    spec = parse_spec(f"""
datasets:
  - {{name: poison, topic: {topic}, event_time: ts, window: 1m, lateness: 0s}}
""")
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:  # a partial no reader can merge (a partition beyond 2)
        conn.execute(insert(window_partials).values(dataset="poison", partition=99,
                                                    window_start=corrupt, state=b"\x00junk"))
    hook = FailingHook(alerting=alerting, always=always, once=once)
    source, dead_letter = make_source(settings)
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, dead_letter=dead_letter, telemetry=telemetry,
                          hooks=[*default_hooks(spec, settings, telemetry), hook])

    def finalized() -> dict[float, dict]:
        with engine.connect() as conn:
            return {p["window_start"]: p for p in metric_store.get_points(
                conn, dataset="poison", metric="volume.records", limit=10_000)}

    with WorkerThread(worker):
        wait_until(lambda: worker.stats.polled >= 1_200, 90, message="all messages polled")
        wait_until(lambda: base + 540 in finalized(), 90,
                   message="the windows after the failing ones finalized")
    points = finalized()
    starts = [base + 60 * k for k in range(10)]
    assert corrupt not in points  # skipped
    assert all(points[s]["value"] == 120 for s in starts if s != corrupt)
    assert points[always]["score"] is None  # written without its hooks: unscored
    assert points[alerting]["score"] is not None  # scored, without alerting
    assert all(points[s]["score"] is not None for s in starts if s not in (always, corrupt))
    # full 3 times, then once without alerting (passes); full 3 times, unalerted, unscored
    assert (hook.calls[alerting], hook.calls[always], hook.calls[once]) == (4, 4, 2)
    with engine.connect() as conn:  # the skipped window's partials, for inspection
        left = conn.execute(select(window_partials.c.partition).where(
            window_partials.c.dataset == "poison")).scalars().all()
    assert sorted(left) == [0, 1, 99]
    with engine.connect() as conn:
        assert checkpoints.skipped_windows(conn) == {"poison": [corrupt]}
    # `dqpulse doctor`'s line
    [windows] = [c for c in window_checks(engine, None, 5.0) if c.name == "windows"]
    assert not windows.ok and f"poison: 1 ({iso(corrupt)})" in windows.detail

    def sample(name: str, **labels: str) -> float | None:
        return telemetry.registry.get_sample_value(name, {"dataset": "poison", **labels})

    for outcome in ("unalerted", "unscored", "skipped"):
        assert sample("dqpulse_windows_degraded_total", outcome=outcome) == 1, outcome
    # 3 tries of `alerting`, 1 of `once`, 4 of `always`, 5 of `corrupt`
    assert sample("dqpulse_finalize_failures_total") == 13

    # once the cause is gone, `dqpulse windows refinalize` writes the skipped window
    # (unscored); while it is not, the window stays skipped with its partials
    model = tmp_path / "dqpulse.yaml"
    model.write_text(f"datasets:\n  - {{name: poison, topic: {topic}, event_time: ts, "
                     "window: 1m, lateness: 0s}\n")
    env = {"DQPULSE_DATABASE_URL": fresh_db}
    again = _dqpulse("windows", "refinalize", "-f", str(model), env=env)
    assert again.returncode == 1, again.stderr
    assert f"poison {iso(corrupt)}: still skipped: CorruptState" in again.stdout
    with engine.begin() as conn:
        conn.execute(delete(window_partials).where(window_partials.c.partition == 99))
    fixed = _dqpulse("windows", "refinalize", "--dataset", "poison", "--window",
                     iso(corrupt), "-f", str(model), env=env)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.startswith(f"poison {iso(corrupt)}: written, 120 records,")
    points = finalized()
    assert points[corrupt]["value"] == 120 and points[corrupt]["score"] is None
    with engine.connect() as conn:
        assert checkpoints.skipped_windows(conn) == {}
    [windows] = [c for c in window_checks(engine, None, 5.0) if c.name == "windows"]
    assert windows.ok
    nothing = _dqpulse("windows", "refinalize", "-f", str(model), env=env)
    assert (nothing.returncode, nothing.stdout.strip()) == (0, "no skipped window")
    engine.dispose()


def _volume(engine, dataset: str = "mixed") -> int:
    with engine.connect() as conn:
        points = metric_store.get_points(conn, dataset=dataset, metric="volume.records")
    return int(sum(p["value"] or 0 for p in points))


@pytest.mark.parametrize("decode_ahead", [False, True])
def test_a_record_whose_window_update_raises_is_dead_lettered_and_the_rest_count_once(
        decode_ahead, fresh_db, make_topic, kafka_bootstrap, monkeypatch):
    """A bug in a metric family met by one record used to stop the worker, and again
    after every restart (a crash loop on one record), with the partition's state half
    updated. Now the partition is reloaded from its checkpoint and replayed, the batch
    that raised is counted without that record (dead-lettered as ``unprocessable``), and
    every other record counts exactly once: each window's volume and mean are those of
    its valid records. The failure is injected after the update has counted the batch
    (the state really is half updated); Kafka and Postgres are real. A second failure
    comes after checkpoints, so the reload goes back to a stored checkpoint."""
    real = WindowState.update

    def update(self, batch):
        real(self, batch)
        if (batch.frame["amount"] < 0).any():
            raise ZeroDivisionError("a bug met by this record")

    monkeypatch.setattr(WindowState, "update", update)
    topic = make_topic("raising", partitions=2)
    dlq = make_topic("raising-dlq", partitions=1)
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.3, dead_letter_topic=dlq,
                        decode_ahead=decode_ahead, poll_max_records=100,
                        coalesce_max_wait_s=0.5)
    telemetry = Telemetry(CollectorRegistry())
    worker, engine, _spec = _worker(settings, f"""
datasets:
  - {{name: raising, topic: {topic}, event_time: ts, window: 5s, lateness: 0s}}
""", telemetry)
    valid: list[tuple[float, float]] = []  # (event time, amount) of every valid record

    def stage(times: list[float], poisoned: dict[int, int]) -> list[tuple[int, bytes]]:
        stream = []
        for i, ts in enumerate(times):
            if i in poisoned:  # before record i, in the partition given
                stream.append((poisoned[i], json_bytes({"ts": ts, "amount": -1e6})))
            valid.append((ts, float(i % 17)))
            stream.append((i % 2, json_bytes({"ts": ts, "amount": float(i % 17)})))
        return stream

    now = time.time()  # the past minute (a backlog), then, after checkpoints, the next
    # seconds: not late although the idle partitions' watermarks moved on
    produce(kafka_bootstrap, topic, stage([now - 60 + i * 0.15 for i in range(400)], {150: 0}))
    with WorkerThread(worker):
        wait_until(lambda: worker.stats.accepted >= 400 and worker.stats.checkpoints >= 2,
                   60, message="the backlog counted and checkpointed")
        later = time.time() + 5
        produce(kafka_bootstrap, topic, stage([later + i * 0.02 for i in range(400)],
                                              {120: 1, 301: 0}))
        wait_until(lambda: worker.finalize_ready() >= 0
                   and _volume(engine, "raising") == 800, 60,
                   message="every valid record counted")
        time.sleep(1.0)  # nothing more arrives: no double count either
        worker.finalize_ready()
    expected: dict[float, list[float]] = {}
    for ts, amount in valid:
        expected.setdefault(ts // 5 * 5, []).append(amount)
    with engine.connect() as conn:
        volume = {p["window_start"]: p["value"] for p in metric_store.get_points(
            conn, dataset="raising", metric="volume.records", limit=1_000) if p["value"]}
        means = {p["window_start"]: p["value"] for p in metric_store.get_points(
            conn, dataset="raising", metric="distribution.mean", field="amount",
            limit=1_000) if p["value"] is not None}
    assert volume == {start: len(amounts) for start, amounts in expected.items()}
    assert means == pytest.approx({start: sum(amounts) / len(amounts)
                                   for start, amounts in expected.items()}, rel=1e-9)
    assert worker.stats.by_reason == {"unprocessable": 3}
    assert worker.stats.batch_failures >= 2  # it went on after the first
    registry = telemetry.registry
    assert registry.get_sample_value("dqpulse_decode_errors_total", {
        "dataset": "raising", "reason": "unprocessable"}) == 3
    assert registry.get_sample_value("dqpulse_ingest_batch_failures_total",
                                     {"dataset": "raising"}) == worker.stats.batch_failures
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"check-{dlq}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([dlq])
    dead: list[tuple[str, bytes]] = []
    deadline = time.time() + 30
    while len(dead) < 3 and time.time() < deadline:
        for msg in consumer.consume(10, 1.0):
            if msg.error() is None:
                headers = dict(msg.headers())
                dead.append((headers["dqpulse.reason"].decode(), msg.value()))
                assert b"ZeroDivisionError" in headers["dqpulse.detail"]
    consumer.close()
    assert len(dead) == 3 and {reason for reason, _ in dead} == {"unprocessable"}
    assert all(orjson.loads(value)["amount"] == -1e6 for _, value in dead)
    engine.dispose()


def test_a_raising_record_of_one_dataset_leaves_another_on_its_topic_counted_once(
        fresh_db, make_topic, kafka_bootstrap, monkeypatch):
    """Two datasets read one topic; a bug met by some records raises in one of them only.
    Its partition is reloaded and the consumer sent back to its checkpoint, which is
    behind the other dataset's position: the other skips what it counted already, so it
    counts every record (the poisoned ones included: they are valid for it) exactly once,
    while the first counts all but those."""
    real = WindowState.update

    def update(self, batch):
        real(self, batch)
        if self.spec.name == "alpha" and (batch.frame["amount"] < 0).any():
            raise ZeroDivisionError("a bug met by this record in alpha")

    monkeypatch.setattr(WindowState, "update", update)
    topic = make_topic("shared", partitions=2)
    now = time.time()
    stream = []
    for i in range(900):
        amount = -1.0 if i in (100, 555, 556) else float(i % 13)
        stream.append((i % 2, json_bytes({"ts": now - 90 + i * 0.1, "amount": amount})))
    produce(kafka_bootstrap, topic, stream)
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.3, poll_max_records=64,
                        coalesce_max_wait_s=0.2)
    worker, engine, _spec = _worker(settings, f"""
datasets:
  - {{name: alpha, topic: {topic}, event_time: ts, window: 10s, lateness: 0s}}
  - {{name: beta, topic: {topic}, event_time: ts, window: 10s, lateness: 0s}}
""")
    with WorkerThread(worker):
        wait_until(lambda: worker.finalize_ready() >= 0
                   and _volume(engine, "alpha") == 897 and _volume(engine, "beta") == 900,
                   90, message="alpha without the 3 raising records, beta with all 900")
        time.sleep(1.0)
        worker.finalize_ready()
    assert (_volume(engine, "alpha"), _volume(engine, "beta")) == (897, 900)
    assert worker.stats.by_reason == {"unprocessable": 3}
    assert worker.stats.batch_failures >= 1
    engine.dispose()


def test_partitions_skip_moves_the_checkpoint_past_records_and_dead_letters_them(
        fresh_db, make_topic, kafka_bootstrap, tmp_path):
    """A record that kills its worker (native code: nothing to catch) is read again after
    every restart; `dqpulse partitions skip` sends the records from the checkpoint through
    the given offset to the dead-letter topic and moves the checkpoint past them. The
    worker then reads on after them: each other record counts once."""
    topic, dlq = make_topic("skipme", partitions=1), make_topic("skipme-dlq", partitions=1)
    base = (time.time() - 900) // 60 * 60
    records = [json_bytes({"ts": base + i, "amount": float(i)}) for i in range(15)]
    produce(kafka_bootstrap, topic, [(0, r) for r in records[:5]])
    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{topic}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.3, dead_letter_topic=dlq)
    text = f"datasets:\n  - {{name: skipme, topic: {topic}, event_time: ts, window: 1m, " \
           "lateness: 0s}\n"
    model = tmp_path / "dqpulse.yaml"
    model.write_text(text)

    def offset() -> int | None:
        with engine.connect() as conn:
            found = checkpoints.get(conn, dataset="skipme", partition=0)
        return None if found is None else found.next_offset

    # no idle tick on this run: the window stays open for the records after the skip
    worker, engine, _ = _worker(settings.model_copy(update={"idle_partition_timeout_s": 600.0}),
                                text)
    with WorkerThread(worker):
        wait_until(lambda: offset() == 5, 60, message="the first 5 records checkpointed")
    produce(kafka_bootstrap, topic, [(0, r) for r in records[5:]])  # 5..9 "crash" it

    env = {"DQPULSE_DATABASE_URL": fresh_db, "DQPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "DQPULSE_DEAD_LETTER_TOPIC": dlq}
    too_many = _dqpulse("partitions", "skip", "--dataset", "skipme", "--partition", "0",
                        "--through", "5000", "-f", str(model), env=env)
    assert too_many.returncode == 2 and "more than --max 1,000" in too_many.stderr
    done = _dqpulse("partitions", "skip", "--dataset", "skipme", "--partition", "0",
                    "--through", "9", "-f", str(model), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"skipme[0]: offsets 5..9 skipped (5 sent to {dlq}); "
                                  "the checkpoint reads on at 10"), done.stdout
    assert offset() == 10
    again = _dqpulse("partitions", "skip", "--dataset", "skipme", "--partition", "0",
                     "--through", "9", "-f", str(model), env=env)
    assert again.returncode == 2 and "at offset 10, past 9 already" in again.stderr
    unknown = _dqpulse("partitions", "skip", "--dataset", "nope", "--partition", "0",
                       "--through", "9", "-f", str(model), env=env)
    assert unknown.returncode == 2 and "dataset 'nope' is not in the model" in unknown.stderr

    worker, engine, _ = _worker(settings, text)
    with WorkerThread(worker):
        wait_until(lambda: offset() == 15, 60, message="the records after them read")
        wait_until(lambda: worker.finalize_ready() >= 0 and _volume(engine, "skipme") == 10,
                   60, message="the 10 records not skipped counted")
    with engine.connect() as conn:
        mean = metric_store.get_points(conn, dataset="skipme", metric="distribution.mean",
                                       field="amount")
    assert [p["value"] for p in mean] == [(sum(range(5)) + sum(range(10, 15))) / 10]

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"check-{dlq}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([dlq])
    dead: list[tuple[bytes, dict[str, bytes]]] = []
    deadline = time.time() + 30
    while len(dead) < 5 and time.time() < deadline:
        for msg in consumer.consume(10, 1.0):
            if msg.error() is None:
                dead.append((msg.value(), dict(msg.headers())))
    consumer.close()
    assert [value for value, _ in dead] == records[5:10]  # unchanged
    assert {h["dqpulse.reason"] for _, h in dead} == {b"skipped"}
    assert [h["dqpulse.source"] for _, h in dead] == [
        f"{topic}:0:{n}".encode() for n in range(5, 10)]
    engine.dispose()
