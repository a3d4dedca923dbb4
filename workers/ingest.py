"""The ingest worker process: settings -> source -> :class:`dqpulse.ingest.IngestWorker`.

Everything the loop decides (what is counted, checkpointed and committed) lives in
:mod:`dqpulse.ingest`; this module builds the objects, exposes the worker's metrics and
turns SIGTERM/SIGINT into a clean stop (a last checkpoint, then exit).
"""

from __future__ import annotations

import logging
import threading

from dqpulse.config import Settings
from dqpulse.finalize.scoring import default_hooks
from dqpulse.ingest import IngestWorker
from dqpulse.logs import register_secrets, spec_secrets
from dqpulse.services.model import current_model
from dqpulse.sources.base import DeadLetterSink, Source
from dqpulse.store.db import make_engine
from dqpulse.telemetry import Telemetry
from workers.probes import make_health, probes
from workers.signals import stop_event_on_signals

log = logging.getLogger(__name__)


def make_source(settings: Settings, client: str | None = None
                ) -> tuple[Source, DeadLetterSink | None]:
    """The Kafka source of ``client`` (default: ``DQPULSE_KAFKA_CLIENT``) and, when a
    dead-letter topic is set, its dead-letter sink."""
    kind = client or settings.kafka_client
    if kind == "kafka-python":
        from dqpulse.sources.kafka_python import KafkaPythonDeadLetterSink, KafkaPythonSource

        dlq: DeadLetterSink | None = (
            KafkaPythonDeadLetterSink(settings, settings.dead_letter_topic)
            if settings.dead_letter_topic else None)
        return KafkaPythonSource(settings), dlq
    from dqpulse.sources.kafka_confluent import ConfluentDeadLetterSink, ConfluentSource

    dlq = (ConfluentDeadLetterSink(settings, settings.dead_letter_topic)
           if settings.dead_letter_topic else None)
    return ConfluentSource(settings), dlq


def run_ingest(settings: Settings, *, client: str | None = None,
               max_seconds: float | None = None) -> int:
    stop = stop_event_on_signals(settings.stop_deadline_s)
    engine = make_engine(settings.database_url)
    try:
        spec = current_model(settings, engine)
        register_secrets(spec_secrets(spec))
        if not spec.datasets:
            log.error("no datasets: write %s or run `dqpulse apply -f`", settings.config_file)
            return 2
        log.info("ingest starting", extra={
            "database": settings.database_url, "kafka_bootstrap": settings.kafka_bootstrap,
            "group": settings.kafka_group, "datasets": [d.name for d in spec.datasets]})
        telemetry = Telemetry(field_metric_budget=settings.field_metric_budget)
        health = make_health(settings, progress_interval_s=settings.checkpoint_interval_s)
        with probes(settings, "ingest", registry=telemetry.registry, health=health):
            source, dead_letter = make_source(settings, client)
            worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                                  source=source, dead_letter=dead_letter, telemetry=telemetry,
                                  hooks=default_hooks(spec, settings, telemetry),
                                  health=health)
            threading.Thread(target=_stop_when_set, args=(stop, worker), daemon=True).start()
            stats = worker.run(max_seconds=max_seconds)
        log.info("ingest stopped", extra={"stats": {
            key: value for key, value in vars(stats).items() if key != "by_reason"}})
    finally:
        engine.dispose()
    return 0


def _stop_when_set(stop: threading.Event, worker: IngestWorker) -> None:
    stop.wait()
    worker.stop()
