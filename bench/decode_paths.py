"""The JSON decoder's two columnar paths side by side, in process, at the fleet's record shape.

Records as ``bench/fleet.py`` produces them (``--fields`` number fields, 1 % nulls, plus an
event time and a sequence number), cut into ``--batch``-record partition batches. Each
round measures, interleaved so that the box's drift hits both alike:

- ``decode``: ``JsonDecoder.decode`` alone, with the msgspec record path (the default) and
  with Arrow's JSON reader only (the record path switched off);
- ``add``: the whole ``PartitionAggregator.add`` (decode + every metric family) per record.

Process CPU time per record; the report gives each path's minimum and median over the
rounds and the ratio Arrow / msgspec of the minima. The collector runs as in a worker
(``gc.freeze`` and the worker's default threshold).
Usage: ``.venv/bin/python bench/decode_paths.py [--fields 20] [--batch 2000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workload as wl  # noqa: E402

from dqpulse.aggregate import PartitionAggregator  # noqa: E402
from dqpulse.config import Settings  # noqa: E402
from dqpulse.decode.json import JsonDecoder  # noqa: E402
from dqpulse.records import PartitionBatch  # noqa: E402
from dqpulse.spec import DatasetSpec, parse_spec  # noqa: E402

T0 = 1_764_324_000.0


class ArrowOnlyDecoder(JsonDecoder):
    """The JSON decoder without its msgspec record path."""

    def _learn_schema(self, schema: pa.Schema) -> None:
        super()._learn_schema(schema)
        self._records = None


def batches(fields: int, batch: int, count: int) -> tuple[DatasetSpec, list[PartitionBatch]]:
    fleet = wl.Fleet(datasets=1, partitions=1, fields=fields, window_s=60, prefix="bench")
    spec = parse_spec(fleet.yaml()).datasets[0]
    rng = random.Random(1)
    out = []
    for b in range(count):
        first = b * batch
        values = [fleet.record(rng, T0 + (first + k) * 0.01, first + k) for k in range(batch)]
        out.append(PartitionBatch(spec.topic, 0, values,
                                  np.full(batch, int(T0 * 1000), dtype=np.int64),
                                  np.arange(first, first + batch, dtype=np.int64)))
    return spec, out


def per_record_us(run: Callable[[], int]) -> float:
    started = time.process_time()
    records = run()
    return 1e6 * (time.process_time() - started) / records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    spec, data = batches(args.fields, args.batch, args.batches)
    gc.freeze()
    gc.set_threshold(Settings().gc_threshold, *gc.get_threshold()[1:])
    paths: dict[str, type[JsonDecoder]] = {"msgspec": JsonDecoder, "arrow": ArrowOnlyDecoder}

    def decode_only(kind: type[JsonDecoder]) -> Callable[[], int]:
        def run() -> int:
            decoder = kind(spec)
            decoder.decode(data[0].values)  # learn the schema
            for batch in data[1:]:
                decoder.decode(batch.values)
            return args.batch * (len(data) - 1)
        return run

    def add(kind: type[JsonDecoder]) -> Callable[[], int]:
        def run() -> int:
            aggregator = PartitionAggregator(spec, 0, decoder=kind(spec))
            aggregator.add(data[0], T0 + 1)
            for batch in data[1:]:
                aggregator.add(batch, T0 + 1)
            return args.batch * (len(data) - 1)
        return run

    results: dict[str, dict[str, list[float]]] = {"decode": {}, "add": {}}
    for _ in range(args.rounds):
        for measure, make in (("decode", decode_only), ("add", add)):
            for name, kind in paths.items():
                results[measure].setdefault(name, []).append(per_record_us(make(kind)))
    report: dict[str, Any] = {"fields": args.fields, "batch": args.batch,
                              "records_per_round": args.batch * (len(data) - 1),
                              "rounds": args.rounds,
                              "load": Path("/proc/loadavg").read_text().split()[:3]}
    for measure, by_path in results.items():
        report[measure] = {name: {"min_us": round(min(values), 2),
                                  "median_us": round(statistics.median(values), 2)}
                           for name, values in by_path.items()}
        report[measure]["arrow_over_msgspec"] = round(
            min(by_path["arrow"]) / min(by_path["msgspec"]), 2)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
