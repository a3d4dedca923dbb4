"""Closed windows -> metric points -> detectors -> incidents: the code that the score worker,
the ingest worker and the demo share.

A window is final when every partition of the dataset's topic has a watermark past the
window's end plus the allowed lateness. Finalizing a window reads and deletes its
per-partition partials, merges them, writes the metric points, advances
``finalized_until`` and runs the window hooks (scoring, alerting), all in one
transaction under a per-dataset advisory lock, so a window is finalized exactly once
even with several workers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from dqpulse.config import Settings
from dqpulse.metrics import FinalizeContext, diff_schema, finalize_window, merge_partials
from dqpulse.records import MetricPoint
from dqpulse.spec import DatasetSpec, Spec
from dqpulse.store import checkpoints, schemas
from dqpulse.store import metrics as metric_store
from dqpulse.store.db import advisory_lock
from dqpulse.telemetry import Telemetry

log = logging.getLogger(__name__)

MAX_WINDOWS_PER_PASS = 500


@dataclass(frozen=True, slots=True)
class FinalizedWindow:
    dataset: str
    window_start: float
    window_end: float
    points: list[MetricPoint]


# A hook sees the finalized window inside the finalize transaction (scoring, alerting).
WindowHook = Callable[[Connection, DatasetSpec, FinalizedWindow], None]


def finalize_ready(
    engine: Engine,
    dataset: DatasetSpec,
    *,
    now: float | None = None,
    hooks: Sequence[WindowHook] = (),
    telemetry: Telemetry | None = None,
) -> list[FinalizedWindow]:
    """Finalize every window of ``dataset`` that all partitions have passed."""
    now = time.time() if now is None else now
    done: list[FinalizedWindow] = []
    with engine.begin() as conn:
        if not advisory_lock(conn, f"dqpulse:finalize:{dataset.name}"):
            return done
        progress = checkpoints.get_progress(conn, dataset=dataset.name)
        if progress is None or progress.min_watermark is None:
            return done
        if progress.partitions_seen < progress.partition_count:
            return done  # some partition was never checkpointed: its data may be pending
        final_until = progress.min_watermark - dataset.lateness
        start = progress.finalized_until
        if start is None:
            first = checkpoints.first_partial_window(conn, dataset=dataset.name)
            if first is None:
                return done
            start = first
        baseline = progress.baseline
        schema = progress.last_schema
        window_start = start
        while (window_start + dataset.window <= final_until
               and len(done) < MAX_WINDOWS_PER_PASS):
            window_end = window_start + dataset.window
            blobs = checkpoints.take_partials(conn, dataset=dataset.name,
                                              window_start=window_start)
            state = merge_partials(dataset, blobs)
            ctx = FinalizeContext(window_start=window_start, window_end=window_end, now=now,
                                  last_record_at=progress.last_record_at,
                                  consumer_lag_records=progress.consumer_lag_records)
            result = finalize_window(dataset, state, ctx, baseline)
            baseline = result.baseline
            if result.observed_schema:
                diff = diff_schema(schema, result.observed_schema)
                schemas.record_observation(conn, dataset=dataset.name,
                                           fields=result.observed_schema, diff=diff,
                                           seen_at=window_start)
                schema = result.observed_schema
            metric_store.create_window(conn, dataset=dataset.name, window_start=window_start,
                                       window_end=window_end, points=result.points)
            window = FinalizedWindow(dataset.name, window_start, window_end, result.points)
            for hook in hooks:
                hook(conn, dataset, window)
            done.append(window)
            window_start = window_end
        if done:
            checkpoints.mark_finalized(conn, dataset=dataset.name, until=window_start,
                                       baseline=baseline or b"", last_schema=schema or {})
    if telemetry is not None:
        for window in done:
            export_window(telemetry, window)
    return done


def export_window(telemetry: Telemetry, window: FinalizedWindow) -> None:
    """Publish a finalized window's dataset-level values as Prometheus gauges."""
    telemetry.windows_finalized.labels(window.dataset).inc()
    for point in window.points:
        if point.value is None or (isinstance(point.value, float) and math.isnan(point.value)):
            continue
        if point.field == "":
            if point.metric == "volume.records":
                telemetry.volume_records.labels(window.dataset).set(point.value)
            elif point.metric == "freshness.seconds_since_last_record":
                telemetry.seconds_since_last_record.labels(window.dataset).set(point.value)
            elif point.metric == "freshness.consumer_lag_records":
                telemetry.consumer_lag.labels(window.dataset).set(point.value)
            elif point.metric.startswith("quality."):
                telemetry.quality_score.labels(window.dataset,
                                               point.metric.split(".", 1)[1]).set(point.value)
        elif point.metric in ("completeness.null_ratio", "validity.violation_ratio",
                              "distribution.psi"):
            telemetry.set_field_metric(window.dataset, point.field, point.metric, point.value)


