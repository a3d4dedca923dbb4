"""A window whose finalization kills the process (the out-of-memory killer, a crash in
native code) raises nothing the process could count: before, it was tried again after
every restart, for ever. Now each pass is noted in the database before it begins, a pass
that never ended counts as a failed try across restarts, and the window moves along the
ladder (alone, unalerted, unscored) while the data set's other windows go on. Real
processes killed with SIGKILL, on Postgres (session advisory lock) and SQLite."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from sqlalchemy import insert, select

from dqpulse.aggregate import PartitionAggregator
from dqpulse.doctor import window_checks
from dqpulse.records import RawMessage
from dqpulse.spec import DatasetSpec
from dqpulse.store import checkpoints
from dqpulse.store import metrics as metric_store
from dqpulse.store.db import make_engine, upgrade_to_head
from dqpulse.store.tables import dataset_partitions, window_partials

SPEC = DatasetSpec(name="crash", topic="crash", event_time="ts", window=60, lateness=0)
BASE = 1_800_000_000.0
WINDOWS = [BASE + 60 * k for k in range(6)]
RECORDS = [10, 11, 12, 13, 14, 15]  # per window: which one was written is visible

# one worker process: finalize passes until nothing is ready; the hook kills the process
# whenever it runs for the crashing window (in any mode that runs hooks)
CHILD = """
import json, logging, os, signal, sys
from dqpulse.finalize import finalize_ready, windows_ready
from dqpulse.finalize.failures import WindowFailures
from dqpulse.spec import DatasetSpec
from dqpulse.store.db import make_engine
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
url, crash_at, calls = sys.argv[1], float(sys.argv[2]), sys.argv[3]
spec = DatasetSpec(name="crash", topic="crash", event_time="ts", window=60, lateness=0)

def hook(_conn, _dataset, window):
    with open(calls, "a") as log:
        log.write(json.dumps([window.window_start, window.alerting]) + "\\n")
    if window.window_start == crash_at:
        os.kill(os.getpid(), signal.SIGKILL)

engine = make_engine(url)
failures = WindowFailures(max_attempts=2)
for _ in range(50):
    if not windows_ready(engine, [spec])["crash"]:
        break
    finalize_ready(engine, spec, now=%r, hooks=[hook], failures=failures)
""" % (BASE + 3600.0)


def _partial(records: int, start: float) -> bytes:
    aggregator = PartitionAggregator(SPEC, 0)
    aggregator.add([RawMessage("crash", 0, i, int(start * 1000),
                               orjson.dumps({"ts": start + 1, "amount": float(i)}))
                    for i in range(records)], now=start + 100.0)
    return aggregator.snapshot_window(start)


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("fresh_db"))
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    upgrade_to_head(url)
    return url


def test_a_window_that_kills_its_process_is_degraded_after_restarts_not_retried_for_ever(
        database_url, tmp_path):
    engine = make_engine(database_url)
    with engine.begin() as conn:
        checkpoints.set_partition_count(conn, dataset="crash", partition_count=1)
        checkpoints.save(conn, dataset="crash", partition=0, loaded_version=None,
                         next_offset=100, watermark=WINDOWS[-1] + 60.0,
                         last_record_at=WINDOWS[-1] + 1, high_watermark_offset=100,
                         state=b"", closed=[], owner_id="test")
        conn.execute(insert(window_partials), [
            {"dataset": "crash", "partition": 0, "window_start": start,
             "state": _partial(records, start)} for start, records in zip(WINDOWS, RECORDS)])
    crash_at, calls = WINDOWS[2], tmp_path / "calls.jsonl"

    runs, doctor = [], {}
    for k in range(6):
        runs.append(subprocess.run([sys.executable, "-c", CHILD, database_url, str(crash_at),
                                    str(calls)], capture_output=True, text=True, timeout=120))
        if k in (1, 2, 5):  # `dqpulse doctor`'s line between the restarts
            [doctor[k]] = [c for c in window_checks(engine, None, 5.0) if c.name == "finalize"]
    codes = [run.returncode for run in runs]
    # killed while finalizing it: a pass of all windows, then (1 pass that never ended)
    # alone, then (2) without alerting; then (3 failed tries of 2) without its hooks,
    # and the windows after it one per pass (the dead pass covered them)
    assert codes == [-signal.SIGKILL] * 4 + [0, 0], [run.stderr[-2000:] for run in runs]
    seen = [tuple(json.loads(line)) for line in calls.read_text().splitlines()]
    assert [alerting for at, alerting in seen if at == crash_at] == [True, True, True, False]
    # the first pass was rolled back with the crash: its first windows were finalized once
    # more, alone (one pass each), and the windows after the crashing one once each
    assert [at for at, _ in seen if at != crash_at] == [
        WINDOWS[0], WINDOWS[1], WINDOWS[0], WINDOWS[1], WINDOWS[3], WINDOWS[4], WINDOWS[5]]
    assert "1 finalize pass of crash beginning at the window at 2027-01-15T08:02:00Z " \
           "never ended" in runs[2].stderr
    assert "is finalized without scoring or alerting (3 failed tries)" in runs[4].stderr

    # after the 2nd run one pass had died at the crashing window (its 1st was counted at
    # the first window); after the 3rd, two; once it went through, none
    assert doctor[1].ok and "no pass retried" in doctor[1].detail
    assert not doctor[2].ok
    assert "crash: 1 at the window at 2027-01-15T08:02:00Z" in doctor[2].detail
    assert doctor[5].ok

    with engine.connect() as conn:
        volume = {p["window_start"]: p["value"] for p in metric_store.get_points(
            conn, dataset="crash", metric="volume.records", limit=100)}
        left = conn.execute(select(window_partials.c.window_start)).scalars().all()
        progress = conn.execute(select(dataset_partitions)).mappings().one()
    assert volume == dict(zip(WINDOWS, map(float, RECORDS)))  # each window once
    assert left == []
    assert progress["finalized_until"] == WINDOWS[-1] + 60
    assert (progress["finalize_try_window"], progress["finalize_tries"]) == (None, 0)
    engine.dispose()
