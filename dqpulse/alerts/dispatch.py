"""Outbox delivery: claim due rows, send, then mark delivered, retry later, or dead-letter.

Guarantees
    * **At least once, deduplicated by key.** A row is claimed by pushing its
      ``next_attempt_at`` forward by a lease (``claim_lease_s``) in a short transaction
      (``SELECT ... FOR UPDATE SKIP LOCKED`` on Postgres, so several notifiers never claim
      the same row); it stays ``pending`` until the send's outcome is written. A notifier
      killed mid-send leaves the row to be claimed again when the lease runs out: the
      receiver may see that one notification twice, always with the same idempotency key.
    * **In order per incident and channel.** Event k+1 of an incident is not sent to a
      channel before event k was delivered there (or dead-lettered). Channels are
      independent: one receiver being down does not hold up another.
    * **Retries** with exponential backoff and full jitter: attempt n waits
      ``uniform(0, min(max_backoff_s, base_backoff_s * 2 ** (n - 1)))`` (at least the
      receiver's ``Retry-After``, capped at ``max_backoff_s``). After ``max_attempts``
      attempts, or at once on a permanent error (HTTP 400/401/403/404/410/422...), the row
      becomes ``dead`` and is shown as such in ``GET /incidents/{id}``.
    * **Rate limits**: every channel has a token bucket of ``rate_limit_per_minute``; each
      attempt takes a token; rows of a channel out of tokens wait for the next pass.

Works on Postgres and on SQLite (the demo), where the row lock is a no-op and the single
writer serializes claims.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from dqpulse.alerts.notifiers.base import Notifier, SendResult
from dqpulse.store import outbox as outbox_store
from dqpulse.telemetry import Telemetry
from dqpulse.utc import as_utc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchOptions:
    base_backoff_s: float = 5.0
    max_backoff_s: float = 600.0
    max_attempts: int = 12
    claim_lease_s: float = 60.0
    max_parallel: int = 8

    def __post_init__(self) -> None:
        if self.base_backoff_s <= 0 or self.max_backoff_s < self.base_backoff_s:
            raise ValueError("need 0 < base_backoff_s <= max_backoff_s")
        if self.max_attempts < 1 or self.claim_lease_s <= 0 or self.max_parallel < 1:
            raise ValueError("max_attempts, claim_lease_s and max_parallel must be positive")


@dataclass
class DeliveryReport:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    rate_limited: int = 0
    deferred: int = 0
    attempts: list[tuple[str, bool]] = field(default_factory=list)


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff before attempt ``attempt + 1``.

    >>> backoff_delay(1, base_s=1, cap_s=60, rng=random.Random(0)) <= 1
    True
    >>> backoff_delay(20, base_s=1, cap_s=60, rng=random.Random(0)) <= 60
    True
    """
    ceiling = min(cap_s, base_s * 2 ** max(0, attempt - 1))
    return rng.uniform(0.0, ceiling)


@dataclass
class _Attempt:
    row: dict[str, Any]
    result: SendResult | None  # None: not attempted (an earlier row of the chain failed)
    sent_at: datetime


def _send_chain(notifier: Notifier, rows: list[dict[str, Any]],
                clock: Callable[[], datetime],
                stop: threading.Event | None = None) -> list[_Attempt]:
    out: list[_Attempt] = []
    stopped = False
    for row in rows:
        if stopped or (stop is not None and stop.is_set()):
            out.append(_Attempt(row, None, clock()))
            continue
        sent_at = clock()
        try:
            result = notifier.send(row["payload"], now=sent_at)
        except Exception as exc:  # noqa: BLE001 - a broken notifier must not stop the loop
            result = SendResult(ok=False, error=notifier.redact(f"{type(exc).__name__}: {exc}"))
        out.append(_Attempt(row, result, sent_at))
        # a dead-lettered row no longer blocks its successors; a retry does
        if not result.ok and not result.permanent:
            stopped = True
    return out


