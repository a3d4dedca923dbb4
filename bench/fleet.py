"""Fleet benchmark: many data sets x partitions x fields through real ingest workers.

On the local stack (``deploy/local/stack up``): ``--datasets`` topics of ``--partitions``
partitions, each record with ``--fields`` number fields, ``--records`` records produced
once (event times spread over ``--windows`` windows of ``--window-s``, an hour ago), then
consumed by 1, 2 and 4 ingest worker processes (``--workers``), each run with a fresh
consumer group and a fresh database at Alembic head. Per run:

- records/s: all records / (first checkpointed offset -> every offset checkpointed),
  read from ``partition_checkpoints`` every 0.25 s;
- finalize time per window: each worker runs under a timer around the ingest loop's
  ``finalize_ready`` (one call per data set and pass; time / windows finalized);
- checkpoint bytes (partition state rows at their largest) and the Postgres write rate
  (rows inserted/updated/deleted and transactions per second, this database's counters);
- RSS per worker (largest VmRSS sampled);
- the workers' CPU per record consumed, in all and by thread (the consuming thread,
  librdkafka's threads, the checkpoint writer, the finalizer, native pools such as Arrow's
  JSON reader's, other Python threads: each worker writes its threads' names for this);
- then, one worker on fresh topics of the same shape, live (``--live-s`` at ``--live-rate``
  records/s, event time = now): detection latency = the first time a window's scored
  points are in Postgres minus the window's end (it includes ``lateness``, 2 s), p50/p95,
  and the worker's CPU per record produced meanwhile, by thread (one live run per tree
  with ``--trees``).

Usage: ``eval "$(deploy/local/stack env)"; .venv/bin/python bench/fleet.py``; results as
JSON on stdout and in ``--out``. ``--profile`` records py-spy stacks (collapsed, text) of the
one-worker run into the work folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
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
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import workload as wl  # noqa: E402


def as_worker(timings: str, role: str = "ingest") -> int:
    """Run ``dqpulse worker ingest`` (or ``score``) with a timer around each finalize pass
    (bench only)."""
    if role == "score":
        import workers.score as worker_module
    else:
        try:  # where the ingest loop calls finalize_ready (before issue 16: the worker)
            import dqpulse.ingest.finalizer as worker_module  # type: ignore[no-redef]
        except ImportError:
            import dqpulse.ingest.worker as worker_module  # type: ignore[no-redef]
    from workers.cli import main

    original = worker_module.finalize_ready  # type: ignore[attr-defined]
    out = open(timings, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    def timed(engine: Any, dataset: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.thread_time()
        windows = original(engine, dataset, **kwargs)
        if windows:  # wall time, pid, and this thread's CPU time (what the load leaves out)
            out.write(json.dumps([dataset.name, len(windows), time.perf_counter() - started,
                                  os.getpid(), time.thread_time() - cpu]) + "\n")
        return windows

    worker_module.finalize_ready = timed  # type: ignore[attr-defined]
    if role == "score":
        return main(["worker", "score"])
    _report_gc(Path(f"{timings}.gc-{os.getpid()}"))
    _report_threads(Path(f"{timings}.threads-{os.getpid()}"))
    _report_batches(Path(f"{timings}.batches-{os.getpid()}"))
    return main(["worker", "ingest"])


def _report_batches(path: Path) -> None:
    """Write how many records each metric update of this process took (batches and
    records by power-of-two size class) to ``path`` every second."""
    from dqpulse.aggregate import PartitionAggregator

    original = PartitionAggregator.add
    classes: dict[int, list[int]] = {}

    def add(self: Any, messages: Any, *args: Any, **kwargs: Any) -> Any:
        n = len(messages)
        counts = classes.setdefault(n.bit_length(), [0, 0])
        counts[0] += 1
        counts[1] += n
        return original(self, messages, *args, **kwargs)

    PartitionAggregator.add = add  # type: ignore[method-assign]
    _write_every(path, 1.0, lambda: {k: list(v) for k, v in classes.items()})


def _write_every(path: Path, seconds: float, read: Any) -> None:
    """Replace ``path`` with ``read()`` as JSON every ``seconds``, on a daemon thread (the
    bench's parent reads it while this worker runs; a rename, so never half written)."""
    scratch = path.with_name(path.name + ".tmp")

    def loop() -> None:
        while True:
            scratch.write_text(json.dumps(read()))
            scratch.replace(path)
            time.sleep(seconds)

    threading.Thread(target=loop, name=f"bench-{path.name}", daemon=True).start()


def batch_readings(timings: Path, pid: int) -> dict[int, list[int]]:
    """What :func:`_report_batches` wrote for ``pid`` (empty when nothing yet)."""
    try:
        return {int(k): v for k, v in
                json.loads(Path(f"{timings}.batches-{pid}").read_text()).items()}
    except (OSError, ValueError):
        return {}


def batch_summary(before: dict[int, list[int]], after: dict[int, list[int]]
                  ) -> dict[str, Any]:
    """Metric updates between two readings: how many, records per update, and the share
    of records that went through updates of under 64 records."""
    batches = records = small = 0
    for size_class, (n, r) in after.items():
        n0, r0 = before.get(size_class, [0, 0])
        batches, records = batches + n - n0, records + r - r0
        if size_class <= 6:  # under 64 records
            small += r - r0
    if not batches:
        return {}
    return {"metric_updates": batches, "records_per_update": round(records / batches, 1),
            "share_of_records_in_updates_under_64": round(small / max(records, 1), 3)}


def _report_threads(path: Path) -> None:
    """Write this process's Python threads (native id -> name) to ``path`` every second:
    the OS names them all alike, so the parent needs it to split the CPU by thread."""
    _write_every(path, 1.0, lambda: {str(t.native_id): t.name
                                      for t in threading.enumerate()})


def _report_gc(path: Path) -> None:
    """Write this process's time in the garbage collector to ``path`` every 0.2 s."""
    try:
        from dqpulse.telemetry import GC_TIMER, install_gc_timer
    except ImportError:  # a tree from before the timer: no reading
        return
    install_gc_timer()
    _write_every(path, 0.2, lambda: list(GC_TIMER.totals()))


def gc_readings(timings: Path, pids: list[int]) -> tuple[float, int] | None:
    """(seconds, collections) in the garbage collector of these workers so far."""
    readings = []
    for pid in pids:
        try:
            readings.append(json.loads(Path(f"{timings}.gc-{pid}").read_text()))
        except (OSError, ValueError):
            return None
    return sum(r[0] for r in readings), sum(r[1] for r in readings)


def produce_backlog(bootstrap: str, fleet: wl.Fleet, records: int, windows: int) -> float:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                         "batch.num.messages": 10_000, "queue.buffering.max.messages": 1_000_000,
                         "compression.type": "lz4", "enable.idempotence": True})
    rng = random.Random(11)
    names = fleet.names()
    slots = [(n, p) for n in names for p in range(fleet.partitions)]
    per_slot = records // len(slots)
    # event times ahead of the wall clock (idle ticks move no watermark past them, so no
    # empty windows between the data and now), closed by one record per partition after
    t0 = (int(time.time()) + 7200) // fleet.window_s * fleet.window_s
    span = windows * fleet.window_s
    started = time.perf_counter()
    for k in range(per_slot):
        ts = t0 + span * k / per_slot
        for topic, partition in slots:
            value = fleet.record(rng, ts, k)
            while True:
                try:
                    producer.produce(topic, value=value, partition=partition)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
    for topic, partition in slots:
        producer.produce(topic, value=fleet.record(rng, t0 + span + 3 * fleet.window_s, -1),
                         partition=partition)
    assert producer.flush(300) == 0
    return time.perf_counter() - started


