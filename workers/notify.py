"""The notify worker: deliver the notification outbox until stopped.

Loop: one :func:`dqpulse.alerts.dispatch.deliver_due` pass; sleep ``poll_interval_s`` unless
the pass was full (more rows are due); every ``refresh_interval_s`` re-send active
incidents to Alertmanager channels so they keep firing. A database error is logged and
retried with a growing pause; it never ends the loop. Safe to run several copies: claims
use ``FOR UPDATE SKIP LOCKED`` and a lease. Killed at any point, it loses nothing: a row
is pending until its delivery is recorded. Beside it, a thread drains the OpenLineage
emission outbox when the model configures ``openlineage.emit``.

``dqpulse worker notify`` and ``python -m workers.notify --help`` (with options) both
run :func:`run_notify`.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Mapping

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from dqpulse.alerts.dispatch import DispatchOptions, deliver_due, refresh_firing
from dqpulse.alerts.notifiers import Notifier, build_notifiers
from dqpulse.config import Settings
from dqpulse.errors import ConfigError
from dqpulse.health import Health
from dqpulse.logs import configure_logging, register_secrets, spec_secrets
from dqpulse.services.model import ModelWatch, current_model
from dqpulse.services.openlineage_emit import run_emitter
from dqpulse.spec import OpenLineageEmitSpec, Spec, expand_secrets
from dqpulse.store.db import make_engine
from dqpulse.telemetry import Telemetry
from workers.probes import make_health, probes
from workers.signals import stop_event_on_signals

log = logging.getLogger(__name__)


def options_from_settings(settings: Settings) -> DispatchOptions:
    """Dispatch options from ``DQPULSE_NOTIFY_*`` settings where the Settings class has them."""
    defaults = DispatchOptions()
    return DispatchOptions(
        base_backoff_s=float(getattr(settings, "notify_backoff_base_s",
                                     defaults.base_backoff_s)),
        max_backoff_s=float(getattr(settings, "notify_backoff_max_s", defaults.max_backoff_s)),
        max_attempts=int(getattr(settings, "notify_max_attempts", defaults.max_attempts)),
        claim_lease_s=float(getattr(settings, "notify_claim_lease_s",
                                    defaults.claim_lease_s)),
        max_parallel=int(getattr(settings, "notify_max_parallel", defaults.max_parallel)),
    )


def run_notifier(
    settings: Settings,
    engine: Engine,
    spec: Spec,
    *,
    stop_event: threading.Event,
    poll_interval_s: float = 1.0,
    options: DispatchOptions | None = None,
    telemetry: Telemetry | None = None,
    channels: Mapping[str, Notifier] | None = None,
    refresh_interval_s: float = 900.0,
    batch_size: int = 100,
    timeout_s: float = 10.0,
    health: Health | None = None,
    watch: ModelWatch | None = None,
) -> None:
    """Deliver due notifications until ``stop_event`` is set: no send starts after it is,
    sends in flight finish (within the channel's HTTP timeout) and are recorded. With
    ``watch``, a newly applied model's channels replace the running ones before the next
    delivery."""
    options = options or options_from_settings(settings)
    own = channels is None
    notifiers = dict(channels) if channels is not None else _build(spec, timeout_s)
    log.info("notifier started: channels %s", ", ".join(sorted(notifiers)) or "(none)")
    failures = 0
    next_refresh = time.monotonic() + refresh_interval_s
    try:
        while not stop_event.is_set():
            if health is not None:
                health.beat()
            model = watch.changed() if watch is not None and own else None
            if model is not None:
                for notifier in notifiers.values():
                    notifier.close()
                register_secrets(spec_secrets(model.spec))
                notifiers = _build(model.spec, timeout_s)
                log.info("model version %d: channels %s", model.version,
                         ", ".join(sorted(notifiers)) or "(none)")
            try:
                report = deliver_due(engine, channels=notifiers, limit=batch_size,
                                     options=options, telemetry=telemetry, stop=stop_event)
                if time.monotonic() >= next_refresh and not stop_event.is_set():
                    refresh_firing(engine, channels=notifiers)
                    next_refresh = time.monotonic() + refresh_interval_s
                failures = 0
                if health is not None:
                    health.progress()
            except SQLAlchemyError as exc:
                failures += 1
                pause = min(30.0, poll_interval_s * 2 ** min(failures, 8))
                log.warning("notifier: database error (%s); retrying in %.1fs",
                            type(exc).__name__, pause)
                stop_event.wait(pause)
                continue
            if report.claimed < batch_size:
                stop_event.wait(poll_interval_s)
    finally:
        if own:
            for notifier in notifiers.values():
                notifier.close()
        log.info("notifier stopped")


def _build(spec: Spec, timeout_s: float) -> dict[str, Notifier]:
    """The model's channels with their ``${VAR}`` secrets expanded from this process's
    environment; a channel whose variable is not set is left out (its deliveries wait,
    pending) and named in the log, without the value."""
    usable = []
    for channel in spec.notifications:
        try:
            usable += expand_secrets(Spec(notifications=[channel])).notifications
        except ConfigError as exc:
            log.error("channel %s cannot deliver: %s", channel.name, "; ".join(exc.problems))
    return dict(build_notifiers(usable, timeout_s=timeout_s))


def run_notify(settings: Settings, *, spec: Spec | None = None, database_url: str | None = None,
               options: DispatchOptions | None = None, poll_interval_s: float = 1.0,
               timeout_s: float = 10.0, max_seconds: float | None = None) -> int:
    """The notify process (``dqpulse worker notify`` and ``python -m workers.notify``):
    deliver until SIGTERM/SIGINT or ``max_seconds``. ``spec``: default the current model,
    followed as new versions are applied."""
    stop = stop_event_on_signals(settings.stop_deadline_s)
    url = database_url or settings.database_url
    engine = make_engine(url)
    timer = None
    if max_seconds is not None:
        timer = threading.Timer(max_seconds, stop.set)
        timer.daemon = True
        timer.start()
    try:
        watch = None
        if spec is None:
            model = current_model(engine)
            spec = model.spec
            watch = ModelWatch(engine, model.version,
                               interval_s=settings.model_poll_interval_s)
        register_secrets(spec_secrets(spec))
        # readiness: a delivery pass (one database round trip at least) within
        # health_checkpoint_intervals x the poll interval, at least 30 s
        health = make_health(settings, progress_interval_s=max(
            poll_interval_s, 30.0 / settings.health_checkpoint_intervals))
        telemetry = Telemetry(field_metric_budget=settings.field_metric_budget)
        emitter = _start_emitter(engine, spec, stop, watch, settings)
        with probes(settings, "notify", registry=telemetry.registry, health=health,
                    database_url=url):
            run_notifier(settings, engine, spec, stop_event=stop,
                         poll_interval_s=poll_interval_s, options=options,
                         timeout_s=timeout_s, health=health, telemetry=telemetry,
                         watch=watch)
        emitter.join(timeout=settings.stop_deadline_s)
    finally:
        if timer is not None:
            timer.cancel()
        engine.dispose()
    return 0


def _start_emitter(engine: Engine, spec: Spec, stop: threading.Event,
                   followed: ModelWatch | None, settings: Settings) -> threading.Thread:
    """The OpenLineage sender (dqpulse.services.openlineage_emit) beside the notifier: it
    drains the emission outbox while ``openlineage.emit`` is configured in the model."""
    latest = {"spec": spec}
    watch = None if followed is None else ModelWatch(
        engine, followed.version, interval_s=settings.model_poll_interval_s)

    def current() -> OpenLineageEmitSpec | None:
        model = watch.changed() if watch is not None else None
        if model is not None:
            latest["spec"] = model.spec
        return latest["spec"].openlineage.emit

    thread = threading.Thread(target=run_emitter, args=(engine, current),
                              kwargs={"stop_event": stop}, daemon=True,
                              name="dqpulse-openlineage")
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.notify",
                                     description="Deliver dqpulse's notification outbox.")
    parser.add_argument("--database-url", help="default: DQPULSE_DATABASE_URL")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--base-backoff", type=float)
    parser.add_argument("--max-backoff", type=float)
    parser.add_argument("--max-attempts", type=int)
    parser.add_argument("--lease", type=float, help="claim lease in seconds")
    parser.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout (s)")
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(settings)
    base = options_from_settings(settings)
    options = DispatchOptions(
        base_backoff_s=args.base_backoff or base.base_backoff_s,
        max_backoff_s=args.max_backoff or base.max_backoff_s,
        max_attempts=args.max_attempts or base.max_attempts,
        claim_lease_s=args.lease or base.claim_lease_s,
        max_parallel=base.max_parallel,
    )
    return run_notify(settings, database_url=args.database_url, options=options,
                      poll_interval_s=args.poll_interval, timeout_s=args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
