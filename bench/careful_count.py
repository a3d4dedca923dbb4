"""What a careful count costs (a partition whose workers died before their first checkpoint
is counted with notes in the database: dqpulse.ingest.careful).

On a throwaway database at Alembic head (the local stack's Postgres), one partition's
checkpoint row; a batch of ``--records`` JSON records (the workload's order records) is
counted into a fresh aggregator three ways, rounds interleaved so that each sees the same
machine: as usual (``PartitionAggregator.add``, one call), carefully (runs of at most
``CAREFUL_RUN`` records, each noted before it is counted, and a last note after), and
``--alone`` records of it one at a time, each noted (step 2 of a careful count, where a
worker died). Prints the median records per second of each and their ratio to the usual
count.

Usage: ``eval "$(deploy/local/stack env)"; .venv/bin/python bench/careful_count.py``.
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

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import workload as wl  # noqa: E402

from dqpulse.aggregate import PartitionAggregator  # noqa: E402
from dqpulse.ingest.careful import CAREFUL_RUN, CarefulCount, count_carefully  # noqa: E402
from dqpulse.ingest.partition import AddJob  # noqa: E402
from dqpulse.records import PartitionBatch  # noqa: E402
from dqpulse.spec import DatasetSpec  # noqa: E402
from dqpulse.store import checkpoints  # noqa: E402
from dqpulse.store.db import make_engine, upgrade_to_head  # noqa: E402

SPEC = DatasetSpec(name="orders", topic="orders", event_time="ts", window=60, lateness=0)


def batch(records: int, start: float) -> PartitionBatch:
    values = [orjson.dumps({"ts": start + i * 0.01, "order_id": f"o-{i}",
                            "amount": round(10.0 + (i * 7919 % 1000) / 10.0, 2),
                            "country": ("DE", "FR", "US", "NL")[i % 4],
                            "email": f"user{i % 977}@example.com"})
              for i in range(records)]
    offsets = np.arange(records, dtype=np.int64)
    return PartitionBatch("orders", 0, values,
                          np.full(records, int(start * 1000), dtype=np.int64), offsets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--alone", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    admin = os.environ.get("DQPULSE_DATABASE_URL", wl.DEFAULT_PG)
    start = time.time() // 60 * 60 - 120
    work = batch(args.records, start)
    alone = work.part(0, args.alone)
    rates: dict[str, list[float]] = {"as usual": [], "carefully": [], "one at a time": []}
    url = wl.create_database(admin, "dqpulse_tcareful")
    try:
        upgrade_to_head(url)
        engine = make_engine(url)
        with engine.begin() as conn:
            checkpoints.save(conn, dataset="orders", partition=0, loaded_version=None,
                             next_offset=0, watermark=start, last_record_at=None,
                             high_watermark_offset=0, state=b"", closed=[], owner_id="bench")
        key = ("orders", 0)
        for _ in range(args.rounds):
            aggregator = PartitionAggregator(SPEC, 0)
            began = time.perf_counter()
            aggregator.add(work, now=start + 30)
            rates["as usual"].append(args.records / (time.perf_counter() - began))

            aggregator = PartitionAggregator(SPEC, 0)
            began = time.perf_counter()
            count_carefully(engine, key, aggregator, AddJob(work, start + 30),
                            CarefulCount(since=0))
            rates["carefully"].append(args.records / (time.perf_counter() - began))

            aggregator = PartitionAggregator(SPEC, 0)
            began = time.perf_counter()
            count_carefully(engine, key, aggregator, AddJob(alone, start + 30),
                            CarefulCount(since=0, first=0, last=args.alone - 1))
            rates["one at a time"].append(args.alone / (time.perf_counter() - began))
        engine.dispose()
    finally:
        wl.drop_database(admin, url)
    usual = statistics.median(rates["as usual"])
    print(f"{args.records} records, runs of {CAREFUL_RUN}; {args.alone} one at a time; "
          f"median of {args.rounds} rounds")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:14s} {rate:12,.0f} records/s  ratio {rate / usual:.3f}")


if __name__ == "__main__":
    main()
