"""What the OpenLineage outbox hook costs one finalize transaction, side by side on Postgres.

The emission's only cost on the ingest path is the hook that runs in each window's
finalize transaction (``dqpulse.finalize.openlineage``). Two versions, interleaved window
by window in one process against one fresh database of the local stack:

* ``report``: the hook as first shipped with issue 14, kept here for the comparison: a
  query for the window's flagged series, the full window report (per-column statistics,
  assertions) made JSON-safe, then a SELECT and an INSERT of it;
* ``stub``: the current hook, one ``INSERT .. ON CONFLICT DO NOTHING`` of a small row
  (dataset, window, validity counts); the sender builds the report later from Postgres.

The points are real: ``bench/ingest_compute.py``'s records through the aggregator and
``finalize_window`` (every metric family), ``--records-per-window`` records per window.
Each window's points are written first (not timed, as the finalize transaction does
before its hooks), then the hook is timed (wall and CPU time of this process), then the
transaction commits. Reported: the median per window of each, and what each would cost
a worker that ingests ``--records-per-window`` records per window at ``--ingest-rate``.

Usage: ``eval "$(deploy/local/stack env)"; .venv/bin/python bench/openlineage_hook.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import ingest_compute as compute  # noqa: E402
import ingest_e2e as e2e  # noqa: E402


def window_points(records: int) -> tuple[Any, list[Any]]:
    """The bench dataset (window = records / RATE seconds) and one window's points."""
    from dqpulse.aggregate import PartitionAggregator
    from dqpulse.metrics import FinalizeContext, finalize_window, merge_partials
    from dqpulse.records import PartitionBatch, RawMessage

    spec = compute.bench_spec("ol_hook").model_copy(
        update={"window": records / compute.RATE, "lateness": 0.0})
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "records.jsonl"
        compute.generate(data, records * 3)
        values = compute.read_values(data)
    messages = [RawMessage("orders", 0, i, int((compute.BASE_EPOCH + i / compute.RATE) * 1000),
                           v) for i, v in enumerate(values)]
    aggregator = PartitionAggregator(spec, 0)
    aggregator.add(PartitionBatch.from_messages(messages), compute.BASE_EPOCH + 3600)
    aggregator.tick(compute.BASE_EPOCH + 7200)
    closed = aggregator.pop_closed()
    start, blob = max(closed, key=lambda item: len(item[1]))  # a full window
    ctx = FinalizeContext(start, start + spec.window, start + spec.window, start, 0)
    return spec, finalize_window(spec, merge_partials(spec, [blob]), ctx, None).points


def report_hook(conn: Any, dataset: Any, window: Any) -> None:
    """The hook as first shipped (for the comparison only)."""
    from sqlalchemy import insert, select

    from dqpulse.jsonsafe import json_safe_object
    from dqpulse.rca.openlineage_out import window_report
    from dqpulse.store import openlineage as openlineage_store
    from dqpulse.store.tables import openlineage_outbox as outbox

    anomalous = openlineage_store.get_anomalous(conn, dataset=dataset.name,
                                                window_start=window.window_start)
    report = window_report(dataset, window_start=window.window_start,
                           window_end=window.window_end, points=window.points,
                           anomalous=anomalous)
    found = conn.execute(select(outbox.c.id).where(
        outbox.c.dataset == dataset.name, outbox.c.window_start == window.window_start)).first()
    if found is None:
        now = datetime.now(UTC)
        conn.execute(insert(outbox).values(
            dataset=dataset.name, window_start=window.window_start,
            event=json_safe_object(report) or {}, status="pending", attempts=0,
            next_attempt_at=now, created_at=now))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=200, help="per version")
    parser.add_argument("--records-per-window", type=int, default=4000)
    parser.add_argument("--ingest-rate", type=float, default=80_000.0,
                        help="records/s of one worker, to express the hook as a share")
    args = parser.parse_args()
    compute.pin(1)
    from dqpulse.finalize import FinalizedWindow
    from dqpulse.finalize.openlineage import OpenLineageOutboxHook
    from dqpulse.store import metrics as metric_store
    from dqpulse.store.db import make_engine

    spec, points = window_points(args.records_per_window)
    admin_url = os.environ.get("DQPULSE_DATABASE_URL", e2e.DEFAULT_PG)
    db_url = e2e.create_database(admin_url)
    hooks = {"report": report_hook, "stub": OpenLineageOutboxHook()}
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in hooks}
    print(f"{len(points)} points per window, {args.records_per_window} records per window, "
          f"load {os.getloadavg()[0]:.2f} at start", flush=True)
    engine = make_engine(db_url)
    try:
        for i in range(args.windows * len(hooks)):
            name = list(hooks)[i % len(hooks)]
            start = compute.BASE_EPOCH + i * spec.window
            window = FinalizedWindow(spec.name, start, start + spec.window, points)
            with engine.begin() as conn:
                metric_store.create_window(conn, dataset=spec.name, window_start=start,
                                           window_end=start + spec.window, points=points)
                wall, cpu = time.perf_counter(), time.process_time()
                hooks[name](conn, spec, window)
                timings[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    finally:
        engine.dispose()
        e2e.drop_database(admin_url, db_url)
    per_window_s = args.records_per_window / args.ingest_rate
    for name, rows in timings.items():
        wall = statistics.median(r[0] for r in rows[5:]) * 1000  # the first ones warm up
        cpu = statistics.median(r[1] for r in rows[5:]) * 1000
        print(f"{name:7s} per window: wall {wall:.2f} ms, CPU {cpu:.2f} ms; at "
              f"{args.ingest_rate:,.0f} rec/s ({per_window_s * 1000:.0f} ms per window) the "
              f"hook's wall time is {wall / (per_window_s * 1000 + wall):.1%} of ingest")
    print(f"load {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