# Series that detectors watch and that can raise alerts. Every other metric is kept as
# history (and scored by nothing): watching fewer, well-chosen series is how dqpulse keeps
# false alarms down. Prefix match on the metric name.
DETECTED_METRICS = (
    "volume.records",
    "freshness.seconds_since_last_record",
    "freshness.event_lag_p95_seconds",
    "volume.late_records",
    "completeness.null_ratio",
    "completeness.required_violations",
    "distribution.mean",
    "distribution.p50",
    "distribution.distinct_count",
    "schema.new_fields",
    "schema.removed_fields",
    "schema.type_changes",
    "schema.contract_violations",
    "validity.violation_ratio",
    "uniqueness.duplicate_ratio",
    "ml_data.parity_difference",
    # not "distribution.psi" (nor the other drift scores): on windows of a few hundred
    # values PSI is mostly sampling noise, its expected value ~ (bins - 1) * (1/n + 1/m)
    # moves with the volume and its tail is long; mean and p50 catch the shifts it would,
    # and it stays in the history for root cause.
    # not "ml_data.minority_ratio": a window where one class is absent reports 1.0
    # (perfect balance) instead of 0, so quiet night windows without a rare class alert.
)
# Metrics describing a field's value distribution; meaningless on the dataset's key (an
# identifier: its mean and drift are noise, its duplicates are uniqueness' business).
_VALUE_DISTRIBUTION = ("distribution.",)


def is_detected(metric: str) -> bool:
    return metric in DETECTED_METRICS


def is_watched(spec: DatasetSpec, metric: str, field: str = "") -> bool:
    """Whether the detectors watch the series (metric, field) of ``spec``."""
    if not is_detected(metric):
        return False
    return not (field and field == spec.key and metric.startswith(_VALUE_DISTRIBUTION))


class ScoringHook:
    """Runs the detectors on a finalized window and turns anomalies into incidents.

    Detector state per series is loaded from and saved to Postgres in the finalize
    transaction, which holds the dataset's advisory lock: one worker at a time updates a
    dataset's detectors, and the state survives restarts and moves with the work.
    """

    def __init__(self, spec: Spec, settings: Settings, telemetry: Telemetry | None = None,
                 *, alerting: bool = True) -> None:
        from dqpulse.detectors.scoring import SeriesScorer

        self.spec = spec
        self.settings = settings
        self.telemetry = telemetry
        self.alerting = alerting
        self.scorers = {d.name: SeriesScorer(d) for d in spec.datasets}
        self.autoencoder = settings.autoencoder if _torch_available() else "off"

    def __call__(self, conn: Connection, dataset: DatasetSpec, window: FinalizedWindow) -> None:
        from dqpulse.store import detector_states

        scorer = self.scorers.get(dataset.name)
        if scorer is None:
            from dqpulse.detectors.scoring import SeriesScorer

            scorer = self.scorers[dataset.name] = SeriesScorer(dataset)
        points = [p for p in window.points if is_watched(dataset, p.metric, p.field)]
        saved = detector_states.get_all(conn, dataset=dataset.name)
        states = {key: blob for key, (_name, blob) in saved.items()}
        scored, updated = scorer.score_window(window.window_start, points, states)
        changed = {}
        for point in scored:
            key = f"{point.metric}|{point.field}"
            if key in updated and updated[key] is not states.get(key):
                changed[key] = (point.detector, updated[key])
        detector_states.save_all(conn, dataset=dataset.name, states=changed, known=set(saved))
        if self.autoencoder != "off":
            scored.append(self._score_autoencoder(conn, dataset, window, scored,
                                                  saved.get(AUTOENCODER_SERIES)))
        metric_store.update_scores(conn, dataset=dataset.name, window_start=window.window_start,
                                   scores=[(p.metric, p.field, p.score, p.anomalous,
                                            _json_safe(p.explanation)) for p in scored])
        if not self.alerting:
            return
        from dqpulse.alerts.incidents import Anomaly, kind_of_metric, process_window

        anomalies = [
            Anomaly(dataset=dataset.name, kind=kind_of_metric(p.metric), metric=p.metric,
                    field=p.field, window_start=window.window_start,
                    window_end=window.window_end, score=p.score,
                    explanation=_json_safe(p.explanation) or {})
            for p in scored
            if p.anomalous and (p.metric != AUTOENCODER_METRIC or self.autoencoder == "alert")
        ]
        if self.telemetry is not None:
            for anomaly in anomalies:
                self.telemetry.anomalies.labels(dataset.name, anomaly.kind).inc()
        outcome = process_window(conn, dataset=dataset, window_start=window.window_start,
                                 window_end=window.window_end, anomalies=anomalies,
                                 notifications=list(self.spec.notifications),
                                 public_url=self.settings.public_url)
        if self.telemetry is not None:
            self.telemetry.incidents_open.labels(dataset.name).set(outcome.open_incidents)


    def _score_autoencoder(self, conn: Connection, dataset: DatasetSpec,
                           window: FinalizedWindow, scored: Sequence[Any],
                           saved: tuple[str, bytes] | None) -> Any:
        """Score the window's vector of watched metrics with the dataset's autoencoder.

        Its per-feature reconstruction error (``explanation.features``) says which
        metrics drove an unusual window; root cause reads it. Stored as the metric point
        ``anomaly.autoencoder``; it alerts only with ``DQPULSE_AUTOENCODER=alert``.
        """
        from dqpulse.detectors.base import Detector, create
        from dqpulse.detectors.scoring import ScoredPoint
        from dqpulse.store import detector_states

        vector: dict[str, Any] = {"t": window.window_start}
        for point in scored:
            if point.value is not None and math.isfinite(point.value):
                vector[f"{point.metric}|{point.field}"] = point.value
        model = Detector.from_bytes(saved[1]) if saved else create(
            "autoencoder", device=self.settings.autoencoder_device)
        score = model.score_one(vector)
        explanation = model.explain(vector)
        model.learn_one(vector)
        detector_states.save_all(conn, dataset=dataset.name,
                                 states={AUTOENCODER_SERIES: ("autoencoder", model.to_bytes())},
                                 known={AUTOENCODER_SERIES} if saved else set())
        metric_store.create_window(conn, dataset=dataset.name, window_start=window.window_start,
                                   window_end=window.window_end,
                                   points=[MetricPoint(AUTOENCODER_METRIC, score)])
        return ScoredPoint(metric=AUTOENCODER_METRIC, field="", value=score, score=score,
                           anomalous=model.is_anomalous(score), detector="autoencoder",
                           explanation=explanation)


