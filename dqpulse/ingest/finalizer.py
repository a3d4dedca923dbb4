"""An ingest worker's finalization, on its own thread beside the checkpoints.

Finalization reads only what checkpoints committed (window partials and watermarks,
under the dataset's advisory lock, exactly as another worker's finalization would), so a
checkpoint never waits for it and exactly-once does not depend on it. A pass first reads
every dataset's frontier in one query (:func:`~dqpulse.store.checkpoints.get_frontiers`)
and visits only the datasets with windows ready. The backlog (windows every partition has
passed, not finalized yet, over all datasets) is the gauge
``dqpulse_finalize_backlog_windows``, and it is bounded: above
``finalize_max_backlog_windows`` each poll of the worker first waits for the pass in
flight, so ingest slows to the pace of finalization instead of running ahead of it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from dqpulse.finalize import finalize_ready, windows_ready
from dqpulse.finalize.failures import WindowFailed, WindowFailures

if TYPE_CHECKING:  # typing only: the worker owns its finalizer
    from dqpulse.ingest.worker import IngestWorker

log = logging.getLogger(__name__)


class Finalizer:
    """Finalize passes of one :class:`~dqpulse.ingest.worker.IngestWorker`."""

    def __init__(self, worker: IngestWorker, *, stop: threading.Event) -> None:
        self.worker = worker
        self.stop = stop
        self.backlog = 0  # windows, at the last pass (the finalize thread writes it)
        self._thread: threading.Thread | None = None
        self._pass_done = threading.Event()
        self._next_pass_at = 0.0
        self._next_dataset = 0  # where the next pass starts (see finalize_ready)
        self._waits = 0
        self.failures = WindowFailures(max_attempts=worker.settings.finalize_max_attempts,
                                       telemetry=worker.telemetry)

    def due(self) -> None:
        """Start the finalize thread on the first call; above the backlog bound, wait for
        the pass in flight to end (consuming thread, every loop)."""
        if self._thread is None:
            # a daemon: a worker used without run() (tests) must not keep the process up
            self._thread = threading.Thread(target=self._loop, name="dqpulse-finalize",
                                            daemon=True)
            self._thread.start()
        bound = self.worker.settings.finalize_max_backlog_windows
        if self.backlog > bound:
            self._waits += 1
            if self._waits == 1:
                log.warning("finalize backlog of %d windows is over %d: ingest waits for "
                            "finalization", self.backlog, bound)
            self._pass_done.clear()
            # one pass, well inside Kafka's max.poll.interval.ms
            self._pass_done.wait(timeout=30.0)
        elif self._waits:
            log.info("finalize backlog down to %d windows: ingest goes on (it waited for "
                     "%d passes)", self.backlog, self._waits)
            self._waits = 0

    def _loop(self) -> None:
        """Pass after pass until the worker stops (finalize thread): driven by its own
        clock, not by the consuming loop, whose turns slow down with many partitions."""
        while not self.stop.is_set():
            try:
                self.run_pass()
            except Exception:  # noqa: BLE001 - finalization trouble must not stop it for good
                log.exception("finalize pass failed; the next one retries")
                self._next_pass_at = time.monotonic() + self.worker.settings.checkpoint_interval_s
            self._pass_done.set()
            self.stop.wait(max(0.0, self._next_pass_at - time.monotonic()))

    def run_pass(self) -> int:
        """One pass over the datasets with windows ready (finalize thread)."""
        worker = self.worker
        interval = worker.settings.checkpoint_interval_s
        try:
            ready = windows_ready(worker.engine, worker.datasets)
        except DBAPIError as exc:  # the checkpoints report the outage; retry later
            log.warning("finalize pass skipped: %s",
                        type(exc.orig).__name__ if exc.orig else exc)
            self._next_pass_at = time.monotonic() + 4 * interval
            return 0
        backlog = sum(ready.values())
        self._set_backlog(backlog)
        done = self.finalize_ready({name for name, n in ready.items() if n}) if backlog else 0
        self._set_backlog(max(0, backlog - done))
        # more ready and progress made: go on at once; else the next checkpoints (or the
        # worker holding a dataset's lock) must move first
        self._next_pass_at = time.monotonic() + (0.0 if 0 < done < backlog else interval / 4)
        if done:
            worker.health.progress()
        return done

    def _set_backlog(self, windows: int) -> None:
        self.backlog = windows
        self.worker.telemetry.finalize_backlog.set(windows)

    def finalize_ready(self, only: set[str] | None = None) -> int:
        """Ready windows (of the datasets named in ``only``, else all) for ~2 checkpoint
        intervals, on from where the last pass stopped, so that every dataset gets its turn
        (docs/scaling.md)."""
        worker = self.worker
        datasets = worker.datasets
        total, k = 0, self._next_dataset % max(len(datasets), 1)
        budget = time.monotonic() + 2 * worker.settings.checkpoint_interval_s
        for i, dataset in enumerate(datasets[k:] + datasets[:k]):
            if self.stop.is_set() or (i and time.monotonic() > budget):
                self._next_dataset = k + i  # (stopping: the next owner finalizes the rest)
                break
            if only is not None and dataset.name not in only:
                continue
            try:
                windows = finalize_ready(worker.engine, dataset, now=worker.clock(),
                                         hooks=worker.hooks, telemetry=worker.telemetry,
                                         should_stop=self.stop.is_set,
                                         failures=self.failures)
            except WindowFailed as exc:  # logged and counted; the next pass goes on
                self.failures.failed(exc)
                continue
            except Exception:  # noqa: BLE001 - scoring trouble must not stop ingest
                log.exception("finalizing %s failed; will retry", dataset.name)
                continue
            total += len(windows)
        worker.stats.windows += total
        return total

    def shutdown(self) -> None:
        """Wait for the pass in flight (it stops after its current dataset once the worker
        is stopping)."""
        self.stop.set()  # (already set when the worker stops; not after a crash of its loop)
        if self._thread is not None:
            self._thread.join()
