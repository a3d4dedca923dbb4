"""The scoring hook: detector state lives in the database, survives restarts, and takes
human feedback (SQLite through the real migrations; no mocks)."""

from __future__ import annotations

import importlib.util
import math

import pytest
from sqlalchemy import select

from dqpulse.config import Settings
from dqpulse.detectors.base import Detector
from dqpulse.finalize import FinalizedWindow
from dqpulse.finalize.scoring import ScoringHook
from dqpulse.finalize.watch import AUTOENCODER_SERIES
from dqpulse.records import MetricPoint
from dqpulse.services.incidents import feedback, teach_series
from dqpulse.spec import parse_spec
from dqpulse.store import datasets as dataset_store
from dqpulse.store import detector_states as state_store
from dqpulse.store import incidents as incident_store
from dqpulse.store import metrics as metric_store
from dqpulse.store.db import make_engine, upgrade_to_head
from dqpulse.store.tables import detector_states, incidents
from dqpulse.telemetry import Telemetry

SPEC = parse_spec("""
datasets:
  - {name: orders, topic: orders, window: 1m}
""")


def _window(i: int, null_ratio: float) -> FinalizedWindow:
    start = 1_700_000_000.0 + 60 * i
    return FinalizedWindow("orders", start, start + 60, [
        MetricPoint("completeness.null_ratio", null_ratio, field="amount"),
        MetricPoint("distribution.p99", 5.0, field="amount"),  # not a detected series
    ])


def _run(engine, hook, windows):
    with engine.begin() as conn:
        for window in windows:
            metric_store.create_window(conn, dataset="orders", window_start=window.window_start,
                                       window_end=window.window_end, points=window.points)
            hook(conn, SPEC.datasets[0], window)


def _scores(engine):
    with engine.connect() as conn:
        return [(p["score"], p["anomalous"]) for p in metric_store.get_points(
            conn, dataset="orders", metric="completeness.null_ratio", field="amount")]


def _noise(i: int) -> float:
    return 0.01 + 0.002 * math.sin(i)


def test_detector_state_survives_a_restart_and_gives_the_same_scores(engine, tmp_path):
    windows = [_window(i, _noise(i)) for i in range(60)] + [_window(60, 0.4)]
    _run(engine, ScoringHook(SPEC, Settings()), windows[:30])
    _run(engine, ScoringHook(SPEC, Settings()), windows[30:])  # a new process: state from DB
    restarted = _scores(engine)

    url2 = f"sqlite:///{tmp_path / 'q.db'}"
    upgrade_to_head(url2)
    other = make_engine(url2)
    _run(other, ScoringHook(SPEC, Settings()), windows)  # never restarted
    assert _scores(other) == restarted
    other.dispose()
    assert restarted[-1][1] is True  # the null spike is an anomaly
    assert not any(anomalous for _score, anomalous in restarted[25:-1])
    with engine.connect() as conn:
        series = {row.series for row in conn.execute(select(detector_states.c.series))}
        opened = conn.execute(select(incidents.c.kind, incidents.c.field)).all()
    expected = {"completeness.null_ratio|amount"}  # p99 is history only
    if importlib.util.find_spec("torch") is not None:
        expected.add("anomaly.autoencoder|")  # the dataset's autoencoder, weights included
    assert series == expected
    assert [(k, f) for k, f in opened] == [("completeness", "amount")]


def test_false_positive_feedback_lowers_sensitivity_for_that_series(engine):
    windows = [_window(i, _noise(i)) for i in range(40)]
    _run(engine, ScoringHook(SPEC, Settings()), windows)
    probe = _window(40, 0.05)
    _run(engine, ScoringHook(SPEC, Settings()), [probe])
    before = _scores(engine)[-1][0]
    with engine.begin() as conn:
        taught = teach_series(conn, SPEC.datasets[0], verdict="false_positive",
                              alerts=[("completeness.null_ratio", "amount",
                                       probe.window_start)])
    assert taught.series == 1 and taught.adoptions_undone == ()
    again = _window(41, 0.05)
    _run(engine, ScoringHook(SPEC, Settings()), [again])
    after = _scores(engine)[-1][0]
    assert before > 0 and after < before


SHIFT_SPEC = parse_spec("""
datasets:
  - {name: orders, topic: orders, window: 5m}
""")


def _mean_window(i: int, level: float) -> FinalizedWindow:
    start = 1_700_000_000.0 + 300 * i
    value = level + 2.0 * math.sin(i * 1.7) + (i * 7919 % 7) * 0.3
    return FinalizedWindow("orders", start, start + 300,
                           [MetricPoint("distribution.mean", value, field="amount")])


