"""``dqpulse doctor``: the settings and the model checked against the world.

One :class:`CheckResult` per check, each bounded by a short timeout (a wrong Kafka port
fails in seconds, it does not hang): the model file, the database (reachable, at the
latest migration), windows that finalization skipped and OpenLineage events given up,
Kafka (reachable, credentials accepted), every dataset's topic (present,
with its partition count), the schema registry (for Avro datasets without an inline
schema), every notification channel (its secret's environment variable set, its URL's
host resolvable) and Prometheus (when ``DQPULSE_PROMETHEUS_URL`` is set).
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from confluent_kafka.admin import AdminClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from dqpulse.config import Settings
from dqpulse.errors import ConfigError
from dqpulse.logs import redact
from dqpulse.services.model import ModelVersion, current_model
from dqpulse.sources.kafka_confluent import client_config
from dqpulse.spec import Spec, expand_secrets, load_spec
from dqpulse.store import checkpoints
from dqpulse.store import openlineage as openlineage_store
from dqpulse.store.db import MIGRATIONS_DIR
from dqpulse.utc import iso

_MISSING_ENV = re.compile(r"environment variable (\w+) is not set")


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        status = "ok  " if self.ok else "FAIL"
        text = f"{status} {self.name}: {self.detail}"
        if not self.ok and self.fix:
            text += f" -> {self.fix}"
        return redact(text)


def _bounded(fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()`` on a helper thread, given up after ``timeout_s`` (TimeoutError)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name="dqpulse-doctor")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout_s:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"


def run_checks(settings: Settings, *, model_file: str | None = None,
               timeout_s: float = 5.0) -> Iterator[CheckResult]:
    """Every check, in order. The model is ``model_file`` when given (checked before
    ``dqpulse apply``), else the newest version applied to the database (what the
    processes run); checks that need an earlier one's answer are skipped when it failed."""
    engine = _engine(settings.database_url, timeout_s)
    try:
        database_ok = yield from _database(engine, settings, timeout_s)
        if model_file is not None:
            spec, model_result = _file_model(model_file)
        else:
            spec, model_result = _stored_model(engine, database_ok, timeout_s)
        yield model_result
        if database_ok:
            yield from window_checks(engine, spec, timeout_s)
        yield from _kafka(settings, spec, timeout_s)
        if spec is not None:
            yield from _registry(settings, spec, timeout_s)
            yield from _channels(spec, timeout_s)
        yield from _prometheus(settings, timeout_s)
    finally:
        engine.dispose()


def _file_model(path: str) -> tuple[Spec | None, CheckResult]:
    """The model file as ``dqpulse apply`` would store it (``${VAR}`` kept: the channel
    checks expand them)."""
    try:
        spec = load_spec(path, expand_env=False)
    except ConfigError as exc:
        more = f" (+{len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        return None, CheckResult("model", False, f"{exc.problems[0]}{more}",
                                 f"run `dqpulse validate -f {path}` and fix each line it names")
    return spec, CheckResult("model", True, f"{path}: {len(spec.datasets)} datasets, "
                                            f"{len(spec.notifications)} notification channels")


def _engine(url: str, timeout_s: float) -> Engine:
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        connect_args["connect_timeout"] = max(1, round(timeout_s))
    return create_engine(url, poolclass=NullPool, connect_args=connect_args)


def _database(engine: Engine, settings: Settings, timeout_s: float
              ) -> Generator[CheckResult, None, bool]:
    url = make_url(settings.database_url)
    where = f"{url.get_backend_name()} at {url.host or ''}{':' if url.port else ''}" \
            f"{url.port or ''}/{url.database or ''}"

    def current() -> tuple[set[str], set[str]]:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            revisions = set(MigrationContext.configure(conn).get_current_heads())
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        heads = set(ScriptDirectory.from_config(config).get_heads())
        return revisions, heads

    try:
        revisions, heads = _bounded(current, timeout_s + 1)
    except Exception as exc:  # noqa: BLE001 - the check reports any failure
        yield CheckResult("database", False, f"{where}: {_error(exc)}",
                          "check DQPULSE_DATABASE_URL (host, port, user, password) and that "
                          "the server runs")
        return False
    yield CheckResult("database", True, f"{where} answers")
    if revisions == heads:
        yield CheckResult("database.migrations", True, f"at head {', '.join(sorted(heads))}")
        return True
    yield CheckResult("database.migrations", False,
                      f"at {', '.join(sorted(revisions)) or 'no revision (empty schema)'}, "
                      f"head is {', '.join(sorted(heads))}", "run `dqpulse migrate`")
    return False


