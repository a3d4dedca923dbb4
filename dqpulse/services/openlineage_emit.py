"""The OpenLineage sender: drain the emission outbox through the openlineage-python
client's HTTP transport, in the background.

Each pass claims due rows (a lease, ``FOR UPDATE SKIP LOCKED`` on Postgres: several
senders never send one row at once), builds each window's report from its points and
flagged series as stored in Postgres (the outbox row names only the window), then the
client's ``RunEvent``, and emits it. A row is marked delivered only after the receiver answered
2xx; any failure (connection refused, timeout, 5xx, 4xx) keeps it pending with an
exponential backoff (full jitter, capped), and the rest of the pass is put back at the
same time, so a receiver outage costs one failed request per backoff step, never a lost
window. One event that cannot be built (a bug met by its window's data) or that the receiver
rejects (400, 413, 422: its body, not the receiver) does not hold the others back: it is
tried again on its own with the same backoff, the pass goes on, and after
``max_rejections`` tries it is marked ``dead`` with its error (kept in the table). Nothing
here runs on the ingest path: the finalize transaction only inserted the
row (:mod:`dqpulse.finalize.openlineage`). A window whose points expired
(``retention_points_days``) before the receiver came back is sent without them.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from dqpulse.errors import ConfigError
from dqpulse.jsonsafe import json_safe_object
from dqpulse.rca.openlineage_out import is_report, report_of, run_event
from dqpulse.spec import OpenLineageEmitSpec, expand_emit_secrets
from dqpulse.store import openlineage as openlineage_store
from dqpulse.utc import iso

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]

#: receiver answers that reject one event's body rather than say the receiver is down,
#: unauthorised or elsewhere (those hold every event back until it answers)
REJECTED_STATUSES = frozenset({400, 413, 422})


class EventRejected(Exception):
    """This event cannot be sent as it is: building it failed, or the receiver rejected its
    body (:data:`REJECTED_STATUSES`). The next events are not held back by it."""


@dataclass(frozen=True)
class EmitOptions:
    base_backoff_s: float = 2.0
    max_backoff_s: float = 300.0
    lease_s: float = 60.0
    batch: int = 100
    #: tries of one event that is rejected, before it is marked dead
    max_rejections: int = 5


@dataclass
class EmitReport:
    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    rejected: int = 0  # events rejected in this pass (retried alone, or dead)
    dead: int = 0


def http_sender(emit: OpenLineageEmitSpec) -> tuple[Send, Callable[[], object]]:
    """A send function over the client's HTTP transport, and its close."""
    # imported here: openlineage-python is the optional ``lineage`` extra
    import requests
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport
    from openlineage.client.transport.http import TokenProvider as NoToken

    emit = expand_emit_secrets(emit)
    config = HttpConfig(
        url=emit.url, endpoint=emit.endpoint, timeout=emit.timeout_s,
        auth=ApiKeyTokenProvider({"apiKey": emit.api_key}) if emit.api_key else NoToken({}),
        # the outbox retries with its own backoff; one quick transport retry for a blip
        retry={"total": 1, "connect": 1, "read": 1, "backoff_factor": 0.1,
               "status_forcelist": [502, 503, 504], "allowed_methods": ["POST"]})
    client = OpenLineageClient(transport=HttpTransport(config))

    def send(report: dict[str, Any]) -> None:
        try:
            event = run_event(report, emit)
        except Exception as exc:  # noqa: BLE001 - this window's report, not the receiver
            raise EventRejected(f"cannot build the event: {type(exc).__name__}: {exc}") from exc
        try:
            client.emit(event)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in REJECTED_STATUSES:
                body = (exc.response.text or "")[:300] if exc.response is not None else ""
                raise EventRejected(f"the receiver rejected it: HTTP {status} {body}") from exc
            raise

    return send, client.transport.close


def build_report(engine: Engine, event: dict[str, Any]) -> dict[str, Any]:
    """The report of an outbox row: as stored (rows queued with a report) or built from
    the window's stored points and flagged series (rows queued as a stub)."""
    if is_report(event):
        return event
    with engine.connect() as conn:
        points = openlineage_store.window_points(conn, dataset=event["dataset"],
                                                 window_start=event["window_start"])
        anomalous = openlineage_store.get_anomalous(conn, dataset=event["dataset"],
                                                    window_start=event["window_start"])
    report = report_of(event, points, anomalous)
    return json_safe_object(report) or {}  # NaN / inf as null: the event is JSON


def _backoff(attempt: int, options: EmitOptions, rng: random.Random) -> float:
    ceiling = min(options.max_backoff_s, options.base_backoff_s * 2 ** max(0, attempt - 1))
    return max(0.05, rng.uniform(0, ceiling))


