"""Issue #16 (d): the notifier's receiver refuses connections for a long outage while
incidents keep opening, resolving and reopening; two notifier processes run
the outbox, one of them is SIGKILLed and started again mid-outage. When the receiver comes
back, every notification queued is delivered exactly once per idempotency key, in each
incident's order, with no help.

The outage lasts ``DQPULSE_CHAOS_OUTAGE_S`` seconds (45 in the test command) with backoffs
scaled down (base 0.2 s, cap 0.8 s): dozens of retry periods of the oldest notifications,
more than a real outage of several minutes makes with the defaults (base 5 s, cap 600 s).
Kafka is not involved: the incidents come from ``process_window``, the call the finalizer
makes in each window's transaction; Postgres is not faulted either, so this
test uses a throw-away database of the shared stack, not the private one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from dqpulse.alerts import incidents as inc
from dqpulse.alerts.anomalies import Anomaly
from dqpulse.spec import load_spec
from dqpulse.store.db import make_engine
from dqpulse.store.tables import notification_outbox
from tests.chaos.conftest import ROOT
from tests.chaos.harness import say
from tests.integration.helpers import wait_until
from tests.integration.receivers import webhook_receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

SECRET = "chaos-outage-secret"
PUBLIC = "http://dq.test"
DATASETS = ["orders", "payments", "users", "events"]
WINDOW_S = 10


def _notifier(config: Path, db_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CHAOS_SECRET=SECRET, PYTHONPATH=str(ROOT),
               DQPULSE_DATABASE_URL=db_url, DQPULSE_LOG_LEVEL="INFO",
               DQPULSE_WORKER_METRICS_PORT="0")
    with log.open("ab") as out:
        # the lease (10 s) is well above the HTTP timeout (2 s): a live notifier's claim
        # never expires under it, a SIGKILLed one's is taken over after 10 s
        return subprocess.Popen(
            [sys.executable, "-m", "workers.notify", "--database-url", db_url,
             "--poll-interval", "0.1", "--base-backoff", "0.2", "--max-backoff", "0.8",
             "--max-attempts", "100000", "--lease", "10", "--timeout", "2"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _exited(process: subprocess.Popen[bytes], log: Path) -> str:
    """The failure message: the exit status and the log's tail (pytest's temporary folders
    are pruned, the log may be gone by the time someone looks)."""
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
    return f"a notifier exited with {process.returncode}; {log}:\n{tail}"


def _rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(notification_outbox).order_by(notification_outbox.c.id)).mappings()]


def test_receiver_refusing_while_incidents_open_and_resolve(fresh_db: str,
                                                            tmp_path: Path) -> None:
    outage_s = float(os.environ.get("DQPULSE_CHAOS_OUTAGE_S", "45"))
    rng = random.Random("notifier-outage")
    receiver = webhook_receiver(SECRET)
    receiver.down()  # connection refused from the start
    config = tmp_path / "dqpulse.yaml"
    lines = ["datasets:"]
    for name in DATASETS:
        lines += [f"  - name: {name}", f"    topic: {name}", f"    window: {WINDOW_S}s",
                  "    owner: payments"]
    lines += ["notifications:", "  - name: hook", "    type: webhook",
              f"    url: {receiver.url}/dq", "    secret: ${CHAOS_SECRET}",
              "    rate_limit_per_minute: 100000"]
    config.write_text("\n".join(lines) + "\n")
    spec = load_spec(config, environ={"CHAOS_SECRET": SECRET})
    db_url = fresh_db
    engine = make_engine(db_url, pool_size=1)
    subprocess.run([sys.executable, "-m", "workers.cli", "apply", "-f", str(config)],
                   cwd=ROOT, env=dict(os.environ, CHAOS_SECRET=SECRET, PYTHONPATH=str(ROOT),
                                      DQPULSE_DATABASE_URL=db_url),
                   check=True, capture_output=True, timeout=120)
    options = inc.IncidentOptions(auto_resolve_windows=2, reopen_grace_windows=3)
    log = tmp_path / "notifier.log"
    notifiers = [_notifier(config, db_url, log), _notifier(config, db_url, log)]
    t0 = time.time() // WINDOW_S * WINDOW_S - 86_400
    window = 0
    transitions: Counter[str] = Counter()
    try:
        started = time.monotonic()
        killed = False
        while time.monotonic() - started < outage_s:
            start = t0 + WINDOW_S * window
            window += 1
            for name in DATASETS:
                score = rng.choice([None, None, 0.93, 0.999]) if rng.random() < 0.5 else None
                anomalies = [] if score is None else [Anomaly(
                    name, "volume", "volume.records", "", start, start + WINDOW_S, score,
                    None, {"observed": 1.0, "expected_low": 90.0, "expected_high": 110.0,
                           "direction": "down"})]
                with engine.begin() as conn:
                    outcome = inc.process_window(
                        conn, dataset=spec.dataset(name), window_start=start,
                        window_end=start + WINDOW_S, anomalies=anomalies,
                        notifications=list(spec.notifications), public_url=PUBLIC,
                        options=options)
                for kind in ("opened", "reopened", "escalated", "resolved"):
                    transitions[kind] += len(getattr(outcome, kind))
            if not killed and time.monotonic() - started > outage_s / 2:
                say("SIGKILL a notifier mid-outage, start another")
                notifiers[0].send_signal(signal.SIGKILL)
                notifiers[0].wait(10)
                notifiers[0] = _notifier(config, db_url, log)
                killed = True
            for process in notifiers:
                assert process.poll() is None, _exited(process, log)
            time.sleep(0.5)
        rows = _rows(engine)
        say(f"outage over: {window} windows, {dict(transitions)}, {len(rows)} queued, "
            f"max attempts {max((r['attempts'] for r in rows), default=0)}")
        assert receiver.requests == []
        assert transitions["opened"] >= 3 and transitions["resolved"] >= 3, transitions
        assert all(r["status"] == "pending" for r in rows), Counter(r["status"] for r in rows)
        receiver.up()  # same port
        wait_until(lambda: all(r["status"] == "delivered" for r in _rows(engine)), 120,
                   interval_s=0.2, message=f"every notification delivered (log: {log})")
        time.sleep(1.0)  # nothing more may arrive
        for process in notifiers:
            assert process.poll() is None, _exited(process, log)
    finally:
        for process in notifiers:
            if process.poll() is None:
                process.terminate()
        for process in notifiers:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        receiver.down()
        rows = _rows(engine)
        engine.dispose()

    assert receiver.rejected() == [], [r.problems for r in receiver.rejected()]
    keys = receiver.accepted_keys()
    assert set(keys) == {r["idempotency_key"] for r in rows}
    assert all(count == 1 for count in keys.values()), keys  # exactly once per key
    assert len(receiver.requests) == len(rows)  # none during the outage, none twice
    received = [r.key for r in receiver.accepted()]
    for incident_id in {r["incident_id"] for r in rows}:
        expected = [r["idempotency_key"] for r in rows if r["incident_id"] == incident_id]
        assert [k for k in received if k.startswith(f"{incident_id}:")] == expected
    assert max(r["attempts"] for r in rows) >= 20, "the outage spanned many retry periods"