def _stored_model(engine: Engine, database_ok: bool, timeout_s: float
                  ) -> tuple[Spec | None, CheckResult]:
    if not database_ok:
        return None, CheckResult("model", False, "the database is not usable: no stored model",
                                 "fix the database, or check a file with `doctor -f FILE`")
    try:
        model: ModelVersion = _bounded(lambda: current_model(engine), timeout_s)
    except Exception as exc:  # noqa: BLE001 - the check reports any failure
        return None, CheckResult("model", False, f"stored model: {_error(exc)}",
                                 "run `dqpulse apply -f dqpulse.yaml`")
    spec = model.spec
    if not spec.datasets:
        return spec, CheckResult("model", False, f"version {model.version}: no datasets",
                                 "write dqpulse.yaml and run `dqpulse apply -f dqpulse.yaml`")
    return spec, CheckResult("model", True, f"version {model.version}: "
                                            f"{len(spec.datasets)} datasets, "
                                            f"{len(spec.notifications)} notification channels")


def window_checks(engine: Engine, spec: Spec | None, timeout_s: float) -> Iterator[CheckResult]:
    """Windows that finalization skipped after failing every try, and OpenLineage events
    that were given up (when emission is configured): data that did not go through."""
    def read() -> tuple[dict[str, list[float]], dict[str, tuple[float, int]],
                        list[tuple[str, int, int, int]], int]:
        with engine.connect() as conn:
            return (checkpoints.skipped_windows(conn), checkpoints.unfinished_finalize(conn),
                    checkpoints.restored_often(conn),
                    openlineage_store.counts(conn).get(openlineage_store.DEAD, 0))

    try:
        skipped, unfinished, restored, dead = _bounded(read, timeout_s)
    except Exception as exc:  # noqa: BLE001 - the check reports any failure
        yield CheckResult("windows", False, f"could not read them: {_error(exc)}",
                          "run `dqpulse migrate`, then check again")
        return
    if skipped:
        listed = "; ".join(f"{name}: {len(starts)} ({', '.join(map(iso, starts[:3]))}"
                           f"{', ...' if len(starts) > 3 else ''})"
                           for name, starts in sorted(skipped.items()))
        yield CheckResult("windows", False, f"skipped after failing every try: {listed}",
                          "the worker log has each error (`finalizing the window at ... "
                          "failed`); report it; their partials stay in window_partials: "
                          "once the cause is fixed, `dqpulse windows refinalize` writes "
                          "them (docs/operations.md, failure behaviour)")
    else:
        yield CheckResult("windows", True, "none skipped")
    if unfinished:
        listed = "; ".join(f"{name}: {tries - 1} at the window at {iso(start)}"
                           for name, (start, tries) in sorted(unfinished.items()))
        yield CheckResult("finalize", False, "finalize passes whose process died (a window "
                          f"that kills its worker?): {listed}",
                          "look for worker restarts and the kernel's out-of-memory kills; "
                          "the window is tried alone, then without alerting, then without "
                          "scoring, then skipped (docs/operations.md, failure behaviour)")
    else:
        yield CheckResult("finalize", True, "no pass retried after its process died")
    if restored:
        listed = "; ".join(f"{name}[{partition}] at offset {offset}: {restores} restores"
                           for name, partition, offset, restores in restored)
        yield CheckResult("partitions", False, "checkpoints restored again and again with no "
                          f"newer one (their workers die first): {listed}",
                          "the worker log has each crash's stack; if a record after that "
                          "offset kills the worker, `dqpulse partitions skip` moves the "
                          "checkpoint past it (docs/operations.md)")
    else:
        yield CheckResult("partitions", True, "no checkpoint restored 3 times without a newer one")
    if spec is not None and spec.openlineage.emit is not None:
        if dead:
            yield CheckResult("openlineage.outbox", False,
                              f"{dead} event(s) dead: the receiver rejected them, or they "
                              "could not be built", "read last_error in openlineage_outbox; "
                              "docs/operations.md says how to send them again")
        else:
            yield CheckResult("openlineage.outbox", True, "no dead event")