def emit_due(engine: Engine, send: Send, *, options: EmitOptions | None = None,
             now: datetime | None = None, rng: random.Random | None = None,
             stop: threading.Event | None = None) -> EmitReport:
    """One pass: claim the due rows and send them, oldest first."""
    options = options or EmitOptions()
    rng = rng or random.Random()
    now = now or datetime.now(UTC)
    report = EmitReport()
    with engine.begin() as conn:
        rows = openlineage_store.claim_due(conn, now=now, lease_s=options.lease_s,
                                           limit=options.batch)
    report.claimed = len(rows)
    for index, row in enumerate(rows):
        if stop is not None and stop.is_set():
            break  # the lease runs out and the next sender takes the rest
        try:
            send(_report_of(engine, row))
        except EventRejected as exc:
            _rejected(engine, row, exc, options, rng, now, report)
            continue
        except Exception as exc:  # noqa: BLE001 - any other failure keeps the rows pending
            error = f"{type(exc).__name__}: {exc}"[:500]
            delay = _backoff(int(row["attempts"]) + 1, options, rng)
            retry_at = now + timedelta(seconds=delay)
            with engine.begin() as conn:
                openlineage_store.mark_failed(conn, row_ids=[int(r["id"]) for r in rows[index:]],
                                              retry_at=retry_at, error=error)
            report.failed = len(rows) - index
            log.warning("openlineage: emit failed (%s); %d window(s) retry in %.1fs",
                        type(exc).__name__, report.failed, delay)
            return report
        with engine.begin() as conn:
            openlineage_store.mark_delivered(conn, row_id=int(row["id"]),
                                             now=datetime.now(UTC))
        report.delivered += 1
    return report


def _report_of(engine: Engine, row: dict[str, Any]) -> dict[str, Any]:
    try:
        return build_report(engine, row["event"])
    except SQLAlchemyError:
        raise  # the database, not this row: the sender backs off, the lease returns them
    except Exception as exc:  # noqa: BLE001 - a bug met by this window's data
        raise EventRejected(f"cannot build the report: {type(exc).__name__}: {exc}") from exc


def _rejected(engine: Engine, row: dict[str, Any], exc: EventRejected, options: EmitOptions,
              rng: random.Random, now: datetime, report: EmitReport) -> None:
    """One event rejected: tried again alone after a backoff, or dead after
    ``max_rejections`` tries; the pass goes on with the next."""
    attempts = int(row["attempts"]) + 1
    error = str(exc)[:500]
    where = f"dataset {row['dataset']}, window at {iso(float(row['window_start']))}"
    report.rejected += 1
    with engine.begin() as conn:
        if attempts >= options.max_rejections:
            openlineage_store.mark_dead(conn, row_id=int(row["id"]), error=error)
            report.dead += 1
            log.error("openlineage: the event of %s is dead after %d tries: %s", where,
                      attempts, error, exc_info=exc.__cause__)
            return
        delay = _backoff(attempts, options, rng)
        openlineage_store.mark_failed(conn, row_ids=[int(row["id"])],
                                      retry_at=now + timedelta(seconds=delay), error=error)
    log.warning("openlineage: the event of %s was rejected (try %d of %d; again in %.1fs, "
                "the others go on): %s", where, attempts, options.max_rejections, delay,
                error)


def run_emitter(engine: Engine, emit: Callable[[], OpenLineageEmitSpec | None], *,
                stop_event: threading.Event, poll_interval_s: float = 1.0,
                options: EmitOptions | None = None) -> None:
    """Send until ``stop_event`` is set; ``emit()`` is the current configuration (None:
    emission is off, rows wait). Database errors are logged and retried."""
    options = options or EmitOptions()
    current: OpenLineageEmitSpec | None = None
    send: Send | None = None
    close: Callable[[], object] = lambda: None  # noqa: E731
    failures = 0
    try:
        while not stop_event.is_set():
            wanted = emit()
            if wanted != current:
                close()
                current, send, close = wanted, None, lambda: None
                if wanted is not None:
                    try:
                        send, close = http_sender(wanted)
                    except (ConfigError, ImportError, ValueError) as exc:
                        log.error("openlineage: cannot emit (%s); windows wait in the outbox",
                                  exc)
            if send is None:
                stop_event.wait(poll_interval_s)
                continue
            try:
                report = emit_due(engine, send, options=options, stop=stop_event)
                failures = 0
            except SQLAlchemyError as exc:
                failures += 1
                pause = min(30.0, poll_interval_s * 2 ** min(failures, 8))
                log.warning("openlineage: database error (%s); retrying in %.1fs",
                            type(exc).__name__, pause)
                stop_event.wait(pause)
                continue
            if report.claimed < options.batch or report.failed:
                stop_event.wait(poll_interval_s)
    finally:
        close()
