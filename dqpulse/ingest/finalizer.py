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
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from dqpulse.finalize import finalize_ready
from dqpulse.store import checkpoints as checkpoint_store

if TYPE_CHECKING:  # typing only: the worker owns its finalizer
    from dqpulse.ingest.worker import IngestWorker

log = logging.getLogger(__name__)


class Finalizer:
    """Finalize passes of one :class:`~dqpulse.ingest.worker.IngestWorker`."""

    def __init__(self, worker: IngestWorker, *, stop: threading.Event) -> None:
        self.worker = worker
        self.stop = stop
        self.backlog = 0  # windows, at the last pass (the finalize thread writes it)
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix="dqpulse-finalize")
        self._pass: Future[int] | None = None
        self._next_pass_at = 0.0
        self._next_dataset = 0  # where the next pass starts (see finalize_ready)
        self._waits = 0

    def due(self) -> None:
        """Start a pass on the finalize thread when none is running and one is due; above
        the backlog bound, wait for the pass in flight first (consuming thread)."""
        bound = self.worker.settings.finalize_max_backlog_windows
        running = self._pass
        if running is not None and not running.done():
            if self.backlog <= bound:
                return
            self._waits += 1
            if self._waits == 1:
                log.warning("finalize backlog of %d windows is over %d: ingest waits for "
                            "finalization", self.backlog, bound)
            running.result()
        elif self._waits and self.backlog <= bound:
            log.info("finalize backlog down to %d windows: ingest goes on (it waited for "
                     "%d passes)", self.backlog, self._waits)
            self._waits = 0
        if time.monotonic() >= self._next_pass_at:
            self._pass = self._executor.submit(self.run_pass)

    def run_pass(self) -> int:
        """One pass over the datasets with windows ready (finalize thread)."""
        worker = self.worker
        interval = worker.settings.checkpoint_interval_s
        try:
            with worker.engine.connect() as conn:
                frontiers = checkpoint_store.get_frontiers(conn)
        except DBAPIError as exc:  # the checkpoints report the outage; retry later
            log.warning("finalize pass skipped: %s",
                        type(exc.orig).__name__ if exc.orig else exc)
            self._next_pass_at = time.monotonic() + 4 * interval
            return 0
        ready = {d.name: checkpoint_store.ready_windows(
            frontiers.get(d.name), window=d.window, lateness=d.lateness)
            for d in worker.datasets}
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
                                         should_stop=self.stop.is_set)
            except Exception:  # noqa: BLE001 - scoring trouble must not stop ingest
                log.exception("finalizing %s failed; will retry", dataset.name)
                continue
            total += len(windows)
        worker.stats.windows += total
        return total

    def shutdown(self) -> None:
        """Wait for the pass in flight (it stops after its current dataset once the worker
        is stopping)."""
        self._executor.shutdown(wait=True)
