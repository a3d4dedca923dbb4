"""Finalize the windows of a dataset that every partition has passed.

A window is final when every partition of the dataset's topic has a watermark past the
window's end plus the allowed lateness. Finalizing a window reads and deletes its
per-partition partials, merges them, writes the metric points, advances
``finalized_until`` and runs the window hooks (scoring, alerting), all in one
transaction under a per-dataset advisory lock, so a window is finalized exactly once
even with several workers. A worker's passes are noted in the database before they begin
(:mod:`dqpulse.finalize.failures`: a window whose finalization kills the process must not
be retried for ever), under a session-scoped lock that spans the note and the pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sqlalchemy import Connection, Engine

from dqpulse.finalize.export import export_window
from dqpulse.finalize.failures import Mode, WindowFailed, WindowFailures
from dqpulse.jsonsafe import json_safe_object
from dqpulse.metrics import (
    FinalizeContext,
    WindowState,
    diff_schema,
    finalize_window,
    merge_partials,
)
from dqpulse.metrics.samples import SamplesState
from dqpulse.metrics.segments import SegmentState
from dqpulse.records import MetricPoint, stored_field, with_stored_fields
from dqpulse.spec import DatasetSpec
from dqpulse.store import checkpoints, schemas
from dqpulse.store import metrics as metric_store
from dqpulse.store.db import (
    advisory_lock,
    finalize_lock,
    is_transient,
    relaxed_commit,
    release_session_lock,
    session_advisory_lock,
)
from dqpulse.telemetry import Telemetry

if TYPE_CHECKING:  # typing only: an ingest worker without hooks never loads the detectors
    from dqpulse.detectors.scoring import ScoredPoint

MAX_WINDOWS_PER_PASS = 500


#: metrics whose alerts carry failing samples (dqpulse.metrics.samples)
SAMPLED_METRICS = frozenset({"validity.violation_ratio", "completeness.null_ratio",
                             "completeness.required_violations", "schema.type_changes",
                             "uniqueness.duplicate_ratio"})


@dataclass(slots=True)
class FinalizedWindow:
    dataset: str
    window_start: float
    window_end: float
    points: list[MetricPoint]
    #: failing samples per (metric, field) of the points that have any
    samples: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    #: segment states of the window and of the reference before it (root cause)
    segments: SegmentState | None = None
    segment_reference: SegmentState | None = None
    #: the window's scored points, when a hook scored them before the write (see
    #: :class:`ScoresBeforeWrite`): the points are then written once, with their scores
    scored: list[ScoredPoint] | None = None
    #: points a hook adds before the write (the autoencoder's), written with the others
    extra_points: list[MetricPoint] = field(default_factory=list)
    #: False when the window is finalized without alerting (it failed every try with it:
    #: dqpulse.finalize.failures): the scoring hook scores it but opens no incident
    alerting: bool = True


def samples_of(state: WindowState, points: list[MetricPoint]
               ) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The failing samples of the window's points that are not clean (value > 0)."""
    family = state.families.get("samples")
    if not isinstance(family, SamplesState):
        return {}
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for point in points:
        if point.metric in SAMPLED_METRICS and point.value:
            found = family.for_series(point.metric, point.field, point.extra)
            if found:
                out[(point.metric, point.field)] = found
    return out


# A hook sees the finalized window inside the finalize transaction (scoring, alerting),
# after its points are written.
WindowHook = Callable[[Connection, DatasetSpec, FinalizedWindow], None]


@runtime_checkable
class ScoresBeforeWrite(Protocol):
    """A hook that also runs before the window's points are written (the scoring hook):
    it sets ``window.scored`` (and may add ``window.extra_points``), so that each point is
    inserted once with its score instead of inserted, then updated."""

    def before_write(self, conn: Connection, dataset: DatasetSpec,
                     window: FinalizedWindow) -> None: ...


