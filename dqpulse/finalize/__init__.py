"""Closed windows -> metric points -> detectors -> incidents, one job per module.

:mod:`~dqpulse.finalize.finalize` merges the partitions' partials of a window and writes
its points; :mod:`~dqpulse.finalize.watch` says which series the detectors watch;
:mod:`~dqpulse.finalize.scoring` runs them (with :mod:`~dqpulse.finalize.autoencoder`)
and turns anomalies into incidents; :mod:`~dqpulse.finalize.export` publishes the
window to Prometheus. The score worker, the ingest worker and the demo share them.
"""

from __future__ import annotations

# Only the finalize step here: the detectors and alerting behind ``finalize.scoring`` are
# imported by the processes that score (an ingest worker without hooks stays lean).
from dqpulse.finalize.finalize import (
    MAX_WINDOWS_PER_PASS,
    FinalizedWindow,
    Recovered,
    WindowHook,
    finalize_ready,
    finalize_skipped,
    skipped_windows,
    windows_ready,
)

__all__ = ["MAX_WINDOWS_PER_PASS", "FinalizedWindow", "Recovered", "WindowHook",
           "finalize_ready", "finalize_skipped", "skipped_windows", "windows_ready"]