AUTOENCODER_METRIC = "anomaly.autoencoder"
AUTOENCODER_SERIES = f"{AUTOENCODER_METRIC}|"


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _json_safe(value: object) -> dict[str, object] | None:
    """Explanations go into JSON columns: NaN/inf become None, numpy scalars become floats."""
    if value is None:
        return None

    def clean(item: object) -> object:
        if isinstance(item, dict):
            return {str(k): clean(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [clean(v) for v in item]
        if isinstance(item, bool) or item is None or isinstance(item, str):
            return item
        if isinstance(item, int | float):
            number = float(item)
            return item if math.isfinite(number) else None
        try:
            number = float(item)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(item)
        return number if math.isfinite(number) else None

    cleaned = clean(value)
    return cleaned if isinstance(cleaned, dict) else {"value": cleaned}


def apply_feedback(conn: Connection, spec: DatasetSpec, *,
                   alerts: Sequence[tuple[str, str, float]], verdict: str) -> int:
    """Hand a human verdict on an incident's alerts to the detectors of those series."""
    from dqpulse.detectors.scoring import SeriesScorer
    from dqpulse.store import detector_states

    scorer = SeriesScorer(spec)
    saved = detector_states.get_all(conn, dataset=spec.name)
    changed: dict[str, tuple[str, bytes]] = {}
    for metric, field, window_start in alerts:
        key = f"{metric}|{field}"
        rows = metric_store.get_points(conn, dataset=spec.name, metric=metric, field=field,
                                       start=window_start, end=window_start + 1e-6, limit=1)
        value = rows[0]["value"] if rows else None
        state = changed.get(key, saved.get(key, ("", None)))[1]
        blob = scorer.feedback(metric, field, window_start, value, verdict,  # type: ignore[arg-type]
                               state)
        changed[key] = (saved.get(key, (metric, b""))[0] or metric, blob)
    detector_states.save_all(conn, dataset=spec.name, states=changed, known=set(saved))
    return len(changed)


def default_hooks(spec: Spec, settings: Settings, telemetry: Telemetry | None = None
                  ) -> list[WindowHook]:
    """The hooks every process runs on a finalized window: detectors, then incidents."""
    return [ScoringHook(spec, settings, telemetry)]
