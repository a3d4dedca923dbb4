"""Helpers for integration tests: produce to the real broker, run a worker in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
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