def scores_of(window: FinalizedWindow) -> metric_store.Scores | None:
    """The (score, anomalous, explanation) of the window's scored points, by series."""
    if window.scored is None:
        return None
    return {(p.metric, p.field): (p.score, p.anomalous, json_safe_object(p.explanation))
            for p in window.scored}


def windows_ready(engine: Engine, datasets: Sequence[DatasetSpec]) -> dict[str, int]:
    """How many windows of each dataset every partition has passed and are not finalized
    yet, in one query without locks: a finalize pass visits only the datasets with some."""
    with engine.connect() as conn:
        frontiers = checkpoints.get_frontiers(conn)
    return {d.name: checkpoints.ready_windows(frontiers.get(d.name), window=d.window,
                                              lateness=d.lateness) for d in datasets}


def finalize_ready(
    engine: Engine,
    dataset: DatasetSpec,
    *,
    now: float | None = None,
    hooks: Sequence[WindowHook] = (),
    telemetry: Telemetry | None = None,
    should_stop: Callable[[], bool] | None = None,
    failures: WindowFailures | None = None,
) -> list[FinalizedWindow]:
    """Finalize every window of ``dataset`` that all partitions have passed; when
    ``should_stop()`` turns true (the process is stopping), commit the windows done so far
    and leave the rest to the next pass.

    A window whose finalization raises something not transient raises
    :class:`~dqpulse.finalize.failures.WindowFailed` (from the error), and the pass rolls
    back. With ``failures`` (the process's record of them), the next pass commits the
    windows before that one, then tries it alone, then without alerting, then without
    hooks, then skips it; and the pass is noted in the database before it begins, so that
    one that kills the process counts too (:mod:`dqpulse.finalize.failures`)."""
    now = time.time() if now is None else now
    lock = finalize_lock(dataset.name)
    if failures is None:
        with engine.begin() as conn:
            if not advisory_lock(conn, lock):
                return []
            done, _ = _pass(conn, dataset, now, hooks, should_stop, None)
    else:
        with engine.connect() as conn:
            taken = False
            try:
                # the session lock spans the note (committed first) and the pass
                with conn.begin():
                    taken = session_advisory_lock(conn, lock)
                    if not taken:
                        return []
                    relaxed_commit(conn)  # a note lost with Postgres itself is no harm
                    tried = _begin_try(conn, dataset, failures)
                with conn.begin():
                    done, outcomes = _pass(conn, dataset, now, hooks, should_stop, failures)
                    if tried is not None and not outcomes:  # none ready, or stopped
                        checkpoints.note_finalize_try(conn, dataset=dataset.name,
                                                      window_start=tried[0],
                                                      tries=tried[1] - 1)
                        failures.end_untried(dataset.name, *tried)
            finally:
                if taken:
                    release_session_lock(conn, lock)
        for at, mode in outcomes:
            failures.finalized(dataset.name, at, mode)
    if telemetry is not None:
        for window in done:
            export_window(telemetry, window.dataset, window.points)
    return done


def _first_ready(conn: Connection, dataset: DatasetSpec
                 ) -> tuple[checkpoints.DatasetProgress, float, float] | None:
    """(progress, first window to finalize, end of the final time) when one is ready."""
    progress = checkpoints.get_progress(conn, dataset=dataset.name)
    if progress is None or progress.min_watermark is None:
        return None
    if progress.partitions_seen < progress.partition_count:
        return None  # some partition was never checkpointed: its data may be pending
    final_until = progress.min_watermark - dataset.lateness
    start = progress.finalized_until
    if start is None:
        start = checkpoints.first_partial_window(conn, dataset=dataset.name)
        if start is None:
            return None
    return progress, start, final_until


def _begin_try(conn: Connection, dataset: DatasetSpec,
               failures: WindowFailures) -> tuple[float, int] | None:
    """Note the pass about to begin at the data set's first window not finalized, committed
    before it: (that window, the tries stored), or None when there is none. (Whether it is
    ready is the pass's to see: a pass that finalizes nothing stores the count back.)"""
    front = checkpoints.finalize_front(conn, dataset=dataset.name)
    if front is None:
        return None
    start, try_window, stored = front
    if start is None:
        return None
    tries = failures.begin_try(dataset.name, start, (try_window, stored),
                               span=MAX_WINDOWS_PER_PASS * dataset.window)
    checkpoints.note_finalize_try(conn, dataset=dataset.name, window_start=start, tries=tries)
    return start, tries


