"""Liveness and readiness of a worker process, served with its Prometheus metrics.

Every worker process (ingest, score, notify) serves one small HTTP server on its metrics
port (:func:`serve`):

``/metrics``
    the process's Prometheus registry.
``/healthz`` (liveness)
    200 while the main loop turned within ``stall_s`` seconds (:meth:`Health.beat`), else
    503: a wedged loop is restarted by its supervisor.
``/readyz`` (readiness)
    200 when every readiness check passes, else 503; the JSON body names each check with
    its reason, e.g. ``{"ready": false, "checks": {"database": "OperationalError: ..."}}``.

The loop owner sets conditions with :meth:`Health.set_condition` (e.g. ``restoring``
while assigned partitions are being restored) and :meth:`Health.progress` (the last
checkpoint or delivery pass, which must be younger than ``progress_max_age_s``); the
database is asked on each probe, with a short connect timeout.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

Check = Callable[[], str | None]  # None: ok; else the reason it is not


class Health:
    """What the probes report, updated by the process's loop (thread-safe)."""

    def __init__(self, *, stall_s: float, progress_max_age_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.progress_max_age_s = progress_max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._last_progress: float | None = None
        self._started = clock()
        self._conditions: dict[str, str] = {}
        self._checks: dict[str, Check] = {}

    def beat(self) -> None:
        """The loop turned."""
        self._last_beat = self.clock()

    def progress(self) -> None:
        """The loop's durable step succeeded (a checkpoint, a delivery pass)."""
        self._last_progress = self.clock()

    def set_condition(self, name: str, reason: str | None) -> None:
        """Not ready for ``reason`` (None clears the condition)."""
        with self._lock:
            if reason is None:
                self._conditions.pop(name, None)
            else:
                self._conditions[name] = reason

    def add_check(self, name: str, check: Check) -> None:
        """A check run on every readiness probe."""
        self._checks[name] = check

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        since = self.clock() - self._last_beat
        alive = since <= self.stall_s
        return alive, {"alive": alive, "seconds_since_loop_turned": round(since, 3),
                       "stall_s": self.stall_s}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            failing: dict[str, str] = dict(self._conditions)
        if self.progress_max_age_s is not None:
            reference = self._last_progress if self._last_progress is not None \
                else self._started
            age = self.clock() - reference
            if age > self.progress_max_age_s:
                what = "none yet" if self._last_progress is None else f"{age:.1f}s ago"
                failing["checkpoint"] = (f"last successful checkpoint: {what} "
                                         f"(limit {self.progress_max_age_s:g}s)")
        for name, check in self._checks.items():
            try:
                reason = check()
            except Exception as exc:  # noqa: BLE001 - a probe reports any failure
                reason = f"{type(exc).__name__}: {exc}"
            if reason is not None:
                failing[name] = reason
        return not failing, {"ready": not failing, "checks": failing}


def database_check(url: str, timeout_s: float = 2.0) -> tuple[Check, Engine]:
    """A readiness check that the database answers ``SELECT 1`` (a fresh connection with a
    connect timeout, so a probe never waits on the worker's pool); returns the engine to
    dispose."""
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        connect_args["connect_timeout"] = max(1, round(timeout_s))
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)

    def check() -> str | None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None

    return check, engine


class _Handler(BaseHTTPRequestHandler):
    server: _HealthServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            probe = self.server.health.liveness if path == "/healthz" \
                else self.server.health.readiness
            ok, body = probe()
            self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
        else:
            self._send(404, b'{"detail": "not found"}', "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        log.debug("probe %s", format % args)


class _HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry,
                 health: Health) -> None:
        self.registry = registry
        self.health = health
        super().__init__(address, _Handler)


class ProbeServer:
    """The running server: ``port`` (the bound one, for port 0) and :meth:`close`."""

    def __init__(self, server: _HealthServer) -> None:
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="dqpulse-probes", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(host: str, port: int, *, registry: CollectorRegistry, health: Health) -> ProbeServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` in a thread."""
    server = ProbeServer(_HealthServer((host, port), registry, health))
    log.info("probes and metrics on http://%s:%d (/metrics, /healthz, /readyz)",
             host, server.port)
    return server
