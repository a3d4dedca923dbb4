"""Entry points of the worker processes (``dqpulse worker ingest|score|notify``)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from prometheus_client import start_http_server

from dqpulse.config import Settings
from dqpulse.pipeline import default_hooks, finalize_ready
from dqpulse.spec import Spec, load_spec
from dqpulse.store import datasets as dataset_store
from dqpulse.store.db import make_engine
from dqpulse.telemetry import Telemetry

log = logging.getLogger(__name__)


def load_model(settings: Settings, engine: object) -> Spec:
    """The dqpulse.yaml model: the config file when present, else what ``apply`` stored."""
    if Path(settings.config_file).is_file():
        return load_spec(settings.config_file)
    with engine.begin() as conn:  # type: ignore[attr-defined]
        return Spec(datasets=dataset_store.get_all(conn))


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def make_source(settings: Settings, client: str | None = None):  # type: ignore[no-untyped-def]
    kind = client or settings.kafka_client
    if kind == "kafka-python":
        from dqpulse.sources.kafka_python import KafkaPythonDeadLetterSink, KafkaPythonSource

        dlq = (KafkaPythonDeadLetterSink(settings, settings.dead_letter_topic)
               if settings.dead_letter_topic else None)
        return KafkaPythonSource(settings), dlq
    from dqpulse.sources.kafka_confluent import ConfluentDeadLetterSink, ConfluentSource

    dlq = (ConfluentDeadLetterSink(settings, settings.dead_letter_topic)
           if settings.dead_letter_topic else None)
    return ConfluentSource(settings), dlq


def run_ingest(settings: Settings, *, client: str | None = None,
               max_seconds: float | None = None) -> int:
    from workers.ingest import IngestWorker

    engine = make_engine(settings.database_url)
    spec = load_model(settings, engine)
    if not spec.datasets:
        log.error("no datasets: write %s or run `dqpulse apply -f`", settings.config_file)
        return 2
    telemetry = Telemetry(field_metric_budget=settings.field_metric_budget)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host,
                          registry=telemetry.registry)
    source, dead_letter = make_source(settings, client)
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, dead_letter=dead_letter, telemetry=telemetry,
                          hooks=default_hooks(spec, settings, telemetry))
    stop = _stop_on_signals()
    threading.Thread(target=lambda: (stop.wait(), worker.stop()), daemon=True).start()
    stats = worker.run(max_seconds=max_seconds)
    log.info("ingest stopped: %s", stats)
    return 0


def run_score(settings: Settings, *, max_seconds: float | None = None) -> int:
    """Finalize and score windows of every dataset (when ingest runs with finalize off,
    or as a second line that picks up windows whose ingest worker died)."""
    engine = make_engine(settings.database_url)
    spec = load_model(settings, engine)
    telemetry = Telemetry(field_metric_budget=settings.field_metric_budget)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port + 1, addr=settings.worker_metrics_host,
                          registry=telemetry.registry)
    hooks = default_hooks(spec, settings, telemetry)
    stop = _stop_on_signals()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        for dataset in spec.datasets:
            try:
                finalize_ready(engine, dataset, hooks=hooks, telemetry=telemetry)
            except Exception:  # noqa: BLE001 - one dataset's trouble must not stop the rest
                log.exception("scoring %s failed; retrying next round", dataset.name)
        stop.wait(settings.checkpoint_interval_s)
    return 0


def run_notify(settings: Settings, *, max_seconds: float | None = None) -> int:
    from workers.notify import run_notifier

    engine = make_engine(settings.database_url)
    spec = load_model(settings, engine)
    stop = _stop_on_signals()
    if max_seconds is not None:
        threading.Timer(max_seconds, stop.set).start()
    run_notifier(settings, engine, spec, stop_event=stop, poll_interval_s=1.0)
    return 0
