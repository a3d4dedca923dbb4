"""What naming a checkpoint's witness costs the ingest path (dqpulse.ingest.witness).

Each planned job of a partition hashes its last record (``witness_of``: the record's
timestamp, key and value through BLAKE2b). This counts the same batches through
``OwnedPartition.add`` (plan and aggregate, the worker's path per partition) as they are,
and with ``witness_of`` replaced by a constant, alternating in one process, at several
batch sizes (a busy partition polls thousands of records at a time; a quiet one a few,
which coalescing holds back into fewer jobs), and prints the median records/s of each and
their ratio.

    .venv/bin/python bench/witness_cost.py [--records 50000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dqpulse.aggregate import PartitionAggregator  # noqa: E402
from dqpulse.ingest import partition as partition_module  # noqa: E402
from dqpulse.ingest.partition import OwnedPartition  # noqa: E402
from dqpulse.records import PartitionBatch  # noqa: E402
from dqpulse.spec import DatasetSpec  # noqa: E402

SPEC = DatasetSpec(name="orders", topic="orders", event_time="ts", window=60, lateness=0)


def batches(records: int, size: int, start: float) -> list[PartitionBatch]:
    values = [orjson.dumps({"ts": start + i * 0.001, "order_id": f"o-{i}",
                            "amount": round(10.0 + (i * 7919 % 1000) / 10.0, 2),
                            "country": ("DE", "FR", "US", "NL")[i % 4],
                            "email": f"user{i % 977}@example.com"})
              for i in range(records)]
    offsets = np.arange(records, dtype=np.int64)
    stamps = (start * 1000 + offsets).astype(np.int64)
    return [PartitionBatch("orders", 0, values[i:i + size], stamps[i:i + size],
                           offsets[i:i + size]) for i in range(0, records, size)]


def rate(work: list[PartitionBatch], now: float) -> float:
    owned = OwnedPartition(PartitionAggregator(SPEC, 0), None, None)
    began = time.perf_counter()
    for batch in work:
        owned.add(batch, now)
    owned.flush()
    return sum(map(len, work)) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    real = partition_module.witness_of
    start = time.time() // 60 * 60 - 120
    print("| records per batch | with the witness (records/s) | without | ratio |\n"
          "|---:|---:|---:|---:|")
    for size in (5000, 500, 50):
        work = batches(args.records, size, start)
        rates: dict[str, list[float]] = {"with": [], "without": []}
        for _ in range(args.rounds):
            partition_module.witness_of = real  # type: ignore[attr-defined]
            rates["with"].append(rate(work, start + 30))
            partition_module.witness_of = lambda batch, index: (0, 0)  # type: ignore[attr-defined]
            rates["without"].append(rate(work, start + 30))
        partition_module.witness_of = real  # type: ignore[attr-defined]
        with_, without = statistics.median(rates["with"]), statistics.median(rates["without"])
        print(f"| {size} | {with_:,.0f} | {without:,.0f} | {with_ / without:.3f} |", flush=True)


if __name__ == "__main__":
    main()
