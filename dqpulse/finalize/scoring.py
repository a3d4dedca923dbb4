"""The scoring hook: run the detectors of a finalized window, persist their state when it
changed, and turn anomalies into incidents.

Detector state per series is loaded from and saved to the database in the finalize
transaction, which holds the dataset's advisory lock: one worker at a time updates a
dataset's detectors, and the state survives restarts and moves with the work.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import Connection

from dqpulse.alerts.anomalies import Anomaly, kind_of_metric
from dqpulse.alerts.impacts import Related
from dqpulse.alerts.incidents import process_window
from dqpulse.config import Settings
from dqpulse.detectors.scoring import ScoredPoint, SeriesScorer
from dqpulse.finalize import autoencoder
from dqpulse.finalize.finalize import FinalizedWindow, WindowHook
from dqpulse.finalize.openlineage import OpenLineageOutboxHook
from dqpulse.finalize.watch import AUTOENCODER_METRIC, AUTOENCODER_SERIES, is_watched
from dqpulse.jsonsafe import json_safe, json_safe_object
from dqpulse.rca.lineage import Edge, LineageGraph
from dqpulse.rca.segments import attribute
from dqpulse.records import MetricPoint
from dqpulse.spec import DatasetSpec, Spec
from dqpulse.store import detector_states
from dqpulse.store import lineage as lineage_store
from dqpulse.store import metrics as metric_store
from dqpulse.telemetry import Telemetry

log = logging.getLogger(__name__)


def changed_states(scored: list[ScoredPoint], updated: Mapping[str, bytes],
                   saved: Mapping[str, bytes]) -> dict[str, bytes]:
    """The states of the scored series whose bytes differ from what is stored."""
    changed: dict[str, bytes] = {}
    for point in scored:
        key = f"{point.metric}|{point.field}"
        if key in updated and updated[key] != saved.get(key):
            changed[key] = updated[key]
    return changed


class ScoringHook:
    """Runs the detectors on a finalized window and turns anomalies into incidents."""

    def __init__(self, spec: Spec, settings: Settings, telemetry: Telemetry | None = None,
                 *, alerting: bool = True) -> None:
        self.spec = spec
        self.settings = settings
        self.telemetry = telemetry
        self.alerting = alerting
        self.scorers = {d.name: SeriesScorer(d) for d in spec.datasets}
        self.autoencoder = settings.autoencoder if autoencoder.torch_available() else "off"
        self.autoencoders = autoencoder.AutoencoderScorer(settings.autoencoder_device)

    def before_write(self, conn: Connection, dataset: DatasetSpec,
                     window: FinalizedWindow) -> None:
        """Score the window before its points are written, so that they are written once
        with their scores (``finalize_ready`` calls it; see ``ScoresBeforeWrite``)."""
        window.scored = self._score(conn, dataset, window)

    def __call__(self, conn: Connection, dataset: DatasetSpec, window: FinalizedWindow) -> None:
        scored = window.scored
        if scored is None:  # the points were written without scores: score, then update
            scored = self._score(conn, dataset, window)
            metric_store.create_window(conn, dataset=dataset.name,
                                       window_start=window.window_start,
                                       window_end=window.window_end,
                                       points=window.extra_points)
            metric_store.update_scores(
                conn, dataset=dataset.name, window_start=window.window_start,
                scores=[(p.metric, p.field, p.score, p.anomalous,
                         json_safe_object(p.explanation)) for p in scored])
        if self.alerting and window.alerting:
            self._alert(conn, dataset, window, scored)

    def _score(self, conn: Connection, dataset: DatasetSpec,
               window: FinalizedWindow) -> list[ScoredPoint]:
        """Run the detectors (and the dataset's autoencoder, whose point joins
        ``window.extra_points``) and save the states that changed, in one statement."""
        scorer = self.scorers.get(dataset.name)
        if scorer is None:
            scorer = self.scorers[dataset.name] = SeriesScorer(dataset)
        points = [p for p in window.points if is_watched(dataset, p.metric, p.field)]
        saved = detector_states.get_all(conn, dataset=dataset.name)
        scored, updated = scorer.score_window(window.window_start, points, saved)
        if self.telemetry is not None:
            for point in scored:
                if "detector_error" in point.explanation:
                    self.telemetry.detector_errors.labels(dataset.name, point.metric).inc()
        states = changed_states(scored, updated, saved)
        if self.autoencoder != "off":
            try:
                point, states[AUTOENCODER_SERIES] = self.autoencoders.score_window(
                    dataset, window_start=window.window_start, scored=scored,
                    saved=saved.get(AUTOENCODER_SERIES))
            except Exception as exc:  # noqa: BLE001 - as a series' detector: not the window
                log.error("the autoencoder of %s failed; it starts over", dataset.name,
                          exc_info=exc)
                states[AUTOENCODER_SERIES] = self.autoencoders.start_over(dataset)
                if self.telemetry is not None:
                    self.telemetry.detector_errors.labels(dataset.name,
                                                          AUTOENCODER_METRIC).inc()
            else:
                scored.append(point)
                window.extra_points.append(MetricPoint(AUTOENCODER_METRIC, point.score))
        detector_states.save_all(conn, dataset=dataset.name, states=states, known=set(saved))
        return scored

    def _alert(self, conn: Connection, dataset: DatasetSpec, window: FinalizedWindow,
               scored: list[ScoredPoint]) -> None:
        schema_changes = {p.metric: p.extra for p in window.points
                          if p.metric in SCHEMA_CHANGE_METRICS}
        anomalies = [
            Anomaly(dataset=dataset.name, kind=kind_of_metric(p.metric), metric=p.metric,
                    field=p.field, window_start=window.window_start,
                    window_end=window.window_end, score=p.score,
                    explanation=_enriched(json_safe_object(p.explanation) or {}, window,
                                          p.metric, p.field, schema_changes))
            for p in scored
            if p.anomalous and (p.metric != AUTOENCODER_METRIC
                                or self.autoencoder == "alert")
        ]
        for anomaly in anomalies:
            segment = attribute(anomaly.metric, anomaly.field, window.segments,
                                window.segment_reference)
            if segment is not None:
                anomaly.explanation["segment"] = json_safe_object(segment)
            if self.telemetry is not None:
                self.telemetry.anomalies.labels(dataset.name, anomaly.kind).inc()
        process_window(conn, dataset=dataset, window_start=window.window_start,
                       window_end=window.window_end, anomalies=anomalies,
                       notifications=list(self.spec.notifications),
                       public_url=self.settings.public_url,
                       related=self._related(conn, dataset) if anomalies else None)

    def _related(self, conn: Connection, dataset: DatasetSpec) -> Related:
        """The datasets linked to ``dataset`` by lineage (declared and OpenLineage)."""
        graph = LineageGraph(Edge(*row) for row in lineage_store.get_all(conn))
        owners = {d.name: d.owner for d in self.spec.datasets}
        return Related(
            upstream={r.dataset: r.depth for r in graph.walk(dataset.name, "upstream", 5)},
            downstream={r.dataset: r.depth for r in graph.walk(dataset.name, "downstream", 5)},
            owners=owners)


SCHEMA_CHANGE_METRICS = frozenset({"schema.new_fields", "schema.removed_fields",
                                   "schema.type_changes"})


def _enriched(explanation: dict[str, object], window: FinalizedWindow, metric: str,
              field: str, schema_changes: dict[str, dict[str, object]]) -> dict[str, object]:
    """An anomaly's explanation with the window's failing samples of its series and, for
    a schema change, the fields and types involved (``schema_change``)."""
    samples = window.samples.get((metric, field))
    if samples:
        explanation["samples"] = json_safe(samples)
    if metric in schema_changes:
        explanation["schema_change"] = json_safe(schema_changes[metric])
    return explanation


def default_hooks(spec: Spec, settings: Settings, telemetry: Telemetry | None = None
                  ) -> list[WindowHook]:
    """The hooks every process runs on a finalized window: detectors, then incidents;
    then, when ``openlineage.emit`` is configured, the window's OpenLineage outbox row."""
    hooks: list[WindowHook] = [ScoringHook(spec, settings, telemetry)]
    if spec.openlineage.emit is not None:
        hooks.append(OpenLineageOutboxHook())
    return hooks
