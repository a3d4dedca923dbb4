"""One HTTP server per worker process on its metrics port: ``/metrics``, ``/healthz``,
``/readyz`` (:mod:`dqpulse.health`). Ports: ingest ``DQPULSE_WORKER_METRICS_PORT``
(9108), score that + 1, notify that + 2; ``0`` turns the server off."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry

from dqpulse.config import Settings
from dqpulse.health import Health, database_check, serve

#: port offset of each worker role from DQPULSE_WORKER_METRICS_PORT
PORT_OFFSETS = {"ingest": 0, "score": 1, "notify": 2}

log = logging.getLogger(__name__)


def make_health(settings: Settings, *, progress_interval_s: float | None) -> Health:
    """Liveness after ``health_stall_s``; readiness needs progress (a checkpoint, a
    delivery pass) within ``health_checkpoint_intervals`` x ``progress_interval_s``."""
    max_age = (None if progress_interval_s is None
               else settings.health_checkpoint_intervals * progress_interval_s)
    return Health(stall_s=settings.health_stall_s, progress_max_age_s=max_age)


@contextmanager
def probes(settings: Settings, role: str, *, registry: CollectorRegistry,
           health: Health, database_url: str | None = None) -> Iterator[int | None]:
    """Serve the probes of ``role`` while the block runs; yields the bound port (None when
    off). Readiness also asks the database on each probe."""
    check, engine = database_check(database_url or settings.database_url)
    health.add_check("database", check)
    server = None
    if settings.worker_metrics_port:
        port = settings.worker_metrics_port + PORT_OFFSETS[role]
        try:
            server = serve(settings.worker_metrics_host, port, registry=registry,
                           health=health)
        except OSError as exc:
            engine.dispose()
            log.error("cannot serve /metrics, /healthz, /readyz of the %s worker on %s:%d "
                      "(DQPULSE_WORKER_METRICS_PORT + %d): %s", role,
                      settings.worker_metrics_host, port, PORT_OFFSETS[role], exc)
            raise
    try:
        yield None if server is None else server.port
    finally:
        if server is not None:
            server.close()
        engine.dispose()
