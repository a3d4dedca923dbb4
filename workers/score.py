"""The score worker process: finalize and score the windows of every dataset.

Runs when ingest runs with finalize off, or as a second line that picks up windows whose
ingest worker died.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from dqpulse.config import Settings
from dqpulse.finalize import WindowHook, finalize_ready, windows_ready
from dqpulse.finalize.failures import WindowFailed, WindowFailures
from dqpulse.finalize.scoring import default_hooks
from dqpulse.health import Health
from dqpulse.logs import register_secrets, spec_secrets
from dqpulse.services.model import ModelWatch, current_model
from dqpulse.services.retention import run_retention
from dqpulse.spec import Spec
from dqpulse.store.db import make_engine
from dqpulse.telemetry import Telemetry
from workers.probes import make_health, probes
from workers.signals import stop_event_on_signals

log = logging.getLogger(__name__)


def run_score(settings: Settings, *, max_seconds: float | None = None) -> int:
    stop = stop_event_on_signals(settings.stop_deadline_s)
    engine = make_engine(settings.database_url)
    try:
        model = current_model(engine)
        spec = model.spec
        watch = ModelWatch(engine, model.version, interval_s=settings.model_poll_interval_s)
        register_secrets(spec_secrets(spec))
        telemetry = Telemetry(field_metric_budget=settings.field_metric_budget)
        health = make_health(settings, progress_interval_s=settings.checkpoint_interval_s)
        hooks = default_hooks(spec, settings, telemetry)
        failures = WindowFailures(max_attempts=settings.finalize_max_attempts,
                                  telemetry=telemetry)
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        next_retention = time.monotonic()  # one pass at start, then every interval
        with probes(settings, "score", registry=telemetry.registry, health=health):
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                health.beat()
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + settings.retention_interval_s
                    _retention(engine, settings)
                if (newer := watch.changed()) is not None:
                    spec = newer.spec
                    register_secrets(spec_secrets(spec))
                    hooks = default_hooks(spec, settings, telemetry)
                _score_round(engine, spec, hooks, telemetry, stop, health, failures)
                stop.wait(settings.checkpoint_interval_s)
    finally:
        engine.dispose()
    return 0


def _retention(engine: Engine, settings: Settings) -> None:
    try:
        run_retention(engine, settings)
    except Exception:  # noqa: BLE001 - retention must not stop the scoring
        log.exception("retention pass failed; retrying in %.0fs", settings.retention_interval_s)


def _score_round(engine: Engine, spec: Spec, hooks: list[WindowHook], telemetry: Telemetry,
                 stop: threading.Event, health: Health, failures: WindowFailures) -> None:
    """One pass over the datasets with windows ready (one query finds them, as an ingest
    worker's finalizer does: a fleet's hundreds of datasets are not each locked and read
    every round); progress only when every one of them went through."""
    try:
        ready = windows_ready(engine, spec.datasets)
    except DBAPIError as exc:  # the next round retries; /readyz sees no progress
        log.warning("scoring round skipped: %s", type(exc.orig).__name__ if exc.orig else exc)
        return
    failed = False
    for dataset in spec.datasets:
        if stop.is_set():
            return
        if not ready.get(dataset.name):
            continue
        try:
            finalize_ready(engine, dataset, hooks=hooks, telemetry=telemetry,
                           should_stop=stop.is_set, failures=failures)
        except WindowFailed as exc:  # logged and counted; the next round goes on
            failed = True
            failures.failed(exc)
        except Exception:  # noqa: BLE001 - one dataset's trouble must not stop the rest
            failed = True
            log.exception("scoring %s failed; retrying next round", dataset.name,
                          extra={"dataset": dataset.name})
    if not failed:
        health.progress()