def _kafka(settings: Settings, spec: Spec | None, timeout_s: float) -> Iterator[CheckResult]:
    config = client_config(settings)
    # librdkafka would log every refused connection: the check's line says it once
    config.update({"log_level": 0, "socket.timeout.ms": int(timeout_s * 1000),
                   "socket.connection.setup.timeout.ms": int(timeout_s * 1000)})
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - KafkaException carries the reason
        yield CheckResult("kafka", False, f"{settings.kafka_bootstrap}: {_error(exc)}",
                          "check DQPULSE_KAFKA_BOOTSTRAP (host:port), the security protocol "
                          "and the SASL credentials")
        return
    auth = (f", {settings.kafka_sasl_mechanism} credentials accepted"
            if settings.kafka_sasl_mechanism else "")
    yield CheckResult("kafka", True, f"{settings.kafka_bootstrap}: {len(metadata.brokers)} "
                                     f"broker(s) answered over "
                                     f"{settings.kafka_security_protocol}{auth}")
    for dataset in spec.datasets if spec is not None else []:
        topic = metadata.topics.get(dataset.topic)
        name = f"topic {dataset.topic}"
        if topic is None or topic.error is not None:
            reason = "missing" if topic is None else str(topic.error)
            yield CheckResult(name, False, f"dataset {dataset.name}: {reason}",
                              f"create it (kafka-topics.sh --create --topic {dataset.topic} "
                              f"--partitions N) or fix the dataset's topic")
        else:
            yield CheckResult(name, True, f"dataset {dataset.name}: "
                                          f"{len(topic.partitions)} partitions")


def _registry(settings: Settings, spec: Spec, timeout_s: float) -> Iterator[CheckResult]:
    needing = [d.name for d in spec.datasets if d.format == "avro" and d.avro_schema is None]
    if not needing:
        return
    if not settings.schema_registry_url:
        yield CheckResult("schema-registry", False, f"Avro datasets {', '.join(needing)} have "
                          "no inline schema and no registry is set",
                          "set DQPULSE_SCHEMA_REGISTRY_URL or give each an avro_schema")
        return
    url = settings.schema_registry_url.rstrip("/")
    response = yield from _http_check(
        "schema-registry", url, "/subjects", timeout_s,
        "check DQPULSE_SCHEMA_REGISTRY_URL and that the registry runs")
    if response is not None:
        yield CheckResult("schema-registry", True, f"{url}: {len(response.json())} subjects")


def _http_check(name: str, url: str, path: str, timeout_s: float,
                fix: str) -> Generator[CheckResult, None, httpx.Response | None]:
    """GET url+path; on any failure yield a failed check and return None."""
    try:
        response = httpx.get(f"{url}{path}", timeout=timeout_s)
        response.raise_for_status()
    except Exception as exc:  # noqa: BLE001 - the check reports any failure
        yield CheckResult(name, False, f"{url}: {_error(exc)}", fix)
        return None
    return response


def _channels(spec: Spec, timeout_s: float) -> Iterator[CheckResult]:
    for channel in spec.notifications:
        name = f"channel {channel.name}"
        try:
            (channel,) = expand_secrets(Spec(notifications=[channel])).notifications
        except ConfigError as exc:
            unset = [m.group(1) for p in exc.problems if (m := _MISSING_ENV.search(p))]
            yield CheckResult(name, False, f"environment variable {', '.join(unset)} not set",
                              f"export {unset[0] if unset else 'it'} in the notifier's "
                              "environment")
            continue
        parts = urlsplit(channel.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            yield CheckResult(name, False, f"URL scheme {parts.scheme!r}: not http(s)",
                              "fix the channel's url")
            continue
        host, port = parts.hostname, parts.port or 443
        try:
            _bounded(partial(socket.getaddrinfo, host, port), timeout_s)
        except Exception as exc:  # noqa: BLE001 - the check reports any failure
            yield CheckResult(name, False, f"host {host} does not resolve ({_error(exc)})",
                              "fix the channel's url or the DNS")
            continue
        secret = "secret set" if channel.secret else "no secret"
        yield CheckResult(name, True, f"{channel.type}, host {host} resolves, {secret}")


def _prometheus(settings: Settings, timeout_s: float) -> Iterator[CheckResult]:
    if not settings.prometheus_url:
        return
    url = settings.prometheus_url.rstrip("/")
    response = yield from _http_check(
        "prometheus", url, "/-/ready", timeout_s,
        "check DQPULSE_PROMETHEUS_URL and that Prometheus runs")
    if response is not None:
        yield CheckResult("prometheus", True, f"{url} ready")
