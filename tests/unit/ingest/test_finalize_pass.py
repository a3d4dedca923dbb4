"""A worker's finalize pass runs beside its checkpoints, is bounded in time, goes on where
the last one stopped, visits only the datasets with windows ready, and holds ingest back
only when its backlog is over the bound (bench/fleet.py, docs/scaling.md)."""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace
from typing import Any

from sqlalchemy.exc import OperationalError

import dqpulse.ingest.finalizer as finalizer_module
from dqpulse.ingest.finalizer import Finalizer
from dqpulse.store.checkpoints import FinalizeFrontier, ready_windows


def _worker(names: str, **settings: Any) -> Any:
    gauge = SimpleNamespace(value=None)
    gauge.set = lambda v: setattr(gauge, "value", v)
    return SimpleNamespace(
        datasets=[SimpleNamespace(name=name, window=10.0, lateness=2.0) for name in names],
        settings=SimpleNamespace(checkpoint_interval_s=2.0, finalize_max_backlog_windows=5,
                                 finalize_max_attempts=3,
                                 **settings),
        engine=None, hooks=[], clock=lambda: 0.0, stats=SimpleNamespace(windows=0),
        telemetry=SimpleNamespace(finalize_backlog=gauge),
        health=SimpleNamespace(progress=lambda: None))


def test_a_pass_stops_after_two_checkpoint_intervals_and_the_next_goes_on(monkeypatch):
    clock = [0.0]
    finalized: list[str] = []

    def finalize(_engine: Any, dataset: Any, **_kwargs: Any) -> list[object]:
        finalized.append(dataset.name)
        clock[0] += 3.0  # each data set's windows take 3 s
        return [object()]

    monkeypatch.setattr(finalizer_module, "finalize_ready", finalize)
    monkeypatch.setattr(finalizer_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    worker, stop = _worker("abcde"), threading.Event()
    finalizer = Finalizer(worker, stop=stop)  # budget 4 s

    assert [finalizer.finalize_ready() for _ in range(3)] == [2, 2, 2]
    assert finalized == ["a", "b", "c", "d", "e", "a"]  # every data set gets its turn
    assert worker.stats.windows == 6
    assert finalizer.finalize_ready({"c", "d"}) == 2  # only the named ones
    assert finalized[-2:] == ["c", "d"]

    stop.set()
    assert finalizer.finalize_ready() == 0  # stopping: nothing more
    finalizer.shutdown()


def test_ready_windows_counts_what_every_partition_has_passed():
    frontier = FinalizeFrontier(partition_count=3, partitions_seen=3, min_watermark=52.0,
                                next_window=10.0)
    assert ready_windows(frontier, window=10.0, lateness=2.0) == 4  # [10, 50) are ready
    assert ready_windows(frontier, window=10.0, lateness=3.0) == 3
    unseen = FinalizeFrontier(3, 2, 52.0, 10.0)  # a partition never checkpointed
    assert ready_windows(unseen, window=10.0, lateness=2.0) == 0
    assert ready_windows(None, window=10.0, lateness=2.0) == 0
    assert ready_windows(FinalizeFrontier(3, 3, 5.0, 10.0), window=10.0, lateness=2.0) == 0
    # a partition checkpointed before its first record (-inf): nothing ready, no error
    # (it was NaN // window, and the ValueError failed every data set's finalize pass)
    assert ready_windows(FinalizeFrontier(3, 3, -math.inf, 10.0), window=10.0,
                         lateness=2.0) == 0


def test_ingest_waits_for_the_pass_in_flight_only_above_the_backlog_bound(monkeypatch):
    release = threading.Event()
    passes: list[int] = []

    def slow_pass(self: Finalizer) -> int:
        passes.append(1)
        release.wait(5)
        return 1

    monkeypatch.setattr(Finalizer, "run_pass", slow_pass)
    finalizer = Finalizer(_worker("a"), stop=threading.Event())
    finalizer.due()  # starts the finalize thread, which runs passes on its own
    finalizer.backlog = 5  # at the bound: the loop goes on without waiting
    finalizer.due()
    assert not release.is_set()

    finalizer.backlog = 6  # over it: the loop waits for the pass in flight to end
    threading.Timer(0.2, release.set).start()
    finalizer.due()
    assert release.is_set() and len(passes) >= 1
    finalizer.shutdown()  # stops the thread after its pass


def test_a_pass_without_the_database_backs_off():
    class Down:
        def connect(self) -> Any:
            raise OperationalError("select", {}, Exception("down"))

    worker = _worker("a")
    worker.engine = Down()
    finalizer = Finalizer(worker, stop=threading.Event())
    assert finalizer.run_pass() == 0
    assert finalizer._next_pass_at > 0  # not at once
    finalizer.shutdown()
