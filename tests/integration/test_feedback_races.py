"""A human verdict on an incident (what the API's feedback route runs) while a finalize pass
of its dataset is scoring, on a real Postgres.

A pass locks the dataset's detector states (it writes back what it scored), then its
incidents (the window's alerts); a verdict locks its incident, then the detector states
(what it teaches). Crosswise, the two deadlocked: Postgres aborted one, and the API
answered 500 to "mark false positive" while the break went on, the moment users give
verdicts. A verdict now waits for the pass (its lock) first."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from dqpulse.config import Settings
from dqpulse.errors import ConflictError
from dqpulse.finalize import FinalizedWindow
from dqpulse.finalize.scoring import ScoringHook
from dqpulse.records import MetricPoint
from dqpulse.services.incidents import feedback
from dqpulse.spec import parse_spec
from dqpulse.store import datasets as dataset_store
from dqpulse.store import detector_states as state_store
from dqpulse.store import incidents as incident_store
from dqpulse.store import metrics as metric_store
from dqpulse.store.db import advisory_lock, finalize_lock, make_engine

pytestmark = pytest.mark.integration

SPEC = parse_spec("""
datasets:
  - {name: orders, topic: orders, window: 1m}
""")
SERIES = "completeness.null_ratio|amount"


def _window(i: int, null_ratio: float) -> FinalizedWindow:
    start = 1_700_000_000.0 + 60 * i
    return FinalizedWindow("orders", start, start + 60,
                           [MetricPoint("completeness.null_ratio", null_ratio, field="amount")])


@pytest.fixture
def engine(fresh_db: str) -> Iterator[Engine]:
    """A database with ``orders`` declared and one open incident: its nulls jumped."""
    engine = make_engine(fresh_db)
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=SPEC)
    hook = ScoringHook(SPEC, Settings())
    with engine.begin() as conn:
        for i in range(42):
            window = _window(i, 0.01 + 0.002 * math.sin(i) if i < 40 else 0.3)
            metric_store.create_window(conn, dataset="orders", window_start=window.window_start,
                                       window_end=window.window_end, points=window.points)
            hook(conn, SPEC.datasets[0], window)
    yield engine
    engine.dispose()


def _open_incident(engine: Engine) -> int:
    with engine.connect() as conn:
        (incident,) = incident_store.get_all_active(conn, dataset="orders", for_update=False)
    return int(incident["id"])


def test_a_verdict_during_a_finalize_pass_waits_for_it_and_teaches_after_it(engine):
    incident_id = _open_incident(engine)
    hook = ScoringHook(SPEC, Settings())
    window = _window(42, 0.3)  # the break goes on
    verdict: dict[str, object] = {}

    def give_verdict() -> None:
        try:
            with engine.begin() as conn:
                verdict["taught"] = feedback(conn, incident_id=incident_id,
                                             verdict="false_positive", comment=None,
                                             actor="test")[1]
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            verdict["error"] = exc

    with engine.connect() as pass_conn:
        with pass_conn.begin():  # a finalize pass, as finalize.finalize_ready runs it
            assert advisory_lock(pass_conn, finalize_lock("orders"))
            metric_store.create_window(pass_conn, dataset="orders",
                                       window_start=window.window_start,
                                       window_end=window.window_end, points=window.points)
            hook.before_write(pass_conn, SPEC.datasets[0], window)  # states written
            passed_state = state_store.get_all(pass_conn, dataset="orders")[SERIES]
            thread = threading.Thread(target=give_verdict, daemon=True)
            thread.start()
            # the verdict starts and waits: for the pass's lock now; before, it locked
            # the incident and waited for the state rows the pass wrote
            time.sleep(1.0)
            hook(pass_conn, SPEC.datasets[0], window)  # the window's alerts: its incident
        thread.join(60)
    assert not thread.is_alive()
    assert "error" not in verdict, verdict.get("error")
    assert verdict["taught"].series == 1  # type: ignore[attr-defined]
    with engine.connect() as conn:
        resolved = incident_store.get_or_raise(conn, incident_id=incident_id)
        taught_state = state_store.get_all(conn, dataset="orders")[SERIES]
    assert resolved["feedback"] == "false_positive" and resolved["status"] == "resolved"
    # taught on top of the pass's state, and kept: the pass did not write over it
    assert taught_state != passed_state


def test_a_verdict_that_a_long_pass_keeps_waiting_is_refused_and_records_nothing(engine):
    incident_id = _open_incident(engine)
    with engine.connect() as pass_conn, pass_conn.begin():
        assert advisory_lock(pass_conn, finalize_lock("orders"))
        started = time.monotonic()
        with pytest.raises(ConflictError, match="finalize pass of dataset 'orders'"), \
                engine.begin() as conn:
            feedback(conn, incident_id=incident_id, verdict="false_positive", comment=None,
                     actor="test", lock_wait_s=0.5)
        assert 0.5 <= time.monotonic() - started < 5
    with engine.connect() as conn:
        untouched = incident_store.get_or_raise(conn, incident_id=incident_id)
    assert untouched["feedback"] is None and untouched["status"] == "open"
