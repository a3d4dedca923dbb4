"""What per-segment states (issue 14) cost on the ingest compute path, side by side.

Same records and path as ``bench/ingest_compute.py`` (its generator and dataset spec:
every metric family; messages carry a key ``user<id>:<order>``), one fresh child process
per measurement, pinned to one core, interleaved ``--repeat`` times:

* ``off``: the segments family does nothing (its ``update`` is a no-op) and no message-key
  prefix is extracted: dqpulse before issue 14;
* ``default``: no ``dimensions:`` declared, only the built-in ``kafka.partition``;
* ``3 dims``: ``dimensions: [category, status, device.os]`` (the issue's target);
* ``3 dims+key``: the same and ``kafka.key_prefix`` (the message key's prefix, opt-in).

Reported: rec/s of ``PartitionAggregator.add`` + finalize of every window, by CPU time of
the measured code and by wall time, and the cost of each configuration against ``off`` as
the median of per-round ratios (same minute, same load). On a shared box the CPU-time
figure is the one to read: wall time mostly measures the other tenants.
Usage: ``.venv/bin/python bench/segment_cost.py [--records N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import ingest_compute as ic  # noqa: E402  (the sibling benchmark's generator and spec)

DIMENSIONS = ["category", "status", "device.os"]
MODES = ("off", "default", "3 dims", "3 dims+key")


def child(path: Path, mode: str) -> dict[str, float]:
    import gc

    from dqpulse.aggregate import PartitionAggregator
    from dqpulse.metrics import FinalizeContext, finalize_window, merge_partials
    from dqpulse.metrics.segments import SegmentState
    from dqpulse.records import PartitionBatch, RawMessage

    ic.pin(1)
    if mode == "off":  # no segment statistics and no message-key prefixes
        SegmentState.update = lambda self, batch: None  # type: ignore[method-assign]
        PartitionAggregator._key_prefixes = (  # type: ignore[method-assign]
            lambda self, batch_in, candidates, rows: None)
    spec = ic.bench_spec()
    if mode == "3 dims":
        spec = spec.model_copy(update={"dimensions": DIMENSIONS})
    if mode == "3 dims+key":
        spec = spec.model_copy(update={"dimensions": [*DIMENSIONS, "kafka.key_prefix"]})
    values = ic.read_values(path)
    messages = [RawMessage("orders", 0, i, int((ic.BASE_EPOCH + i / ic.RATE) * 1000), v,
                           f"user{i % 997}:{i}".encode())
                for i, v in enumerate(values)]
    batches = [PartitionBatch.from_messages(messages[i:i + ic.BATCH])
               for i in range(0, len(messages), ic.BATCH)]
    del messages
    aggregator = PartitionAggregator(spec, 0)
    gc.freeze()
    started, cpu_started = time.perf_counter(), time.process_time()
    closed: list[tuple[float, bytes]] = []
    now = ic.BASE_EPOCH + 1.0
    for batch in batches:
        now = float(batch.timestamps_ms[-1]) / 1000 + 0.5
        aggregator.add(batch, now)
        closed += aggregator.pop_closed()
    aggregator.tick(now + 3600)
    closed += aggregator.pop_closed()
    baseline = None
    segment_bytes = 0
    for start, blob in closed:
        state = merge_partials(spec, [blob])
        segment_bytes = max(segment_bytes, state.segments.nbytes())
        ctx = FinalizeContext(start, start + spec.window, now, aggregator.last_record_at, 0)
        baseline = finalize_window(spec, state, ctx, baseline).baseline
    elapsed = time.perf_counter() - started
    return {"records": len(values), "seconds": elapsed,
            "cpu_seconds": time.process_time() - cpu_started, "windows": len(closed),
            "segment_kib": segment_bytes / 1024, "peak_rss_mib": ic.peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1])))
        return
    data = Path(tempfile.gettempdir()) / f"dqpulse-bench-{args.records}.ndjson"
    if not data.exists():
        ic.generate(data, args.records)
    print(f"{args.records:,} records, batches of {ic.BATCH}, cpu count {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f} at start")
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(args.repeat):
        for mode in MODES:
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                                  str(data), mode], check=True, capture_output=True, text=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    # CPU seconds of the measured code: on a shared box wall time mostly measures the
    # other tenants; both are reported, the cost is read on CPU time
    for clock in ("cpu_seconds", "seconds"):
        print(f"\nrec/s by {clock}: {'mode':10s} {'median':>9s} {'cost vs off':>12s} "
              f"{'(median of per-round ratios)':s}")
        for mode in MODES:
            rates = [r["records"] / r[clock] for r in runs[mode]]
            ratios = [r["records"] / r[clock] / (o["records"] / o[clock])
                      for r, o in zip(runs[mode], runs["off"], strict=True)]
            print(f"  {mode:10s} {median(rates):9,.0f} {1.0 - median(ratios):12.1%}   "
                  f"rounds: {', '.join(f'{x:,.0f}' for x in rates)}")
    print("\nsegment state per window (KiB, max): " + ", ".join(
        f"{mode} {max(r['segment_kib'] for r in runs[mode]):.0f}" for mode in MODES)
        + "; peak RSS MiB: " + ", ".join(
        f"{mode} {max(r['peak_rss_mib'] for r in runs[mode]):.0f}" for mode in MODES))
    print(f"load {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
