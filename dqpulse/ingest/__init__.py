"""The stream side of the core: per-partition state, the checkpoint protocol, assignment.

``workers/ingest.py`` only wires a process around :class:`IngestWorker` (settings,
signals); everything that decides what is counted, written and committed lives here.
"""

from __future__ import annotations

from dqpulse.ingest.worker import IngestStats, IngestWorker

__all__ = ["IngestStats", "IngestWorker"]
