"""A worker's finalize pass is bounded in time and the next pass goes on where it stopped:
the next checkpoint waits for the pass, so with a fleet of data sets a pass over all of
them held checkpoints back for minutes (bench/fleet.py, docs/scaling.md)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import dqpulse.ingest.worker as worker_module


def test_a_pass_stops_after_two_checkpoint_intervals_and_the_next_goes_on(monkeypatch):
    clock = [0.0]
    finalized: list[str] = []

    def finalize(_engine: Any, dataset: Any, **_kwargs: Any) -> list[object]:
        finalized.append(dataset.name)
        clock[0] += 3.0  # each data set's windows take 3 s
        return [object()]

    monkeypatch.setattr(worker_module, "finalize_ready", finalize)
    monkeypatch.setattr(worker_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    worker: Any = object.__new__(worker_module.IngestWorker)
    worker.datasets = [SimpleNamespace(name=name) for name in "abcde"]
    worker.settings = SimpleNamespace(checkpoint_interval_s=2.0)  # budget 4 s
    worker._next_finalize, worker._stop = 0, threading.Event()
    worker.engine, worker.hooks, worker.telemetry = None, [], None
    worker.clock, worker.stats = (lambda: 0.0), SimpleNamespace(windows=0)

    assert [worker.finalize_ready() for _ in range(3)] == [2, 2, 2]
    assert finalized == ["a", "b", "c", "d", "e", "a"]  # every data set gets its turn
    assert worker.stats.windows == 6

    worker._stop.set()
    assert worker.finalize_ready() == 0  # stopping: nothing more
