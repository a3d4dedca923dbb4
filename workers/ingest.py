"""The ingest worker process: settings -> source -> :class:`dqpulse.ingest.IngestWorker`.

Everything the loop decides (what is counted, checkpointed and committed) lives in
:mod:`dqpulse.ingest`; this module builds the objects, exposes the worker's metrics and
turns SIGTERM/SIGINT into a clean stop (a last checkpoint, then exit).
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from dqpulse.config import Settings
from dqpulse.finalize import WindowHook
from dqpulse.finalize.scoring import default_hooks
from dqpulse.ingest import IngestWorker
from dqpulse.logs import register_secrets, spec_secrets
from dqpulse.services.model import ModelVersion, ModelWatch, current_model
from dqpulse.sources.base import DeadLetterSink, Source, SourceStopped
from dqpulse.spec import Spec
from dqpulse.store.db import make_engine, schema_behind_if_known
from dqpulse.telemetry import Telemetry
from workers.probes import make_health, probes
from workers.signals import stop_event_on_signals

log = logging.getLogger(__name__)
# a worker that cannot read its model says why on the first try, then every this many
MODEL_FAILURE_LOG_EVERY = 30


def make_source(settings: Settings, client: str | None = None, *,
                stop: threading.Event | None = None
                ) -> tuple[Source, DeadLetterSink | None]:
    """The Kafka source of ``client`` (default: ``DQPULSE_KAFKA_CLIENT``) and, when a
    dead-letter topic is set, its dead-letter sink. With ``stop``, a kafka-python source
    waits for a broker until it is set (:class:`SourceStopped`); librdkafka's constructors
    need none."""
    kind = client or settings.kafka_client
    if kind == "kafka-python":
        from dqpulse.sources.kafka_python import KafkaPythonDeadLetterSink, KafkaPythonSource

        source = KafkaPythonSource(settings, stop=stop)
        dlq: DeadLetterSink | None = (
            KafkaPythonDeadLetterSink(settings, settings.dead_letter_topic, stop=stop)
            if settings.dead_letter_topic else None)
        return source, dlq
    from dqpulse.sources.kafka_confluent import ConfluentDeadLetterSink, ConfluentSource

    dlq = (ConfluentDeadLetterSink(settings, settings.dead_letter_topic)
           if settings.dead_letter_topic else None)
    return ConfluentSource(settings), dlq


def run_ingest(settings: Settings, *, client: str | None = None,
               max_seconds: float | None = None) -> int:
    stop = stop_event_on_signals(settings.stop_deadline_s)
    engine = make_engine(settings.database_url)
    try:
        model = _first_model(engine, settings, stop)
        if model is None:
            return 0
        register_secrets(spec_secrets(model.spec))
        log.info("ingest starting", extra={
            "database": settings.database_url, "kafka_bootstrap": settings.kafka_bootstrap,
            "group": settings.kafka_group, "model_version": model.version,
            "datasets": [d.name for d in model.spec.datasets]})
        telemetry = Telemetry(field_metric_budget=settings.field_metric_budget)
        health = make_health(settings, progress_interval_s=settings.checkpoint_interval_s)
        with probes(settings, "ingest", registry=telemetry.registry, health=health):
            try:
                source, dead_letter = make_source(settings, client, stop=stop)
            except SourceStopped as exc:
                log.info("ingest stopped before it started: %s", exc)
                return 0
            worker = IngestWorker(settings=settings, engine=engine,
                                  datasets=model.spec.datasets, source=source,
                                  dead_letter=dead_letter, telemetry=telemetry,
                                  hooks=_hooks(model.spec, settings, telemetry),
                                  finalize=settings.ingest_finalize, health=health)
            watch = ModelWatch(engine, model.version,
                               interval_s=settings.model_poll_interval_s)
            threading.Thread(target=_follow_model,
                             args=(stop, watch, worker, settings, telemetry),
                             daemon=True, name="dqpulse-model-watch").start()
            threading.Thread(target=_stop_when_set, args=(stop, worker), daemon=True).start()
            stats = worker.run(max_seconds=max_seconds)
        log.info("ingest stopped", extra={"stats": {
            key: value for key, value in vars(stats).items() if key != "by_reason"}})
    finally:
        engine.dispose()
    return 0


def _first_model(engine: Engine, settings: Settings,
                 stop: threading.Event) -> ModelVersion | None:
    """The current model once it has a dataset (a worker may start before the first
    `dqpulse apply`: it waits, and says so); None when asked to stop first."""
    told = False
    failed = 0
    while not stop.is_set():
        try:
            model = current_model(engine)
        except SQLAlchemyError as exc:
            if failed % MODEL_FAILURE_LOG_EVERY == 0:  # the first, then about once a minute
                log.warning("cannot read the model (%s); retrying every %gs",
                            _why_no_model(engine, exc), settings.model_poll_interval_s)
            failed += 1
        else:
            if model.spec.datasets:
                return model
            if not told:
                log.warning("no datasets in the model yet: waiting for `dqpulse apply -f`")
                told = True
        stop.wait(settings.model_poll_interval_s)
    return None


def _why_no_model(engine: Engine, exc: SQLAlchemyError) -> str:
    """What a user can act on: a schema never migrated or behind this version, else the
    database's own first line (the log redacts any secret in it)."""
    behind = schema_behind_if_known(engine)
    if behind is not None:
        return behind
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__


def _follow_model(stop: threading.Event, watch: ModelWatch, worker: IngestWorker,
                  settings: Settings, telemetry: Telemetry) -> None:
    while not stop.wait(watch.interval_s / 2):
        model = watch.changed()
        if model is not None:
            register_secrets(spec_secrets(model.spec))
            worker.update_model(model.spec.datasets, _hooks(model.spec, settings, telemetry))


def _hooks(spec: Spec, settings: Settings, telemetry: Telemetry) -> list[WindowHook]:
    """The window hooks of a worker that finalizes; none for one that does not (a score
    worker finalizes and scores: the detectors are not loaded here)."""
    return default_hooks(spec, settings, telemetry) if settings.ingest_finalize else []


def _stop_when_set(stop: threading.Event, worker: IngestWorker) -> None:
    stop.wait()
    worker.stop()
