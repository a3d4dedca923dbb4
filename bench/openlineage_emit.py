"""OpenLineage emission on vs off: ingest throughput of the real ``IngestWorker`` with the
window hooks (scoring, incidents) alone, and with the OpenLineage outbox hook plus the
background sender in the same process while the receiver is DOWN the whole run (every
send fails and is rescheduled: the worst case for the ingest path).

Produces ``--records`` records of ``bench/ingest_compute.py``'s data set (2,000 records per
second of event time) into one fresh 1-partition topic, then runs ``--repeat`` rounds of
(off, on) interleaved, each in a fresh process pinned to one core, each with its own
dataset name and consumer group over the same topic. ``--window`` is short (default 2 s:
1,000 records per window), so the per-window cost of emission (one report and one outbox
insert per window) is paid as often as it would be at a high window rate. Rate = records
/ (every offset checkpointed - first poll), by wall time and by the CPU time of the
process (ingest and, when on, the sender thread; on a shared box wall time mostly
measures the other tenants); medians and per-round ratios on/off reported. After
each "on" run the outbox must hold one pending row per finalized window (nothing lost).

Usage: ``eval "$(deploy/local/stack env)"; .venv/bin/python bench/openlineage_emit.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import ingest_compute as compute  # noqa: E402
import ingest_e2e as e2e  # noqa: E402


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on return: connection refused


def child(mode: str, bootstrap: str, db_url: str, topic: str, window: float,
          total: int) -> dict[str, Any]:
    compute.pin(1)
    # the client's modules, imported in both modes before anything is measured: in a
    # real deployment the sender runs in the notify worker, and an import in the sender
    # thread (0.1-0.3 s of CPU) inside a 2-3 s run would weigh like 5-10 % of ingest
    import openlineage.client.event_v2
    import openlineage.client.generated.data_quality_assertions_dataset
    import openlineage.client.generated.data_quality_metrics_input_dataset
    import openlineage.client.transport.http  # noqa: F401
    from sqlalchemy import func, select

    from dqpulse.config import Settings
    from dqpulse.finalize.scoring import default_hooks
    from dqpulse.ingest import IngestWorker
    from dqpulse.services.openlineage_emit import run_emitter
    from dqpulse.sources.kafka_confluent import ConfluentSource
    from dqpulse.spec import OpenLineageEmitSpec, OpenLineageSpec, Spec
    from dqpulse.store import datasets as dataset_store
    from dqpulse.store import openlineage as openlineage_store
    from dqpulse.store.db import make_engine
    from dqpulse.store.tables import partition_checkpoints

    name = f"bench_ol_{mode}_{uuid.uuid4().hex[:6]}"
    dataset = compute.bench_spec(name, topic).model_copy(update={"window": window,
                                                                  "lateness": 0.0})
    emit = OpenLineageEmitSpec(url=f"http://127.0.0.1:{closed_port()}") if mode == "on" \
        else None
    spec = Spec(datasets=[dataset], openlineage=OpenLineageSpec(emit=emit))
    # the partition is never idle while measured; a long idle timeout keeps the worker from
    # finalizing hundreds of empty windows up to the wall clock (the data's event time is in
    # the past) when it stops: minutes per run on a loaded box, outside the measured span
    settings = Settings(database_url=db_url, kafka_bootstrap=bootstrap,
                        kafka_group=f"g-{name}", idle_partition_timeout_s=3600.0)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=spec)
    stop = threading.Event()
    sender = None
    if emit is not None:
        sender = threading.Thread(target=run_emitter, args=(engine, lambda: emit),
                                  kwargs={"stop_event": stop, "poll_interval_s": 0.2},
                                  daemon=True)
        sender.start()
    worker = IngestWorker(settings=settings, engine=engine, datasets=[dataset],
                          source=ConfluentSource(settings), hooks=default_hooks(spec, settings))
    worker.start()
    query = select(func.coalesce(func.sum(partition_checkpoints.c.next_offset), 0)).where(
        partition_checkpoints.c.dataset == name)
    first_poll: float | None = None
    first_cpu = 0.0
    next_check = 0.0
    while True:
        polled, before, before_cpu = worker.stats.polled, time.time(), time.process_time()
        worker.run_once()
        if worker.stats.polled > polled and first_poll is None:
            first_poll, first_cpu = before, before_cpu
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 0.1
            with engine.connect() as conn:
                if int(conn.execute(query).scalar_one()) >= total:
                    break
    done, done_cpu = time.time(), time.process_time()
    stop.set()
    if sender is not None:
        sender.join(10)
    worker.source.close()
    with engine.connect() as conn:
        outbox = openlineage_store.counts(conn)
        failed_sends = sum(r["attempts"] for r in openlineage_store.get_all(conn, dataset=name))
    engine.dispose()
    return {"mode": mode, "records": total, "seconds": done - (first_poll or done),
            "cpu_seconds": done_cpu - first_cpu, "load": os.getloadavg()[0],
            "windows": worker.stats.windows, "outbox": outbox, "failed_sends": failed_sends}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, bootstrap, db_url, topic, window, total = args.child
        print(json.dumps(child(mode, bootstrap, db_url, topic, float(window), int(total))))
        return
    bootstrap = os.environ.get("DQPULSE_KAFKA_BOOTSTRAP", e2e.DEFAULT_KAFKA)
    admin_url = os.environ.get("DQPULSE_DATABASE_URL", e2e.DEFAULT_PG)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "records.jsonl"
        compute.generate(data, args.records)
        values = compute.read_values(data)
    topic = f"bench-ol-{uuid.uuid4().hex[:6]}"
    e2e.create_topic(bootstrap, topic, 1)
    e2e.produce(bootstrap, topic, values, 1)
    db_url = e2e.create_database(admin_url)
    results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    try:
        for _ in range(args.repeat):
            for mode in ("off", "on"):
                proc = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "--child", mode,
                     bootstrap, db_url, topic, str(args.window), str(args.records)],
                    stdout=subprocess.PIPE, text=True)
                out = e2e.collect(proc)
                out["rate"] = out["records"] / out["seconds"]
                out["cpu_rate"] = out["records"] / out["cpu_seconds"]
                results[mode].append(out)
                print(json.dumps(out), flush=True)
    finally:
        e2e.drop_database(admin_url, db_url)
        e2e.delete_topics(bootstrap, [topic])
    for key, clock in (("rate", "wall time"), ("cpu_rate", "CPU time of the process")):
        off = statistics.median(r[key] for r in results["off"])
        on = statistics.median(r[key] for r in results["on"])
        rounds = [b[key] / a[key] for a, b in zip(results["off"], results["on"], strict=True)]
        print(f"records/s by {clock}: off {off:,.0f}  on (receiver down) {on:,.0f}  "
              f"ratio of medians {on / off:.3f}  per-round ratios "
              f"{', '.join(f'{r:.3f}' for r in rounds)} (median {statistics.median(rounds):.3f})")
    print(f"load {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