def fleet_env(url: str, bootstrap: str, args: argparse.Namespace, tree: Path,
              extra_env: dict[str, str] | None) -> dict[str, str]:
    """A fleet worker's environment, on a fresh consumer group: a quiet partition counts
    as idle after 3 s (the product's default is 10 s); a run's ``--env`` may set that, as
    any other setting."""
    return wl.worker_env(url, bootstrap, f"fleet-{uuid.uuid4().hex[:8]}",
                         **{"DQPULSE_IDLE_PARTITION_TIMEOUT_S": "3",
                            "DQPULSE_KAFKA_CLIENT": args.client, "PYTHONPATH": str(tree),
                            **(extra_env or {})})


def run_workers(args: argparse.Namespace, fleet: wl.Fleet, n_workers: int, total: int,
                workdir: Path, tree: Path = HERE.parent,
                extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    from sqlalchemy import text

    from dqpulse.store.db import make_engine

    admin = os.environ.get("DQPULSE_DATABASE_URL", wl.DEFAULT_PG)
    bootstrap = os.environ.get("DQPULSE_KAFKA_BOOTSTRAP", wl.DEFAULT_KAFKA)
    url = wl.create_database(admin, "dqpulse_fleet")
    database = url.rsplit("/", 1)[1]
    env = fleet_env(url, bootstrap, args, tree, extra_env)
    wl.apply_model(env, fleet.yaml(), workdir)
    engine = make_engine(url, pool_size=1)
    timings = workdir / f"finalize-{n_workers}-{tree.name}.jsonl"
    timings.unlink(missing_ok=True)
    processes = []
    for i in range(n_workers):
        log = open(workdir / f"worker-{n_workers}-{i}.log", "ab")  # noqa: SIM115
        processes.append(subprocess.Popen(
            [sys.executable, str(tree / "bench" / "fleet.py"), "--as-worker", str(timings)],
            env=env, stdout=log, stderr=subprocess.STDOUT))
    profiler = None
    if args.profile and n_workers == 1:
        profiler = subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "-p",
             str(processes[0].pid), "--format", "raw", "--threads", "-o",
             str(workdir / f"fleet-1worker-{tree.name}.txt"), "-r", "50", "-d",
             str(args.profile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    started = time.monotonic()
    first = consumed_at = None
    done_at_first = 0
    cpu_at_first = cpu_at_consumed = 0.0
    threads_at_first: dict[str, float] = {}
    threads_at_consumed: dict[str, float] = {}
    gc_at_first = gc_at_consumed = None
    rss: dict[int, float] = {}
    state_max = 0
    expected_windows = fleet.datasets * args.windows

    def stats() -> tuple[int, int]:
        with engine.connect() as conn:
            row = conn.execute(text(
                "SELECT sum(xact_commit), 0 FROM pg_stat_database WHERE datname = :d"),
                {"d": database}).one()
            tuples = conn.execute(text(
                "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
                "FROM pg_stat_user_tables")).scalar()
        return int(row[0] or 0), int(tuples or 0)

    base_xact, base_tuples = stats()
    try:
        while time.monotonic() - started < args.timeout_s:
            with engine.connect() as conn:
                done, state = conn.execute(text(
                    "SELECT coalesce(sum(next_offset), 0), "
                    "coalesce(sum(octet_length(state)), 0) FROM partition_checkpoints")).one()
                finalized = conn.execute(text(
                    "SELECT count(*) FROM metric_points WHERE metric = 'volume.records' "
                    "AND field = '' AND value > 0")).scalar()
            state_max = max(state_max, int(state))
            now = time.monotonic() - started
            if first is None and done > 0:
                first, done_at_first = now, int(done)
                cpu_at_first = sum(cpu_seconds(p.pid) for p in processes)
                threads_at_first = thread_cpu_seconds([p.pid for p in processes], timings)
                gc_at_first = gc_readings(timings, [p.pid for p in processes])
            if consumed_at is None and done >= total:
                consumed_at = now
                cpu_at_consumed = sum(cpu_seconds(p.pid) for p in processes)
                threads_at_consumed = thread_cpu_seconds([p.pid for p in processes], timings)
                gc_at_consumed = gc_readings(timings, [p.pid for p in processes])
            for p in processes:
                value = wl.rss_mib(p.pid)
                if value:
                    rss[p.pid] = max(rss.get(p.pid, 0.0), value)
            if consumed_at is not None and finalized >= expected_windows:
                break
            if any(p.poll() is not None for p in processes):
                raise RuntimeError(f"a worker exited; logs in {workdir}")
            time.sleep(0.25)
        finished = time.monotonic() - started
        xact, tuples = stats()
        with engine.connect() as conn:
            points, windows = conn.execute(text(
                "SELECT count(*), count(DISTINCT (dataset, window_start)) "
                "FROM metric_points")).one()
            scored = conn.execute(text("SELECT count(*) FROM detector_states")).scalar()
        result: dict[str, Any] = {
            "workers": n_workers, "records": total,
            "startup_s": round(first or 0, 1),
            "consume_s": round((consumed_at or finished) - (first or 0), 1),
            # from the first checkpoint seen to the last: what was consumed in between
            # None: all of it was in the first checkpoint seen (a backlog too small)
            "records_per_s": round((total - done_at_first)
                                   / max((consumed_at or finished) - (first or 0), 0.25))
            if done_at_first < total else None,
            "all_final_s": round(finished - (first or 0), 1),
            # finalization after the last record was checkpointed (it runs beside the
            # checkpoints since issue 16; before, each checkpoint waited for a pass)
            "finalize_after_consume_s": round(finished - (consumed_at or finished), 1),
            "windows_final_per_s": round(int(finalized or 0) / max(finished - (first or 0),
                                                                   0.25), 2),
            "windows_finalized": int(finalized or 0),
            "checkpoint_state_bytes_max": state_max,
            "checkpoint_bytes_per_partition": round(state_max / (fleet.datasets
                                                                 * fleet.partitions)),
            # the workers' CPU (user + system) from the first checkpoint seen until all
            # records were checkpointed, per record consumed meanwhile: what a record costs
            # with the finalization that ran beside it, whatever the load
            "worker_cpu_s_consuming": round(cpu_at_consumed - cpu_at_first, 1),
            "worker_cpu_us_per_record": round(1e6 * (cpu_at_consumed - cpu_at_first)
                                              / max(total - done_at_first, 1), 1)
            if consumed_at is not None else None,
            # the same by thread (``THREAD_GROUPS``): the consuming thread ("main"),
            # librdkafka's fetch threads, the checkpoint writer, the finalizer, native
            # pools (Arrow's, polars') and other Python threads
            "worker_cpu_us_per_record_by_thread": {
                group: round(1e6 * (threads_at_consumed.get(group, 0.0) - seconds)
                             / max(total - done_at_first, 1), 1)
                for group, seconds in threads_at_first.items()}
            if consumed_at is not None else None,
            # the workers' time in the cyclic garbage collector meanwhile (its share of
            # the CPU above) and how many collections ran
            "worker_gc_s_consuming": round(gc_at_consumed[0] - gc_at_first[0], 2)
            if gc_at_first and gc_at_consumed else None,
            "worker_gc_collections_consuming": gc_at_consumed[1] - gc_at_first[1]
            if gc_at_first and gc_at_consumed else None,
            "pg_rows_written_per_s": round((tuples - base_tuples) / (finished - (first or 0))),
            "pg_transactions_per_s": round((xact - base_xact) / (finished - (first or 0))),
            "rss_mib_per_worker": sorted(round(v) for v in rss.values()),
            "points_per_window": round(points / max(windows, 1)),
            "scored_series": int(scored or 0),
        }
        result.update(finalize_stats(timings))
        return result
    finally:
        for p in processes:
            wl.stop_worker(p)
        if profiler is not None:
            profiler.wait(60)
        engine.dispose()
        wl.drop_database(admin, url)


def _stat_cpu(stat: Path) -> tuple[str, float] | None:
    """(name, user + system CPU seconds) from a ``/proc/.../stat`` file; None when gone."""
    try:
        head, rest = stat.read_text().rsplit(")", 1)
    except OSError:
        return None
    fields = rest.split()
    return head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 when it is gone)."""
    read = _stat_cpu(Path(f"/proc/{pid}/stat"))
    return 0.0 if read is None else read[1]


#: groups of a worker's threads, by the Python thread's name (see ``thread_group``)
THREAD_GROUPS = ("main", "librdkafka", "checkpoint", "finalize", "native", "other")


def thread_group(tid: str, pid: int, os_name: str, python_names: dict[str, str]) -> str:
    """``main`` (the consuming thread), ``librdkafka`` (threads named ``rdk:...``), the
    checkpoint writer, the finalizer, ``native`` (threads Python does not know: Arrow's
    and polars' pools, decoding large batches) and ``other`` Python threads."""
    if tid == str(pid):
        return "main"
    if os_name.startswith("rdk:"):
        return "librdkafka"
    name = python_names.get(tid)
    if name is None:
        return "native"
    if name.startswith("dqpulse-checkpoint"):
        return "checkpoint"
    return "finalize" if name.startswith("dqpulse-finalize") else "other"


def thread_cpu_seconds(pids: list[int], timings: Path | None = None) -> dict[str, float]:
    """User + system CPU seconds so far of the processes' threads, by ``THREAD_GROUPS``
    (without ``timings``, where the workers write their threads' names, all Python
    threads but the main one count as ``native``)."""
    out = dict.fromkeys(THREAD_GROUPS, 0.0)
    for pid in pids:
        python_names: dict[str, str] = {}
        if timings is not None:
            try:
                python_names = json.loads(Path(f"{timings}.threads-{pid}").read_text())
            except (OSError, ValueError):
                pass
        for task in Path(f"/proc/{pid}/task").glob("*"):
            read = _stat_cpu(task / "stat")
            if read is None:
                continue  # the thread ended
            name, seconds = read
            out[thread_group(task.name, pid, name, python_names)] += seconds
    return out


def finalize_stats(timings: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in timings.read_text().splitlines()] \
        if timings.exists() else []
    # a worker's first pass imports and builds its detectors (torch, ...): apart
    firsts: dict[Any, list[Any]] = {}
    for row in rows:
        firsts.setdefault(row[3] if len(row) > 3 else None, row)
    first_pass = [r for r in firsts.values() if len(r) > 3]
    rows = [r for r in rows if not any(r is f for f in first_pass)]
    per_window = [r[2] / r[1] for r in rows for _ in range(r[1])]
    if not per_window:
        return {"finalize_ms_per_window": None}
    per_window.sort()
    cpu = [r[4] / r[1] for r in rows if len(r) > 4 for _ in range(r[1])]
    return {"finalize_ms_per_window": round(1000 * statistics.mean(per_window), 1),
            # the finalize thread's own CPU per window: the load average does not inflate it
            "finalize_cpu_ms_per_window": round(1000 * statistics.mean(cpu), 1) if cpu
            else None,
            "finalize_ms_per_window_p95": round(1000 * per_window[int(0.95 * len(per_window))],
                                                1),
            "finalize_seconds_total": round(sum(r[2] for r in rows + first_pass), 1),
            "finalize_first_pass_s": [round(r[2], 1) for r in first_pass]}


def live_run(args: argparse.Namespace, workdir: Path, tree: Path = HERE.parent,
             extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """One worker on fresh topics (no backlog: the watermark follows the wall clock) with
    ``--live-rate`` records/s, event time = now: detection latency = the first time a
    window's points are in Postgres minus the window's end (it includes lateness, 2 s);
    and the worker's CPU per record produced while measured (at a fixed rate, what a
    record costs a live worker, by thread as in the backlog runs)."""
    from sqlalchemy import text

    from dqpulse.store import checkpoints as checkpoint_store
    from dqpulse.store.db import make_engine

    admin = os.environ.get("DQPULSE_DATABASE_URL", wl.DEFAULT_PG)
    bootstrap = os.environ.get("DQPULSE_KAFKA_BOOTSTRAP", wl.DEFAULT_KAFKA)
    fleet = wl.Fleet(args.datasets, args.partitions, args.fields, args.window_s,
                     prefix=f"flive{uuid.uuid4().hex[:5]}")
    wl.create_topics(bootstrap, fleet.names(), fleet.partitions)
    url = wl.create_database(admin, "dqpulse_fleet")
    env = fleet_env(url, bootstrap, args, tree, extra_env)
    engine = make_engine(url, pool_size=1)
    timings = workdir / f"finalize-live-{tree.name}.jsonl"
    timings.unlink(missing_ok=True)
    producer = wl.SteadyProducer(bootstrap, fleet, args.live_rate)
    produce_started = time.monotonic()
    worker = score = None
    # DQPULSE_INGEST_FINALIZE=false: a score worker process finalizes beside the worker
    split = env.get("DQPULSE_INGEST_FINALIZE", "true").lower() in ("false", "0", "no", "off")
    score_cpu: list[float] = []  # its CPU seconds at the start and the end of the measure
    seen: dict[tuple[str, float], float] = {}
    ready: dict[tuple[str, float], float] = {}  # first poll that saw the window ready
    measured_from: float | None = None  # the first window seen: the worker is up
    rss = 0.0
    cpu_from: tuple[int, dict[str, float]] | None = None
    cpu_to: tuple[int, dict[str, float]] | None = None
    batches_from: dict[int, list[int]] = {}
    batches_to: dict[int, list[int]] = {}
    try:
        wl.apply_model(env, fleet.yaml(), workdir)
        log = open(workdir / "worker-live.log", "ab")  # noqa: SIM115
        worker = subprocess.Popen(
            [sys.executable, str(tree / "bench" / "fleet.py"), "--as-worker", str(timings)],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        if split:
            score = subprocess.Popen(
                [sys.executable, str(tree / "bench" / "fleet.py"), "--as-score", str(timings)],
                env=env, stdout=log, stderr=subprocess.STDOUT)
        producer.start()
        produce_started = time.monotonic()
        deadline = time.monotonic() + args.live_s + 120
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT dataset, window_start FROM metric_points WHERE metric = "
                    "'volume.records' AND field = ''")).all()
                frontiers = checkpoint_store.get_frontiers(conn)
            now = time.time()
            for row in rows:
                seen.setdefault((row.dataset, row.window_start), now)
            for name, frontier in frontiers.items():  # every partition passed end + lateness
                if (frontier.min_watermark is not None
                        and math.isfinite(frontier.min_watermark)
                        and frontier.partitions_seen >= frontier.partition_count):
                    last = int((frontier.min_watermark - wl.LATENESS_S) // fleet.window_s)
                    for k in range(last - 3, last):
                        ready.setdefault((name, float(k * fleet.window_s)), now)
            if measured_from is None and rows:
                measured_from = now
                # at least one window that starts after this and ends 2 windows before
                # the end (the windows the latency counts, below)
                first_start = -(-now // fleet.window_s) * fleet.window_s
                deadline = time.monotonic() + max(args.live_s,
                                                  first_start + 3 * fleet.window_s + 5 - now)
                cpu_from = (producer.sent, thread_cpu_seconds([worker.pid], timings))
                batches_from = batch_readings(timings, worker.pid)
                score_cpu[:] = [cpu_seconds(score.pid)] if score is not None else []
            if measured_from is not None:
                cpu_to = (producer.sent, thread_cpu_seconds([worker.pid], timings))
                batches_to = batch_readings(timings, worker.pid)
                if score is not None:
                    score_cpu[1:] = [cpu_seconds(score.pid)]
            rss = max(rss, wl.rss_mib(worker.pid) or 0.0)
            if worker.poll() is not None or (score is not None and score.poll() is not None):
                raise RuntimeError(f"the live worker exited; logs in {workdir}")
            time.sleep(0.25)
    finally:
        producer.stop_event.set()
        producer.join(60)
        produced_per_s = producer.sent / max(time.monotonic() - produce_started, 1.0) \
            if producer.sent else 0.0
        acked_per_s = producer.acked / max(time.monotonic() - produce_started, 1.0)
        # drop the client: a live one refreshes its topics' metadata, and a broker that
        # auto-creates topics brings the deleted ones back
        del producer.producer
        for process in (worker, score):
            if process is not None:
                wl.stop_worker(process)
        engine.dispose()
        wl.drop_database(admin, url)
        wl.delete_topics(bootstrap, fleet.names())
    end = time.time()
    # windows that started after the worker was up and ended well before the end
    measured = {key: t for key, t in seen.items()
                if measured_from is not None and key[1] >= measured_from
                and key[1] + 3 * fleet.window_s < end}
    latencies = sorted(t - (start + fleet.window_s) for (_, start), t in measured.items())
    # the windows of that range that every data set had: those not in Postgres by the end
    # were still waiting (finalization did not keep up), so the latencies leave them out
    w = fleet.window_s
    starts = ([] if measured_from is None else
              range(int(-(-measured_from // w) * w), int(end - 3 * w), w))
    result: dict[str, Any] = {"rate": args.live_rate, "produced_per_s": round(produced_per_s),
                              "acked_per_s": round(acked_per_s),
                              "window_s": fleet.window_s, "seconds": args.live_s,
                              "windows": len(latencies),
                              "windows_expected": len(starts) * fleet.datasets,
                              "rss_mib": round(rss)}
    if cpu_from is not None and cpu_to is not None and cpu_to[0] > cpu_from[0]:
        produced = cpu_to[0] - cpu_from[0]
        by_thread = {group: 1e6 * (cpu_to[1][group] - seconds) / produced
                     for group, seconds in cpu_from[1].items()}
        result["worker_cpu_us_per_record"] = round(sum(by_thread.values()), 1)
        result["worker_cpu_us_per_record_by_thread"] = {
            group: round(value, 1) for group, value in by_thread.items()}
        if len(score_cpu) == 2:  # the score worker process, apart
            result["score_worker_cpu_us_per_record"] = round(
                1e6 * (score_cpu[1] - score_cpu[0]) / produced, 1)
    summary = batch_summary(batches_from, batches_to)
    result.update(summary)
    if cpu_from is not None and cpu_to is not None and summary.get("metric_updates"):
        # per record the worker aggregated meanwhile (what it kept up with), beside the
        # per record produced above (handed to the producer client: when the box cannot
        # keep up, part of that is still queued in the client at the end)
        aggregated = summary["metric_updates"] * summary["records_per_update"]
        result["worker_cpu_us_per_record_aggregated"] = round(
            1e6 * sum(cpu_to[1][g] - s for g, s in cpu_from[1].items()) / aggregated, 1)
        result["aggregated_per_s"] = round(aggregated / args.live_s)
    if latencies:
        # where the latency goes: window end -> every partition's checkpointed watermark
        # past end + lateness (ready), then ready -> stored (the finalize queue)
        counted = [(key, t) for key, t in measured.items() if key in ready]
        to_ready = sorted(ready[key] - (key[1] + fleet.window_s) for key, _ in counted)
        queued = sorted(t - ready[key] for key, t in counted)
        result.update({
            "latency_p50_s": round(latencies[len(latencies) // 2], 2),
            "latency_p95_s": round(latencies[int(0.95 * len(latencies))], 2),
            "latency_min_s": round(latencies[0], 2),
            "latency_max_s": round(latencies[-1], 2),
            **({"ready_p50_s": round(to_ready[len(to_ready) // 2], 2),
                "ready_p95_s": round(to_ready[int(0.95 * len(to_ready))], 2),
                "queued_p50_s": round(queued[len(queued) // 2], 2),
                "queued_p95_s": round(queued[int(0.95 * len(queued))], 2)} if counted else {}),
            "note": "window end -> first poll (every 0.25 s) that saw the window's points; "
                    "includes lateness (2 s) and the idle-partition timeout where a "
                    "partition had no record after the window"})
    result.update(finalize_stats(timings))
    return result


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def backlog_runs(args: argparse.Namespace, fleet: wl.Fleet, workers: list[int], records: int,
                 workdir: Path) -> dict[str, Any]:
    """Produce ``records`` once onto fresh topics of ``fleet``; consume them with each
    number of ``workers`` and each source tree of ``--trees`` (fresh group and database
    each time), the trees one after the other for each worker count."""
    bootstrap = os.environ.get("DQPULSE_KAFKA_BOOTSTRAP", wl.DEFAULT_KAFKA)
    wl.create_topics(bootstrap, fleet.names(), fleet.partitions)
    slots = fleet.datasets * fleet.partitions
    total = records // slots * slots
    out: dict[str, Any] = {
        "fleet": {"datasets": fleet.datasets, "partitions": fleet.partitions,
                  "fields": fleet.fields, "records": total, "windows": args.windows,
                  "window_s": fleet.window_s, "client": args.client},
        "runs": []}
    try:
        out["produce_s"] = round(produce_backlog(bootstrap, fleet, total, args.windows), 1)
        print(f"fleet: produced {total} records in {out['produce_s']}s", file=sys.stderr)
        for n in workers:
            for label, tree in trees(args):
                extra = tree_env(args, label)
                run = run_workers(args, fleet, n, total + slots, workdir, tree, extra)
                run["load"] = load_average()
                if label:
                    run["tree"] = label
                if extra:
                    run["env"] = extra
                print(json.dumps(run), file=sys.stderr)
                out["runs"].append(run)
    finally:
        wl.delete_topics(bootstrap, fleet.names())
    return out


def trees(args: argparse.Namespace) -> list[tuple[str | None, Path]]:
    """``--trees new=.,old=../base``: (label, source tree) pairs; default this tree."""
    if not args.trees:
        return [(None, HERE.parent)]
    pairs = [item.split("=", 1) for item in args.trees.split(",")]
    return [(label, Path(path).resolve()) for label, path in pairs]


def tree_env(args: argparse.Namespace, label: str | None) -> dict[str, str]:
    """``--env new5:DQPULSE_CHECKPOINT_INTERVAL_S=5``: settings for one labelled run."""
    out: dict[str, str] = {}
    for item in args.env:
        name, _, setting = item.partition(":")
        if name == label:
            key, _, value = setting.partition("=")
            out[key] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--records", type=int, default=1_200_000)
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--window-s", type=int, default=10)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--single-records", type=int, default=0,
                        help="first, this many records on one data set, one worker")
    parser.add_argument("--client", default="confluent")
    parser.add_argument("--live-s", type=float, default=60.0)
    parser.add_argument("--live-rate", type=float, default=10_000.0)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--profile", type=int, default=0,
                        help="seconds of py-spy on the one-worker run (0: none)")
    parser.add_argument("--trees", default="",
                        help="label=path,...: run the workers of each source tree side by "
                             "side on the same records (e.g. new=.,old=../base)")
    parser.add_argument("--env", action="append", default=[],
                        help="LABEL:KEY=VALUE: a worker setting for the --trees run LABEL "
                             "(the same tree may run under two labels, e.g. a=.,b=.)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--as-worker", help=argparse.SUPPRESS)
    parser.add_argument("--as-score", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_worker:
        return as_worker(args.as_worker)
    if args.as_score:
        return as_worker(args.as_score, "score")
    workdir = Path(tempfile.mkdtemp(prefix="dqpulse-fleet-"))
    print(f"fleet: worker logs in {workdir}", file=sys.stderr)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} vCPU shared with the broker, Postgres and other users",
        "load_before": load_average()}
    fleet = wl.Fleet(args.datasets, args.partitions, args.fields, args.window_s,
                     prefix=f"fleet{uuid.uuid4().hex[:5]}")
    if args.single_records > 0:
        # the same shape on one data set, one worker, side by side: what the fleet costs
        single = wl.Fleet(1, args.partitions, args.fields, args.window_s,
                          prefix=f"fleet{uuid.uuid4().hex[:5]}")
        report["single"] = backlog_runs(args, single, [1], args.single_records, workdir)
    counts = [int(x) for x in args.workers.split(",") if int(x) > 0]  # 0: live run only
    if counts:
        report.update(backlog_runs(args, fleet, counts, args.records, workdir))
    if args.live_s > 0:
        report["live"] = []
        for label, tree in trees(args):
            run = live_run(args, workdir, tree, tree_env(args, label))
            run["tree"] = label
            report["live"].append(run)
            print(json.dumps(run), file=sys.stderr)
    report["load_after"] = load_average()
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0

if __name__ == "__main__":
    sys.exit(main())