def _pass(conn: Connection, dataset: DatasetSpec, now: float,
          hooks: Sequence[WindowHook], should_stop: Callable[[], bool] | None,
          failures: WindowFailures | None
          ) -> tuple[list[FinalizedWindow], list[tuple[float, Mode]]]:
    """One finalize pass inside the caller's transaction: the windows finalized, and how
    each window it went through was (skipped ones included)."""
    done: list[FinalizedWindow] = []
    outcomes: list[tuple[float, Mode]] = []
    ready = _first_ready(conn, dataset)
    if ready is None:
        return done, outcomes
    progress, window_start, final_until = ready
    failing = None if failures is None else failures.failing(dataset.name)
    baseline = progress.baseline
    schema = progress.last_schema
    while (window_start + dataset.window <= final_until
           and len(done) < MAX_WINDOWS_PER_PASS
           and not (should_stop is not None and should_stop())):
        if outcomes and (window_start == failing or (
                failures is not None and failures.careful(dataset.name, window_start))):
            break  # commit the windows before it; the next pass tries it alone
        mode = Mode.FULL if failures is None else failures.mode(dataset.name, window_start)
        if mode is not Mode.SKIPPED:
            try:
                window, baseline, schema = _finalize_window(
                    conn, dataset, window_start, progress, now=now, baseline=baseline,
                    schema=schema, hooks=() if mode is Mode.UNSCORED else hooks,
                    alerting=mode is Mode.FULL)
            except Exception as exc:
                # short of memory: the process's state, not the window's (retried
                # like a transient failure, or the process restarts)
                if is_transient(exc) or isinstance(exc, MemoryError):
                    raise
                raise WindowFailed(dataset.name, window_start, mode) from exc
            done.append(window)
        outcomes.append((window_start, mode))
        window_start += dataset.window
        if outcomes[-1][0] == failing:
            break  # commit it alone: a failure after it must not roll it back
    if outcomes:
        checkpoints.mark_finalized(conn, dataset=dataset.name, until=window_start,
                                   baseline=baseline or b"", last_schema=schema or {})
    return done, outcomes


@dataclass(frozen=True, slots=True)
class Recovered:
    """What :func:`finalize_skipped` did with one skipped window."""

    dataset: str
    window_start: float
    #: records in the window (its ``volume.records``), when it was written
    records: float | None = None
    #: metric points written; 0 when it failed again
    points: int = 0
    #: why it is still skipped (its partials kept), None when it was written
    error: str | None = None


def skipped_windows(engine: Engine) -> dict[str, list[float]]:
    """Per data set, the windows finalization skipped after failing every try (their
    partials are kept), oldest first."""
    with engine.connect() as conn:
        return checkpoints.skipped_windows(conn)


def finalize_skipped(engine: Engine, dataset: DatasetSpec, *,
                     window_start: float | None = None, now: float | None = None,
                     lock_wait_s: float = 30.0) -> list[Recovered]:
    """Finalize again the windows of ``dataset`` that finalization skipped after failing
    every try (their partials are kept: :func:`checkpoints.skipped_windows`), or only the
    one at ``window_start``; for after an upgrade fixed what made them fail.

    Each window in its own transaction, under the data set's finalize lock (waiting up to
    ``lock_wait_s`` for a pass in flight): its partials are merged and its metric points
    written, **unscored** (no detector, no incident: the detectors have learned the
    windows after it), without comparing it to the window before (the drift metrics,
    which need that, are absent) and without a schema observation (the schema history is
    in order). A window that fails again keeps its partials, and the error is returned;
    one that already has points in the history is left alone."""
    now = time.time() if now is None else now
    starts = skipped_windows(engine).get(dataset.name, [])
    if window_start is not None:
        starts = [start for start in starts if start == window_start]
    done: list[Recovered] = []
    for start in starts:
        try:
            done.append(_finalize_skipped(engine, dataset, start, now, lock_wait_s))
        except Exception as exc:  # noqa: BLE001 - reported; its partials stay
            done.append(Recovered(dataset.name, start, error=f"{type(exc).__name__}: {exc}"))
    return done


