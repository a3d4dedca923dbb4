"""``dqpulse doctor``: the settings and the model checked against the world.

One :class:`CheckResult` per check, each bounded by a short timeout (a wrong Kafka port
fails in seconds, it does not hang): the model file, the database (reachable, at the
latest migration), Kafka (reachable, credentials accepted), every dataset's topic (present,
with its partition count), the schema registry (for Avro datasets without an inline
schema), every notification channel (its secret's environment variable set, its URL's
host resolvable) and Prometheus (when ``DQPULSE_PROMETHEUS_URL`` is set).
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
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
from dqpulse.sources.kafka_confluent import client_config
from dqpulse.spec import Spec, parse_spec
from dqpulse.store import datasets as dataset_store
from dqpulse.store.db import MIGRATIONS_DIR

_MISSING_ENV = re.compile(
    r"notifications\[(\d+)\]\.(url|secret): environment variable (\w+) is not set")


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


def run_checks(settings: Settings, *, timeout_s: float = 5.0) -> Iterator[CheckResult]:
    """Every check, in order; checks that need an earlier one's answer are skipped when it
    failed (the model from the database needs the database)."""
    spec, missing_env, model_result = _model(settings)
    engine = _engine(settings.database_url, timeout_s)
    try:
        database_ok = yield from _database(engine, settings, timeout_s)
        if spec is None and model_result is None:
            spec, model_result = _stored_model(engine, database_ok, timeout_s)
        if model_result is not None:
            yield model_result
        yield from _kafka(settings, spec, timeout_s)
        if spec is not None:
            yield from _registry(settings, spec, timeout_s)
            yield from _channels(spec, missing_env, timeout_s)
        yield from _prometheus(settings, timeout_s)
    finally:
        engine.dispose()


def _model(settings: Settings) -> tuple[Spec | None, dict[int, list[str]], CheckResult | None]:
    """The model file parsed with the environment; unset channel variables are reported
    per channel (and replaced by a placeholder so every other check can run)."""
    path = Path(settings.config_file)
    if not path.is_file():
        return None, {}, None
    text_ = path.read_text(encoding="utf-8")
    environ = dict(os.environ)
    missing: dict[int, list[str]] = {}
    try:
        spec = parse_spec(text_, source=str(path), environ=environ)
    except ConfigError as exc:
        others = []
        for problem in exc.problems:
            match = _MISSING_ENV.search(problem)
            if match:
                missing.setdefault(int(match.group(1)), []).append(match.group(3))
                environ[match.group(3)] = "unset-placeholder"
            else:
                others.append(problem)
        if others:
            return None, missing, CheckResult(
                "model", False, f"{path}: {others[0]}" + (
                    f" (+{len(others) - 1} more)" if len(others) > 1 else ""),
                f"run `dqpulse validate -f {path}` and fix each line it names")
        spec = parse_spec(text_, source=str(path), environ=environ)
    return spec, missing, CheckResult(
        "model", True, f"{path}: {len(spec.datasets)} datasets, "
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
        return None, CheckResult("model", False, "no model file and the database is not "
                                 "usable", "set DQPULSE_CONFIG_FILE or fix the database")

    def load() -> Spec:
        with engine.connect() as conn:
            return Spec(datasets=dataset_store.get_all(conn))

    try:
        spec: Spec = _bounded(load, timeout_s)
    except Exception as exc:  # noqa: BLE001 - the check reports any failure
        return None, CheckResult("model", False, f"stored model: {_error(exc)}",
                                 "set DQPULSE_CONFIG_FILE or run `dqpulse apply -f FILE`")
    if not spec.datasets:
        return spec, CheckResult("model", False, "no model file and no stored datasets",
                                 "write dqpulse.yaml and run `dqpulse apply -f dqpulse.yaml`")
    return spec, CheckResult("model", True, f"{len(spec.datasets)} datasets stored")


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
    try:
        response = httpx.get(f"{url}/subjects", timeout=timeout_s)
        response.raise_for_status()
    except Exception as exc:  # noqa: BLE001 - the check reports any failure
        yield CheckResult("schema-registry", False, f"{url}: {_error(exc)}",
                          "check DQPULSE_SCHEMA_REGISTRY_URL and that the registry runs")
        return
    yield CheckResult("schema-registry", True, f"{url}: {len(response.json())} subjects")


def _channels(spec: Spec, missing_env: dict[int, list[str]], timeout_s: float
              ) -> Iterator[CheckResult]:
    for index, channel in enumerate(spec.notifications):
        name = f"channel {channel.name}"
        unset = missing_env.get(index)
        if unset:
            yield CheckResult(name, False, f"environment variable {', '.join(unset)} not set",
                              f"export {unset[0]} in the notifier's environment")
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
    try:
        response = httpx.get(f"{url}/-/ready", timeout=timeout_s)
        response.raise_for_status()
    except Exception as exc:  # noqa: BLE001 - the check reports any failure
        yield CheckResult("prometheus", False, f"{url}: {_error(exc)}",
                          "check DQPULSE_PROMETHEUS_URL and that Prometheus runs")
        return
    yield CheckResult("prometheus", True, f"{url} ready")