def deliver_due(engine: Engine, *, channels: Mapping[str, Notifier],
                now: datetime | None = None, limit: int = 100,
                options: DispatchOptions | None = None, telemetry: Telemetry | None = None,
                rng: random.Random | None = None,
                stop: threading.Event | None = None) -> DeliveryReport:
    """One delivery pass over due outbox rows of ``channels``; returns what happened.

    Once ``stop`` is set no further send starts: sends in flight finish and are recorded,
    the claimed rows not yet sent are released (due again at once, for any notifier)."""
    options = options or DispatchOptions()
    rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    fixed = None if now is None else as_utc(now)

    def clock() -> datetime:
        return fixed if fixed is not None else datetime.now(UTC)

    report = DeliveryReport()
    start = clock()
    chains: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with engine.begin() as conn:
        budget = {name: n.bucket.available() for name, n in channels.items()}
        ready = [name for name, tokens in budget.items() if tokens >= 1]
        rows = outbox_store.select_due(conn, now=start, channels=ready, limit=limit)
        if not rows:
            return report
        pending = outbox_store.pending_chains(conn,
                                              incident_ids={r["incident_id"] for r in rows})
        position: dict[tuple[int, str], int] = {}
        for row in rows:
            key = (int(row["incident_id"]), str(row["channel"]))
            pos = position.get(key, 0)
            chain = pending.get(key, [])
            if pos < 0 or pos >= len(chain) or chain[pos] != row["id"]:
                position[key] = -1  # an earlier row is not ours to send now: keep the order
                report.deferred += 1
                continue
            if budget[key[1]] < 1:
                position[key] = -1
                report.rate_limited += 1
                continue
            budget[key[1]] -= 1
            position[key] = pos + 1
            chains.setdefault(key, []).append(row)
        claimed = [row for chain in chains.values() for row in chain]
        for name in {key[1] for key in chains}:
            wanted = sum(len(c) for k, c in chains.items() if k[1] == name)
            channels[name].bucket.take(wanted)
        outbox_store.lease(conn, ids=[int(r["id"]) for r in claimed],
                           until=start + timedelta(seconds=options.claim_lease_s))
    report.claimed = len(claimed)
    if not chains:
        # every due row waits behind an earlier one of its incident that another notifier
        # holds (found by tests/chaos: two notifiers, one crashed on an empty pool)
        return report

    work = [(channels[key[1]], rows_) for key, rows_ in chains.items()]
    if len(work) == 1 or options.max_parallel == 1:
        results = [_send_chain(n, r, clock, stop) for n, r in work]
    else:
        with ThreadPoolExecutor(max_workers=min(options.max_parallel, len(work))) as pool:
            results = list(pool.map(lambda w: _send_chain(w[0], w[1], clock, stop), work))

    with engine.begin() as conn:
        for (notifier, _rows), attempts in zip(work, results, strict=True):
            for attempt in attempts:
                _record(conn, notifier, attempt, options, rng, report, telemetry, clock)
    return report


def _record(conn: Any, notifier: Notifier, attempt: _Attempt, options: DispatchOptions,
            rng: random.Random, report: DeliveryReport, telemetry: Telemetry | None,
            clock: Callable[[], datetime]) -> None:
    row, result = attempt.row, attempt.result
    outbox_id = int(row["id"])
    if result is None:
        # not attempted: due again at once; the failed row ahead of it keeps it waiting
        notifier.bucket.give_back(1)
        outbox_store.lease(conn, ids=[outbox_id], until=attempt.sent_at)
        report.deferred += 1
        return
    attempts = int(row["attempts"]) + 1
    key = str(row["idempotency_key"])
    report.attempts.append((key, result.ok))
    context = {"incident_id": int(row["incident_id"]), "channel": notifier.name,
               "idempotency_key": key, "attempt": attempts}
    if result.ok:
        outbox_store.mark_delivered(conn, outbox_id=outbox_id, attempts=attempts, at=clock())
        report.delivered += 1
        outcome = "delivered"
        log.info("notification %s delivered to channel %s", key, notifier.name,
                 extra=context)
    elif result.permanent or attempts >= options.max_attempts:
        outbox_store.mark_dead(conn, outbox_id=outbox_id, attempts=attempts, at=clock(),
                               error=result.error or "failed")
        report.dead += 1
        outcome = "dead"
        log.warning("notification %s to channel %s dead after %d attempts: %s", key,
                    notifier.name, attempts, result.error, extra=context)
    else:
        delay = backoff_delay(attempts, base_s=options.base_backoff_s,
                              cap_s=options.max_backoff_s, rng=rng)
        if result.retry_after_s is not None:
            delay = max(delay, min(result.retry_after_s, options.max_backoff_s))
        outbox_store.mark_retry(conn, outbox_id=outbox_id, attempts=attempts,
                                next_attempt_at=attempt.sent_at + timedelta(seconds=delay),
                                error=result.error or "failed")
        report.retried += 1
        outcome = "retry"
        log.info("notification %s to channel %s failed (attempt %d, retry in %.1fs): %s",
                 key, notifier.name, attempts, delay, result.error, extra=context)
    if telemetry is not None:
        telemetry.notifications.labels(notifier.name, outcome).inc()


def refresh_firing(engine: Engine, *, channels: Mapping[str, Notifier],
                   now: datetime | None = None) -> int:
    """Re-send the latest delivered message of every active incident to channels that need
    a heartbeat (Alertmanager forgets alerts after their ``endsAt``); returns requests sent.
    """
    refreshable = [name for name, n in channels.items() if n.type == "alertmanager"]
    if not refreshable:
        return 0
    with engine.begin() as conn:
        latest = outbox_store.latest_delivered_for_active(conn, channels=refreshable)
    sent = 0
    for row in latest:
        notifier = channels[row["channel"]]
        if notifier.bucket.take(1) < 1:
            continue
        result = notifier.send(row["payload"], now=now or datetime.now(UTC))
        sent += 1
        if not result.ok:
            log.info("heartbeat of incident %s to channel %s failed: %s", row["incident_id"],
                     notifier.name, result.error)
    return sent
