"""The emission hook: each finalized window goes to the OpenLineage outbox.

Runs in the finalize transaction and does only one small insert (the dataset, the window
and its validity counts: :func:`dqpulse.rca.openlineage_out.window_stub`). Reading the
window's points and flagged series back, building the client's event and the HTTP call
are the background sender's (:mod:`dqpulse.services.openlineage_emit`), so emission costs
ingest one small row per window, a slow or absent receiver never holds it up, and a
window whose transaction commits is never lost.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection

from dqpulse.finalize.finalize import FinalizedWindow
from dqpulse.rca.openlineage_out import window_stub
from dqpulse.spec import DatasetSpec
from dqpulse.store import openlineage as openlineage_store


class OpenLineageOutboxHook:
    """Queues one OpenLineage window per finalized window."""

    def __call__(self, conn: Connection, dataset: DatasetSpec, window: FinalizedWindow) -> None:
        stub = window_stub(dataset, window_start=window.window_start,
                           window_end=window.window_end, points=window.points)
        openlineage_store.enqueue(conn, dataset=dataset.name, window_start=window.window_start,
                                  event=stub, now=datetime.now(UTC))
