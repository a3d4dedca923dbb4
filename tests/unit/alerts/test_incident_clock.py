"""One clock for incidents: the same stream gives the same incidents whether its windows are
finalized live (one per window length of wall time) or in a catch-up (hundreds of windows in
seconds) or at the demo's fast clock. Reopen grace, flapping and auto-resolve are counted in
event-time windows; the wall clock only stamps the rows."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from dqpulse.alerts import incidents as inc
from dqpulse.alerts.anomalies import Anomaly
from dqpulse.store.db import make_engine
from dqpulse.store.tables import incident_events

from .conftest import T0, anomaly, at, channel, dataset, window

WINDOWS = 500


def _stream(seed: int) -> list[list[Anomaly]]:
    """500 windows of a flow metric that breaks in bursts separated by gaps of 1 to 60
    windows: short gaps reopen (and some flap), long ones open new incidents."""
    rng = random.Random(seed)
    per_window: list[list[Anomaly]] = [[] for _ in range(WINDOWS)]
    index = 5
    while index < WINDOWS:
        for k in range(rng.randint(1, 4)):
            if index + k < WINDOWS:
                per_window[index + k] = [anomaly(index + k, score=0.95)]
        index += rng.choice([4, 6, 8, 12, 16, 25, 40, 60])
    return per_window


def _run(engine: Engine, stream: list[list[Anomaly]], clock) -> list[tuple[int, str]]:
    """Finalize every window with ``clock(index)`` as the wall time; returns the incident
    events in order as (incident number in order of opening, action)."""
    ds, channels = dataset(), [channel()]
    for index, anomalies in enumerate(stream):
        start, end = window(index)
        with engine.begin() as conn:
            inc.process_window(conn, dataset=ds, window_start=start, window_end=end,
                               anomalies=anomalies, notifications=channels,
                               public_url="http://dq.example", now=clock(index))
    with engine.connect() as conn:
        rows = conn.execute(select(incident_events.c.incident_id, incident_events.c.action)
                            .order_by(incident_events.c.id)).all()
    numbers: dict[int, int] = {}
    return [(numbers.setdefault(r.incident_id, len(numbers)), r.action) for r in rows]


def _fresh(template: Path, tmp_path: Path, name: str) -> Engine:
    target = tmp_path / f"{name}.db"
    target.write_bytes(template.read_bytes())
    return make_engine(f"sqlite:///{target}")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_catch_up_and_fast_clock_open_reopen_and_flap_like_a_live_run(
        seed: int, _migrated_template: Path, tmp_path: Path) -> None:
    stream = _stream(seed)
    live = _run(_fresh(_migrated_template, tmp_path, "live"), stream, at)
    # a worker catching up: all 500 windows finalized within 5 s, a day later
    catch_up = _run(_fresh(_migrated_template, tmp_path, "catch_up"), stream,
                    lambda i: T0 + timedelta(days=1, milliseconds=10 * i))
    # the demo's fast clock: a window of event time every 0.2 s of wall time
    fast = _run(_fresh(_migrated_template, tmp_path, "fast"), stream,
                lambda i: T0 + timedelta(seconds=0.2 * i))
    actions = [a for _, a in live]
    # the stream is built to exercise the whole lifecycle
    assert {"opened", "reopened", "resolved", "flapping"} <= set(actions), actions
    assert catch_up == live, "catch-up differs from the live run"
    assert fast == live, "fast clock differs from the live run"
