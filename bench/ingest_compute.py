"""Compute-path benchmark: dqpulse vs bare orjson decoding vs whylogs, on the same records.

Generates N JSON records of 10 top-level fields (ids, floats, a Zipf category, a status,
an email, a bool, a 5%-null float, an ISO timestamp, a nested object), writes them once
as NDJSON, cuts them into 5000-message ``PartitionBatch``es (what a source hands over)
and measures, in one run:

1. bare ``orjson.loads`` per record (the decoding ceiling),
2. dqpulse ``PartitionAggregator.add`` over all batches, then ``pop_closed`` +
   ``merge_partials`` + ``finalize_window`` of every window (the full metric set),
   in 1 worker process, and with ``--workers 2`` also in 2 processes on half the data each,
3. whylogs 1.6.4 profiling the same records (parse + flatten + DataFrame + ``why.log``
   per 10k records, and the profiling step alone), in its own virtualenv
   ``bench/.venv-whylogs`` (whylogs needs numpy<2; created on first use).

Each measured path runs in a fresh process reading the data file, pinned to one core
(two workers: one core each), so peak RSS and rec/s are per worker process.
Usage: ``.venv/bin/python bench/ingest_compute.py [--records N] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WHYLOGS_VENV = HERE / ".venv-whylogs"
BATCH = 20_000  # DQPULSE_POLL_MAX_RECORDS' default (records per poll)
BASE_EPOCH = 1_764_324_000  # 2025-11-28T10:00:00Z
RATE = 2000  # records per second of event time -> 1M records span ~8 minutes


def generate(path: Path, n: int, seed: int = 7) -> None:
    import numpy as np
    import orjson

    rng = np.random.default_rng(seed)
    categories = np.array([f"cat{i:02d}" for i in range(50)])
    zipf = 1.0 / np.arange(1, 51)
    zipf /= zipf.sum()
    category = categories[rng.choice(50, size=n, p=zipf)]
    statuses = np.array(["ok", "failed", "pending", "refunded", "void"])
    status = statuses[rng.choice(5, size=n, p=[0.8, 0.05, 0.1, 0.03, 0.02])]
    user = rng.integers(0, 200_000, size=n)
    amount = np.round(rng.lognormal(3, 1, size=n), 2)
    score = rng.normal(0, 1, size=n)
    flag = rng.random(n) < 0.1
    discount = rng.random(n)
    discount_null = rng.random(n) < 0.05
    oses = np.array(["ios", "android", "web"])
    os_ = oses[rng.integers(0, 3, size=n)]
    version = rng.integers(1, 20, size=n)
    import datetime as dt

    with open(path, "wb") as out:
        for i in range(n):
            seconds = BASE_EPOCH + i / RATE
            stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")
            record = {
                "order_id": i,
                "user_id": int(user[i]),
                "amount": float(amount[i]),
                "score": float(score[i]),
                "category": str(category[i]),
                "status": str(status[i]),
                "email": f"user{int(user[i])}@example.com",
                "is_test": bool(flag[i]),
                "discount": None if discount_null[i] else float(discount[i]),
                "ts": stamp.replace("+00:00", "Z"),
                "device": {"os": str(os_[i]), "version": int(version[i])},
            }
            out.write(orjson.dumps(record) + b"\n")


def read_values(path: Path, part: int = 0, parts: int = 1) -> list[bytes]:
    values = path.read_bytes().splitlines()
    size = (len(values) + parts - 1) // parts
    return values[part * size:(part + 1) * size]


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across fork+exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- children ----------------------------------------------------------------------------
def child_orjson(path: Path) -> dict[str, float]:
    import orjson

    pin(1)
    values = read_values(path)
    gc.freeze()  # as in every child: the loaded data set is not the measured code's
    loads = orjson.loads
    started = time.perf_counter()
    for value in values:
        loads(value)
    elapsed = time.perf_counter() - started
    return {"records": len(values), "seconds": elapsed, "peak_rss_mib": peak_rss_mib()}


def pin(cpu: int) -> None:
    """One core per worker process, as the measured notes do (no-op where unsupported)."""
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def bench_spec(name: str = "orders", topic: str = "orders") -> Any:
    """The dataset spec of both ingest benchmarks: every metric family is exercised."""
    sys.path.insert(0, str(ROOT))
    from dqpulse.spec import DatasetSpec, FieldSpec

    return DatasetSpec(
        name=name, topic=topic, event_time="ts", window=60, lateness=30,
        key="order_id", label="status", fairness={"group": "device.os", "outcome": "is_test"},
        fields={
            "amount": FieldSpec(type="number", required=True, min=0),
            "status": FieldSpec(type="string", allowed=["ok", "failed", "pending", "refunded"]),
            "email": FieldSpec(type="string", pattern=r"^[^@]+@[^@]+$"),
        },
    )


def child_dqpulse(path: Path, part: int, parts: int) -> dict[str, float]:
    pin(part if parts > 1 else 1)
    sys.path.insert(0, str(ROOT))
    from dqpulse.aggregate import PartitionAggregator
    from dqpulse.metrics import FinalizeContext, finalize_window, merge_partials
    from dqpulse.records import PartitionBatch, RawMessage

    spec = bench_spec()
    values = read_values(path, part, parts)
    first = part * len(values)
    messages = [
        RawMessage("orders", part, first + i, int((BASE_EPOCH + (first + i) / RATE) * 1000), v)
        for i, v in enumerate(values)
    ]
    # what a source hands the worker: one columnar PartitionBatch per poll and partition
    size = int(os.environ.get("DQPULSE_BENCH_BATCH", BATCH))
    batches = [PartitionBatch.from_messages(messages[i:i + size])
               for i in range(0, len(messages), size)]
    del messages
    aggregator = PartitionAggregator(spec, part)
    loaded_rss = rss_mib()  # the benchmark's own copy of the data, not the worker's state
    # The pre-fetched batches hold 1M GC-tracked RawMessages that a worker never holds
    # (it gets a poll's worth from the client); keep them out of the collector's scans,
    # as the worker keeps its start-up objects out (gc.freeze in IngestWorker.start).
    gc.freeze()
    now = BASE_EPOCH + 1.0
    started = time.perf_counter()
    closed: list[tuple[float, bytes]] = []
    accepted = 0
    for batch in batches:
        now = float(batch.timestamps_ms[-1]) / 1000 + 0.5
        report = aggregator.add(batch, now)
        accepted += report.accepted
        closed += aggregator.pop_closed()
    add_seconds = time.perf_counter() - started
    aggregator.tick(now + 3600)
    closed += aggregator.pop_closed()
    baseline = None
    points = 0
    for start, blob in closed:
        state = merge_partials(spec, [blob])
        ctx = FinalizeContext(start, start + spec.window, now, aggregator.last_record_at, 0)
        result = finalize_window(spec, state, ctx, baseline)
        baseline = result.baseline
        points += len(result.points)
    elapsed = time.perf_counter() - started
    return {"records": len(values), "accepted": accepted, "seconds": elapsed,
            "add_seconds": add_seconds, "windows": len(closed), "points": points,
            "peak_rss_mib": peak_rss_mib(), "worker_rss_mib": peak_rss_mib() - loaded_rss}


def child_whylogs(path: Path) -> dict[str, float]:
    import orjson
    import pandas as pd
    import whylogs as why

    pin(1)
    values = read_values(path)
    gc.freeze()
    chunk = 10_000
    started = time.perf_counter()
    profile = None
    for i in range(0, len(values), chunk):
        rows = [orjson.loads(v) for v in values[i:i + chunk]]
        frame = pd.json_normalize(rows)
        view = why.log(pandas=frame).view()
        profile = view if profile is None else profile.merge(view)
    total = time.perf_counter() - started
    # the profiling step alone, DataFrames prebuilt (first 200k records)
    sample = values[: min(len(values), 200_000)]
    frames = [pd.json_normalize([orjson.loads(v) for v in sample[i:i + chunk]])
              for i in range(0, len(sample), chunk)]
    started = time.perf_counter()
    for frame in frames:
        why.log(pandas=frame).view()
    profile_only = time.perf_counter() - started
    return {"records": len(values), "seconds": total, "profile_only_records": len(sample),
            "profile_only_seconds": profile_only, "peak_rss_mib": peak_rss_mib()}


# -- parent ------------------------------------------------------------------------------
def run_child(python: str, *args: str) -> dict[str, float]:
    output = subprocess.run([python, str(Path(__file__).resolve()), "--child", *args],
                            check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def ensure_whylogs() -> str | None:
    python = WHYLOGS_VENV / "bin" / "python"
    if not python.exists():
        print("creating bench/.venv-whylogs (whylogs 1.6.4, numpy<2) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(WHYLOGS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "whylogs==1.6.4",
                        "numpy<2", "pandas", "orjson"], check=True)
    return str(python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1, choices=[1, 2])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--skip-whylogs", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=BATCH,
                        help="records per poll batch (default: the worker's default)")
    parser.add_argument("--compare-batch", type=int, default=None,
                        help="also run dqpulse with this batch size, interleaved")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, path = args.child[0], Path(args.child[1])
        if kind == "orjson":
            result = child_orjson(path)
        elif kind == "whylogs":
            result = child_whylogs(path)
        else:
            result = child_dqpulse(path, int(args.child[2]), int(args.child[3]))
        print(json.dumps(result))
        return
    os.environ["DQPULSE_BENCH_BATCH"] = str(args.batch)

    data = args.data or Path(tempfile.gettempdir()) / f"dqpulse-bench-{args.records}.ndjson"
    if not data.exists():
        print(f"generating {args.records:,} records -> {data}", file=sys.stderr)
        generate(data, args.records)
    size = data.stat().st_size
    print(f"data: {args.records:,} records, {size / args.records:.0f} bytes/record, "
          f"batches of {args.batch}; cpu count {os.cpu_count()}")

    me = sys.executable
    # Shared machines are noisy: run the single-process paths interleaved ``--repeat``
    # times; report medians, and the median of the per-round ratios (same minute, same load).
    bare_runs, one_runs, other_runs = [], [], []
    for _ in range(args.repeat):
        bare_runs.append(run_child(me, "orjson", str(data)))
        one_runs.append(run_child(me, "dqpulse", str(data), "0", "1"))
        if args.compare_batch:
            os.environ["DQPULSE_BENCH_BATCH"] = str(args.compare_batch)
            other_runs.append(run_child(me, "dqpulse", str(data), "0", "1"))
            os.environ["DQPULSE_BENCH_BATCH"] = str(args.batch)

    def rate(result: dict[str, float]) -> float:
        return result["records"] / result["seconds"]

    def rates(runs: list[dict[str, float]]) -> str:
        return ", ".join(f"{rate(r):,.0f}" for r in runs)

    print(f"runs (rec/s): orjson {rates(bare_runs)} | dqpulse {rates(one_runs)}")
    if other_runs:
        ratios = ", ".join(f"{rate(d) / rate(b):.2f}"
                           for b, d in zip(bare_runs, other_runs, strict=True))
        print(f"dqpulse with batches of {args.compare_batch}: {rates(other_runs)}; "
              f"/ orjson per round {ratios}")
    bare = sorted(bare_runs, key=rate)[len(bare_runs) // 2]
    one = sorted(one_runs, key=rate)[len(one_runs) // 2]
    round_ratios = sorted(rate(d) / rate(b) for b, d in zip(bare_runs, one_runs, strict=True))
    rows = [("orjson.loads per record (ceiling), median", bare)]
    rows.append(("dqpulse, 1 worker process, median", one))
    two_rate = None
    if args.workers == 2:
        started = time.perf_counter()
        procs = [subprocess.Popen([me, str(Path(__file__).resolve()), "--child", "dqpulse",
                                   str(data), str(p), "2"], stdout=subprocess.PIPE, text=True)
                 for p in range(2)]
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        wall = time.perf_counter() - started
        total = sum(o["records"] for o in outs)
        slowest = max(o["seconds"] for o in outs)
        two = {"records": total, "seconds": slowest,
               "peak_rss_mib": max(o["peak_rss_mib"] for o in outs), "wall_incl_load": wall}
        rows.append(("dqpulse, 2 worker processes (aggregate)", two))
        two_rate = total / slowest
    why_result = None
    if not args.skip_whylogs:
        python = ensure_whylogs()
        if python:
            why_result = run_child(python, "whylogs", str(data))
            rows.append(("whylogs 1.6.4: parse+flatten+DataFrame+profile", why_result))

    print(f"{'path':50s} {'rec/s':>12s} {'seconds':>9s} {'peak RSS MiB':>13s}")
    for name, result in rows:
        print(f"{name:50s} {rate(result):12,.0f} {result['seconds']:9.2f} "
              f"{result['peak_rss_mib']:13.0f}")
    dq_rate = rate(one)
    print(f"\npeak RSS above the loaded data (the aggregator's own memory): "
          f"{one['worker_rss_mib']:.0f} MiB; the data set itself is held in every process")
    print(f"dqpulse add() only: {one['records'] / one['add_seconds']:,.0f} rec/s; "
          f"{one['windows']} windows finalized, {one['points']} points")
    print(f"dqpulse / orjson.loads = {dq_rate / rate(bare):.2f} (medians); per-round ratios "
          f"{', '.join(f'{r:.2f}' for r in round_ratios)}, median "
          f"{round_ratios[len(round_ratios) // 2]:.2f} (target >= 0.30)")
    if why_result:
        why_rate = rate(why_result)
        only = why_result["profile_only_records"] / why_result["profile_only_seconds"]
        print(f"whylogs profiling step alone (DataFrame prebuilt): {only:,.0f} rec/s")
        print(f"dqpulse / whylogs = {dq_rate / why_rate:.1f}x vs parse+flatten+DataFrame+profile, "
              f"{dq_rate / only:.1f}x vs profiling alone (target >= 8x)")
    if two_rate:
        print(f"scaling 1 -> 2 processes: {two_rate / dq_rate:.2f}x")


if __name__ == "__main__":
    main()
