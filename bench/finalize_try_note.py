"""What noting each finalize pass in the database costs (a window that kills its process
must count across restarts: dqpulse.finalize.failures).

On a throwaway database at Alembic head (the local stack's Postgres), ``--datasets`` data
sets of one partition each get one window of ``--records`` records; each data set's window
is then finalized by one ``finalize_ready`` call, alternately without a failure record (one
transaction under a transaction-scoped advisory lock, as every pass was before session 44)
and with one (a session-scoped lock, a committed note of the pass, then the pass), rounds
interleaved so that both see the same machine. Without ``--scored``, no hooks: the cost of
the note against the bare window write, the most it can weigh; with it, the windows are
scored and alerted as a worker does (``default_hooks``: the data sets' detectors start
empty, so this is a young data set's scoring). Prints the median ms per pass of each and
their ratio.

Usage: ``eval "$(deploy/local/stack env)"; .venv/bin/python bench/finalize_try_note.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import orjson  # noqa: E402
import workload as wl  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from dqpulse.aggregate import PartitionAggregator  # noqa: E402
from dqpulse.config import Settings  # noqa: E402
from dqpulse.finalize import finalize_ready  # noqa: E402
from dqpulse.finalize.failures import WindowFailures  # noqa: E402
from dqpulse.finalize.scoring import default_hooks  # noqa: E402
from dqpulse.records import RawMessage  # noqa: E402
from dqpulse.spec import DatasetSpec, Spec  # noqa: E402
from dqpulse.store import checkpoints  # noqa: E402
from dqpulse.store.db import make_engine  # noqa: E402
from dqpulse.store.tables import window_partials  # noqa: E402


def partial(spec: DatasetSpec, start: float, records: int) -> bytes:
    aggregator = PartitionAggregator(spec, 0)
    aggregator.add([RawMessage(spec.topic, 0, i, int(start * 1000),
                               orjson.dumps({"ts": start + i % 60, "amount": float(i % 97),
                                             "country": f"c{i % 7}"}))
                    for i in range(records)], now=start + 100.0)
    return aggregator.snapshot_window(start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--datasets", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--scored", action="store_true", help="run the scoring hooks")
    args = parser.parse_args()
    admin = os.environ.get("DQPULSE_DATABASE_URL", wl.DEFAULT_PG)
    start = time.time() // 3600 * 3600 - 7200
    times: dict[str, list[float]] = {"one transaction": [], "noted pass": []}
    url = wl.create_database(admin, "dqpulse_tnote")
    try:
        engine = make_engine(url)
        for round_ in range(args.rounds):
            for variant in times:
                specs = [DatasetSpec(name=f"d{round_}_{variant[0]}_{k}", topic="t",
                                     event_time="ts", window=60, lateness=0)
                         for k in range(args.datasets)]
                with engine.begin() as conn:
                    for spec in specs:
                        checkpoints.set_partition_count(conn, dataset=spec.name,
                                                        partition_count=1)
                        checkpoints.save(conn, dataset=spec.name, partition=0,
                                         loaded_version=None, next_offset=1,
                                         watermark=start + 60, last_record_at=start + 59,
                                         high_watermark_offset=1, state=b"", closed=[],
                                         owner_id="bench")
                        conn.execute(insert(window_partials).values(
                            dataset=spec.name, partition=0, window_start=start,
                            state=partial(spec, start, args.records)))
                failures = WindowFailures() if variant == "noted pass" else None
                hooks = default_hooks(Spec(datasets=specs), Settings(database_url=url)) \
                    if args.scored else []
                for spec in specs:
                    began = time.perf_counter()
                    done = finalize_ready(engine, spec, now=start + 120, hooks=hooks,
                                          failures=failures)
                    times[variant].append(time.perf_counter() - began)
                    assert len(done) == 1, (spec.name, done)
        engine.dispose()
    finally:
        wl.drop_database(admin, url)
    medians = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    for name, ms in medians.items():
        print(f"{name:16s} {ms:7.2f} ms per pass (median of {len(times[name])})")
    print(f"ratio noted / one transaction: "
          f"{medians['noted pass'] / medians['one transaction']:.2f}")


if __name__ == "__main__":
    main()
