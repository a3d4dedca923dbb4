"""The score worker process: finalize and score the windows of every dataset.

Runs when ingest runs with finalize off, or as a second line that picks up windows whose
ingest worker died.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import start_http_server

from dqpulse.config import Settings
from dqpulse.finalize import finalize_ready
from dqpulse.finalize.scoring import default_hooks
from dqpulse.services.model import current_model
from dqpulse.services.retention import run_retention
from dqpulse.store.db import make_engine
from dqpulse.telemetry import Telemetry
from workers.signals import stop_event_on_signals

log = logging.getLogger(__name__)


def run_score(settings: Settings, *, max_seconds: float | None = None) -> int:
    engine = make_engine(settings.database_url)
    spec = current_model(settings, engine)
    telemetry = Telemetry(field_metric_budget=settings.field_metric_budget)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port + 1, addr=settings.worker_metrics_host,
                          registry=telemetry.registry)
    hooks = default_hooks(spec, settings, telemetry)
    stop = stop_event_on_signals()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    next_retention = time.monotonic()  # one pass at start, then every interval
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        if time.monotonic() >= next_retention:
            next_retention = time.monotonic() + settings.retention_interval_s
            try:
                run_retention(engine, settings)
            except Exception:  # noqa: BLE001 - retention must not stop the scoring
                log.exception("retention pass failed; retrying in %.0fs",
                              settings.retention_interval_s)
        for dataset in spec.datasets:
            try:
                finalize_ready(engine, dataset, hooks=hooks, telemetry=telemetry)
            except Exception:  # noqa: BLE001 - one dataset's trouble must not stop the rest
                log.exception("scoring %s failed; retrying next round", dataset.name)
        stop.wait(settings.checkpoint_interval_s)
    return 0