def _finalize_skipped(engine: Engine, dataset: DatasetSpec, start: float, now: float,
                      lock_wait_s: float) -> Recovered:
    deadline = time.monotonic() + lock_wait_s
    while True:
        with engine.begin() as conn:
            if advisory_lock(conn, finalize_lock(dataset.name)):
                if metric_store.has_window(conn, dataset=dataset.name, window_start=start):
                    return Recovered(dataset.name, start,
                                     error="it has points in the history already; its "
                                           "partials are left as they are")
                progress = checkpoints.get_progress(conn, dataset=dataset.name)
                assert progress is not None  # it has skipped windows
                window, _baseline, _schema = _finalize_window(
                    conn, dataset, start, progress, now=now, baseline=None, schema=None,
                    hooks=(), alerting=False, observe=False)
                records = next((p.value for p in window.points
                                if p.metric == "volume.records"), None)
                return Recovered(dataset.name, start, records, len(window.points))
        if time.monotonic() >= deadline:
            raise TimeoutError(f"a finalize pass of {dataset.name} held its lock for "
                               f"{lock_wait_s:g}s; try again")
        time.sleep(0.2)


def _finalize_window(conn: Connection, dataset: DatasetSpec, window_start: float,
                     progress: checkpoints.DatasetProgress, *, now: float,
                     baseline: bytes | None, schema: dict[str, list[str]] | None,
                     hooks: Sequence[WindowHook], alerting: bool = True,
                     observe: bool = True
                     ) -> tuple[FinalizedWindow, bytes | None, dict[str, list[str]] | None]:
    """Merge, compute, write and hook one window; returns it, with the dataset's baseline
    and last schema after it. ``observe``: False for a window finalized out of order
    (:func:`finalize_skipped`): no schema observation, and no freshness or consumer lag
    from the data set's progress, which is that of later windows."""
    window_end = window_start + dataset.window
    blobs = checkpoints.take_partials(conn, dataset=dataset.name, window_start=window_start)
    state = merge_partials(dataset, blobs)
    ctx = FinalizeContext(window_start=window_start, window_end=window_end, now=now,
                          last_record_at=progress.last_record_at if observe else None,
                          consumer_lag_records=(progress.consumer_lag_records if observe
                                                else None))
    result = finalize_window(dataset, state, ctx, baseline)
    if result.observed_schema and observe:
        diff = diff_schema(schema, result.observed_schema)
        schemas.record_observation(conn, dataset=dataset.name, fields=result.observed_schema,
                                   diff=diff, seen_at=window_start)
        schema = result.observed_schema
    # field names too long to store are cut (a producer's 600-character key): found by
    # their whole names in the window's state, stored by the cut ones
    points = with_stored_fields(result.points)
    samples = samples_of(state, result.points)
    if points is not result.points:
        samples = {(metric, stored_field(name)): found
                   for (metric, name), found in samples.items()}
    window = FinalizedWindow(dataset.name, window_start, window_end, points, samples=samples,
                             segments=result.segments,
                             segment_reference=result.segment_reference,
                             alerting=alerting)
    for hook in hooks:
        if isinstance(hook, ScoresBeforeWrite):
            hook.before_write(conn, dataset, window)
    metric_store.create_window(conn, dataset=dataset.name, window_start=window_start,
                               window_end=window_end,
                               points=[*points, *window.extra_points],
                               scores=scores_of(window))
    for hook in hooks:
        hook(conn, dataset, window)
    return window, result.baseline, schema
