"""Helpers for integration tests: produce to the real broker, run a worker in a thread."""

from __future__ import annotations

import math
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from confluent_kafka import Producer


def produce(bootstrap: str, topic: str, records: Iterable[tuple[int | None, bytes]],
            *, key: Callable[[int], bytes] | None = None) -> int:
    """Produce (partition, value) pairs and wait until the broker has all of them."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "enable.idempotence": True, "message.max.bytes": 8_388_608})
    errors: list[Any] = []
    count = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    for index, (partition, value) in enumerate(records):
        kwargs: dict[str, Any] = {"value": value, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if key is not None:
            kwargs["key"] = key(index)
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0, f"{remaining} messages not delivered"
    assert not errors, errors[:3]
    return count


def create_database(admin_url: str, prefix: str = "dqpulse_t", *, migrate: bool = True) -> str:
    """A new, empty Postgres database at ``alembic upgrade head`` (``migrate=False``: with
    no schema at all); returns its URL."""
    from sqlalchemy import create_engine, text

    from dqpulse.store.db import upgrade_to_head

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    if migrate:
        upgrade_to_head(url)
    return url


def drop_database(admin_url: str, url: str) -> None:
    """Drop a database made by :func:`create_database`, ending its open connections."""
    from sqlalchemy import create_engine, text

    name = url.rsplit("/", 1)[1]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = :n"), {"n": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@contextmanager
def throwaway_database(admin_url: str, prefix: str = "dqpulse_t") -> Iterator[str]:
    url = create_database(admin_url, prefix)
    try:
        yield url
    finally:
        drop_database(admin_url, url)


def set_connections(admin_url: str, database: str, allowed: bool) -> None:
    """Let ``database`` take connections or not; refusing also ends the open ones (an
    outage of that database alone: the server and other tests' databases go on)."""
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": database})
    admin.dispose()


def stop_processes(processes: Iterable[subprocess.Popen[Any]], timeout_s: float = 20) -> None:
    """SIGTERM every process (a graceful stop: final checkpoint), SIGKILL the stragglers."""
    processes = list(processes)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()


def json_bytes(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.25,
               message: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")


class WorkerThread:
    """Run an IngestWorker's loop in a background thread until stopped."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc

    def __enter__(self) -> WorkerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.thread.join(30)
        if self.error is not None:
            raise self.error


class PacedProducer:
    """A live stream for a running worker: ``rate`` records a second, event time now
    (``{"ts": ...}``), spread over ``partitions``, a batch every quarter second, counted
    per ``window`` (``produced``). ``topic`` may change while it runs (None: a pause)."""

    def __init__(self, bootstrap: str, topic: str | None, *, rate: int, window: float,
                 partitions: int = 2) -> None:
        self.bootstrap, self.rate, self.window = bootstrap, rate, window
        self.topic, self.partitions = topic, partitions
        self.produced: Counter[float] = Counter()
        self.failures: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PacedProducer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.stop()
        else:
            self.halt()  # the test failed already: no second failure over it

    def halt(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def stop(self) -> None:
        """Stop and wait until the broker has acknowledged every record."""
        self.halt()
        assert not self._thread.is_alive() and not self.failures, self.failures[:3]

    def _run(self) -> None:
        client = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5,
                           "enable.idempotence": True})

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                self.failures.append(err)

        step, start = 0.25, time.time()
        while not self._stop.is_set():
            while time.time() < start + step:
                time.sleep(0.02)
            topic, partitions = self.topic, self.partitions
            for i in range(int(self.rate * step) if topic else 0):
                ts = start + i / self.rate
                self.produced[math.floor(ts / self.window) * self.window] += 1
                client.produce(topic, json_bytes({"ts": ts}), partition=i % partitions,
                               on_delivery=delivered)
            client.poll(0)
            start += step
        if client.flush(30) != 0:
            self.failures.append("records not acknowledged")


def volumes(engine: Any, dataset: str) -> dict[float, float]:
    """``{window_start: volume.records}`` of a dataset's finalized windows that counted
    something (windows after a stream stopped close empty)."""
    from sqlalchemy import select

    from dqpulse.store.tables import metric_points

    with engine.connect() as conn:
        rows = conn.execute(select(metric_points.c.window_start, metric_points.c.value)
                            .where(metric_points.c.dataset == dataset,
                                   metric_points.c.metric == "volume.records",
                                   metric_points.c.field == "")).all()
    return {float(r.window_start): float(r.value) for r in rows if r.value}
