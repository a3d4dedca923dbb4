"""Prometheus self-metrics of one process, all in one place, on an injectable registry.

Names follow ``dqpulse_<family>_<name>`` in base units; counters end in ``_total``.
Labels are bounded: dataset names come from config, reasons and outcomes from fixed sets,
routes are the API's path templates.

The data-quality values of the datasets (volume, freshness, fields, scores, incidents) are
not here: they are read from the database at scrape time by one process
(:mod:`dqpulse.services.exposition`), so each is exported exactly once.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

# API latency buckets: 5 ms .. 10 s
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: records per metric update: a fixed cost of milliseconds per update makes batches of
#: under ~100 records cost several times more per record than batches of thousands
BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 5000, 20000, 100000)


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None, *,
                 field_metric_budget: int = 200) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # per-field series budget of the exposition collector, where this process runs one
        self.field_metric_budget = field_metric_budget
        r = self.registry
        self.records = Counter("dqpulse_ingest_records", "Records accepted by ingest",
                               ["dataset"], registry=r)
        self.decode_errors = Counter("dqpulse_decode_errors",
                                     "Messages that could not be decoded, by reason",
                                     ["dataset", "reason"], registry=r)
        self.late_records = Counter("dqpulse_late_records", "Records after their window closed",
                                    ["dataset"], registry=r)
        self.event_time_fallbacks = Counter(
            "dqpulse_event_time_fallbacks", "Records whose event time fell back to Kafka's",
            ["dataset"], registry=r)
        self.batch_failures = Counter(
            "dqpulse_ingest_batch_failures",
            "Batches whose metric update raised (a bug met by a record): the partition "
            "was reloaded from its checkpoint and the batch counted without the records "
            "that raise", ["dataset"], registry=r)
        self.checkpoint_corrupt = Counter(
            "dqpulse_checkpoint_state_corrupt",
            "Partition checkpoints whose stored state failed its checksum when loaded: "
            "the partition went on from the checkpoint's offset without its open windows",
            ["dataset"], registry=r)
        self.dead_lettered = Counter("dqpulse_dead_lettered", "Messages sent to the DLQ",
                                     ["dataset"], registry=r)
        self.offset_resets = Counter(
            "dqpulse_ingest_offset_resets",
            "Partitions whose position their log did not hold (reason retention: records "
            "deleted before they were read; log_shorter: the topic was recreated or its log "
            "truncated, counted from its start; replaced: the record a checkpoint counted at "
            "an offset is another one now, the topic was recreated, counted from its start; "
            "retried)", ["dataset", "reason"], registry=r)
        self.records_unread = Counter(
            "dqpulse_ingest_records_unread",
            "Records deleted from the topic (retention) before a worker read them",
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
        self.checkpoint_interval = Gauge("dqpulse_checkpoint_interval_seconds",
                                         "How long the periodic checkpoint waits now "
                                         "(stretched when checkpoints are costly)", registry=r)
        self.aggregated_batch_records = Histogram(
            "dqpulse_aggregated_batch_records",
            "Records per metric update (a partition's batch aggregated at once: a poll's, "
            "or the records held back for coalescing)", buckets=BATCH_BUCKETS, registry=r)
        self.assigned_partitions = Gauge("dqpulse_assigned_partitions",
                                         "Partitions assigned to this worker", registry=r)
        self.finalize_backlog = Gauge("dqpulse_finalize_backlog_windows",
                                      "Windows every partition has passed that are not "
                                      "finalized yet (all datasets, at the last pass)",
                                      registry=r)
        self.windows_finalized = Counter("dqpulse_windows_finalized",
                                         "Windows finalized by this process",
                                         ["dataset"], registry=r)
        self.anomalies = Counter("dqpulse_anomalies", "Anomalous metric points",
                                 ["dataset", "kind"], registry=r)
        self.detector_errors = Counter("dqpulse_detector_errors",
                                       "Metric points whose detector raised (scored 0; the "
                                       "series' baseline started over)",
                                       ["dataset", "metric"], registry=r)
        self.finalize_failures = Counter("dqpulse_finalize_failures",
                                         "Tries to finalize a window that raised something "
                                         "not transient (dqpulse.finalize.failures)",
                                         ["dataset"], registry=r)
        self.windows_degraded = Counter("dqpulse_windows_degraded",
                                        "Windows finalized without alerting, without "
                                        "scoring, or skipped, after failed tries",
                                        ["dataset", "outcome"], registry=r)
        self.notifications = Counter("dqpulse_notifications", "Notification delivery attempts",
                                     ["channel", "outcome"], registry=r)
        self.http_requests = Counter("dqpulse_http_requests", "API requests",
                                     ["method", "route", "status"], registry=r)
        self.http_seconds = Histogram("dqpulse_http_request_duration_seconds",
                                      "API request time, from the first byte in to the "
                                      "response", ["method", "route"], buckets=HTTP_BUCKETS,
                                      registry=r)
        install_gc_timer()
        r.register(_GcCollector())


class GcTimer:
    """How long the cyclic garbage collector ran in this process, by generation (fed by a
    ``gc.callbacks`` hook, one per process: :func:`install_gc_timer`)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        # collections run with the GIL held, one at a time: no lock needed
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = min(int(info.get("generation", 2)), 2)
        self.seconds[generation] += time.perf_counter() - self._started
        self.collections[generation] += 1

    def totals(self) -> tuple[float, int]:
        """(seconds, collections) over all generations."""
        return sum(self.seconds), sum(self.collections)


GC_TIMER = GcTimer()
_gc_timer_lock = threading.Lock()


def install_gc_timer() -> None:
    """Hook :data:`GC_TIMER` into the collector (once per process; idempotent)."""
    with _gc_timer_lock:
        if GC_TIMER not in gc.callbacks:
            gc.callbacks.append(GC_TIMER)


class _GcCollector(Collector):
    """``dqpulse_gc_seconds_total`` and ``dqpulse_gc_collections_total`` by generation."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        seconds = CounterMetricFamily("dqpulse_gc_seconds",
                                      "Time spent in the cyclic garbage collector",
                                      labels=["generation"])
        collections = CounterMetricFamily("dqpulse_gc_collections",
                                          "Cyclic garbage collections",
                                          labels=["generation"])
        for generation in range(3):
            seconds.add_metric([str(generation)], GC_TIMER.seconds[generation])
            collections.add_metric([str(generation)], GC_TIMER.collections[generation])
        yield seconds
        yield collections