def test_a_shift_confirmed_after_its_incident_resolved_opens_a_new_one(engine):
    """A shift of a field's mean is adopted as the new normal and its incident resolves;
    a user confirms that incident afterwards (through the service the API calls): the
    adoption is undone in the stored detector state, and the next windows, still at the
    new level, alert again and open a new incident."""
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=SHIFT_SPEC)
    spec = SHIFT_SPEC.datasets[0]

    def run(first: int, last: int, level_from: int) -> None:
        with engine.begin() as conn:
            hook = ScoringHook(SHIFT_SPEC, Settings())
            for i in range(first, last):
                window = _mean_window(i, 140.0 if i >= level_from else 100.0)
                metric_store.create_window(conn, dataset="orders",
                                           window_start=window.window_start,
                                           window_end=window.window_end, points=window.points)
                hook(conn, spec, window)

    def alerting(first: int) -> int:
        with engine.connect() as conn:
            points = metric_store.get_points(conn, dataset="orders", metric="distribution.mean",
                                             field="amount", limit=100_000)
        start = 1_700_000_000.0 + 300 * first
        return sum(p["anomalous"] for p in points if p["window_start"] >= start)

    run(0, 700, level_from=600)  # two days, then +40 % from window 600 on
    with engine.connect() as conn:
        (shift,) = incident_store.get_page(conn, dataset="orders", limit=10)
    assert shift["status"] == "resolved"  # adopted: the detector stopped alerting
    assert 1 <= alerting(600) <= 30 and alerting(640) == 0
    with engine.begin() as conn:
        target, taught = feedback(conn, incident_id=int(shift["id"]), verdict="confirmed",
                                  comment="a bad deploy", actor="test")
    assert target.alerts
    assert taught.series == 1 and taught.adoptions_undone == (("distribution.mean", "amount"),)
    with engine.begin() as conn:  # said again: nothing more to take back
        _, again = feedback(conn, incident_id=int(shift["id"]), verdict="confirmed",
                            comment=None, actor="test")
    assert again.series == 1 and again.adoptions_undone == ()
    run(700, 720, level_from=600)
    assert alerting(700) == 20  # the old normal again: every window at the new level
    with engine.connect() as conn:
        page = incident_store.get_page(conn, dataset="orders", limit=10)
    assert len(page) == 2 and any(i["status"] != "resolved" for i in page)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the [ml] extra")
def test_autoencoder_scores_each_window_and_attributes_an_unusual_one(engine):
    windows = [_window(i, _noise(i)) for i in range(120)] + [_window(120, 0.6)]
    _run(engine, ScoringHook(SPEC, Settings()), windows)
    with engine.connect() as conn:
        points = metric_store.get_points(conn, dataset="orders", metric="anomaly.autoencoder")
    assert len(points) == len(windows)
    last = points[-1]
    assert last["score"] > max(p["score"] for p in points[80:-1])
    assert last["explanation"]["top_feature"] == "completeness.null_ratio|amount"
    with engine.connect() as conn:
        kinds = [row.kind for row in conn.execute(select(incidents.c.kind))]
    assert kinds == ["completeness"]  # the autoencoder scores; by default it does not alert


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the [ml] extra")
def test_a_failing_autoencoder_skips_its_point_and_starts_over_not_the_window(engine):
    telemetry = Telemetry()
    hook = ScoringHook(SPEC, Settings(), telemetry)
    _run(engine, hook, [_window(i, _noise(i)) for i in range(5)])
    with engine.begin() as conn:  # a state that cannot be read (written by a broken version)
        state_store.save_all(conn, dataset="orders", states={AUTOENCODER_SERIES: b"garbage"},
                             known={AUTOENCODER_SERIES})
    _run(engine, ScoringHook(SPEC, Settings(), telemetry), [_window(5, _noise(5)),
                                                            _window(6, _noise(6))])
    with engine.connect() as conn:
        encoded = metric_store.get_points(conn, dataset="orders", metric="anomaly.autoencoder")
        state = state_store.get_all(conn, dataset="orders")[AUTOENCODER_SERIES]
    assert len(_scores(engine)) == 7  # every window scored and written
    assert len(encoded) == 6  # all but the window whose autoencoder failed
    assert Detector.from_bytes(state).n_learned == 1  # started over, then learned window 6
    failures = telemetry.registry.get_sample_value(
        "dqpulse_detector_errors_total", {"dataset": "orders", "metric": "anomaly.autoencoder"})
    assert failures == 1.0
