"""Prometheus self-metrics, all in one place, on an injectable registry.

Names follow ``dqpulse_<family>_<name>`` in base units; counters end in ``_total``.
Labels are bounded: dataset names come from config, reasons from a fixed set, and
per-field gauges are capped by ``field_metric_budget``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None, *,
                 field_metric_budget: int = 200) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.field_metric_budget = field_metric_budget
        self._field_series: set[tuple[str, str, str]] = set()
        r = self.registry
        self.records = Counter("dqpulse_ingest_records", "Records accepted by ingest",
                               ["dataset"], registry=r)
        self.bytes = Counter("dqpulse_ingest_bytes", "Bytes of records accepted by ingest",
                             ["dataset"], registry=r)
        self.decode_errors = Counter("dqpulse_decode_errors",
                                     "Messages that could not be decoded, by reason",
                                     ["dataset", "reason"], registry=r)
        self.late_records = Counter("dqpulse_late_records", "Records after their window closed",
                                    ["dataset"], registry=r)
        self.event_time_fallbacks = Counter(
            "dqpulse_event_time_fallbacks", "Records whose event time fell back to Kafka's",
            ["dataset"], registry=r)
        self.dead_lettered = Counter("dqpulse_dead_lettered", "Messages sent to the DLQ",
                                     ["dataset"], registry=r)
        self.checkpoints = Counter("dqpulse_checkpoints", "Checkpoints committed", registry=r)
        self.checkpoint_fenced = Counter("dqpulse_checkpoint_fenced",
                                         "Checkpoints refused because another worker owns it",
                                         registry=r)
        self.checkpoint_failures = Counter("dqpulse_checkpoint_failures",
                                           "Checkpoints that failed (database unavailable)",
                                           registry=r)
        self.checkpoint_seconds = Histogram("dqpulse_checkpoint_duration_seconds",
                                            "Checkpoint transaction time", registry=r)
        self.assigned_partitions = Gauge("dqpulse_assigned_partitions",
                                         "Partitions assigned to this worker", registry=r)
        self.windows_finalized = Counter("dqpulse_windows_finalized", "Windows finalized",
                                         ["dataset"], registry=r)
        self.volume_records = Gauge("dqpulse_volume_records",
                                    "Records in the last finalized window", ["dataset"],
                                    registry=r)
        self.seconds_since_last_record = Gauge(
            "dqpulse_freshness_seconds_since_last_record",
            "Seconds between the last finalized window's end and the newest record",
            ["dataset"], registry=r)
        self.consumer_lag = Gauge("dqpulse_freshness_consumer_lag_records",
                                  "Records not yet consumed", ["dataset"], registry=r)
        self.quality_score = Gauge("dqpulse_quality_score", "Quality score per dimension (0..1)",
                                   ["dataset", "dimension"], registry=r)
        self.field_metric = Gauge("dqpulse_field_metric",
                                  "Per-field metrics, capped by the field budget",
                                  ["dataset", "field", "metric"], registry=r)
        self.field_metric_dropped = Counter(
            "dqpulse_field_metric_dropped", "Per-field series not exported (over budget)",
            registry=r)
        self.anomalies = Counter("dqpulse_anomalies", "Anomalous metric points",
                                 ["dataset", "kind"], registry=r)
        self.incidents_open = Gauge("dqpulse_incidents_open", "Open incidents", ["dataset"],
                                    registry=r)
        self.notifications = Counter("dqpulse_notifications", "Notification delivery attempts",
                                     ["channel", "outcome"], registry=r)
        self.http_requests = Counter("dqpulse_http_requests", "API requests",
                                     ["method", "route", "status"], registry=r)

    def set_field_metric(self, dataset: str, field: str, metric: str, value: float) -> None:
        key = (dataset, field, metric)
        if key not in self._field_series:
            if len(self._field_series) >= self.field_metric_budget:
                self.field_metric_dropped.inc()
                return
            self._field_series.add(key)
        self.field_metric.labels(dataset, field, metric).set(value)
