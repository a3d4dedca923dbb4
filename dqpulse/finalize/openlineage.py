"""The emission hook: each finalized window's results go to the OpenLineage outbox.

Runs in the finalize transaction after the scoring hook (so the window's anomalies are
known), and does only a small insert: building the client's event and the HTTP call are
the background sender's (:mod:`dqpulse.services.openlineage_emit`), so a slow or absent
receiver never holds up ingest, and a window whose transaction commits is never lost.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection

from dqpulse.finalize.finalize import FinalizedWindow
from dqpulse.jsonsafe import json_safe_object
from dqpulse.rca.openlineage_out import window_report
from dqpulse.spec import DatasetSpec
from dqpulse.store import openlineage as openlineage_store


class OpenLineageOutboxHook:
    """Queues one OpenLineage window report per finalized window."""

    def __call__(self, conn: Connection, dataset: DatasetSpec, window: FinalizedWindow) -> None:
        anomalous = openlineage_store.get_anomalous(conn, dataset=dataset.name,
                                                    window_start=window.window_start)
        report = window_report(dataset, window_start=window.window_start,
                               window_end=window.window_end, points=window.points,
                               anomalous=anomalous)
        openlineage_store.enqueue(conn, dataset=dataset.name, window_start=window.window_start,
                                  event=json_safe_object(report) or {}, now=datetime.now(UTC))
