"""The dqpulse.yaml model: ``dqpulse apply`` stores it as a numbered version, every process
runs the newest version (none reads the file), and a plan says what an apply would change.

Secrets stay ``${VAR}`` references in the stored model; only the notifier expands them
(:func:`dqpulse.spec.expand_secrets`), from its own environment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, exists, select
from sqlalchemy.exc import SQLAlchemyError

from dqpulse.errors import ConfigError
from dqpulse.spec import DatasetSpec, Spec, has_env_reference, line_in
from dqpulse.store import datasets as dataset_store
from dqpulse.store import models as model_store
from dqpulse.store.tables import partition_checkpoints, window_partials

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    """One applied model: its number (0: nothing applied yet) and what it holds."""

    version: int
    spec: Spec
    applied_by: str = ""
    applied_at: Any = None


@dataclass
class Plan:
    """What applying a model would change, by kind of object and name."""

    datasets: dict[str, list[str]] = field(default_factory=dict)
    notifications: dict[str, list[str]] = field(default_factory=dict)
    lineage: dict[str, list[str]] = field(default_factory=dict)
    dataset_changes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(self.datasets.get(k) or self.notifications.get(k) or self.lineage.get(k)
                       for k in ("created", "updated", "removed"))

    def to_json(self) -> dict[str, Any]:
        return {"datasets": self.datasets, "notifications": self.notifications,
                "lineage": self.lineage, "dataset_changes": self.dataset_changes}

    def lines(self) -> list[str]:
        out = []
        for name in self.datasets.get("created", []):
            out.append(f"dataset {name}: created")
        for name in self.datasets.get("updated", []):
            keys = ", ".join(self.dataset_changes.get(name, []))
            out.append(f"dataset {name}: updated ({keys})")
        for name in self.datasets.get("removed", []):
            out.append(f"dataset {name}: removed (no longer consumed; its history is kept)")
        for name in self.datasets.get("unchanged", []):
            out.append(f"dataset {name}: unchanged")
        for verb in ("created", "updated", "removed"):
            out += [f"channel {name}: {verb}" for name in self.notifications.get(verb, [])]
            out += [f"lineage {edge}: {verb}" for edge in self.lineage.get(verb, [])]
        return out


@dataclass(frozen=True)
class ApplyResult:
    plan: Plan
    version: int
    new_version: bool


def model_document(spec: Spec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True)


def _digest(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _by_name(items: list[dict[str, Any]], key: str = "name") -> dict[str, dict[str, Any]]:
    return {str(item[key]): item for item in items}


def _diff(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]
          ) -> dict[str, list[str]]:
    return {"created": sorted(set(new) - set(old)),
            "updated": sorted(n for n in set(new) & set(old) if new[n] != old[n]),
            "removed": sorted(set(old) - set(new)),
            "unchanged": sorted(n for n in set(new) & set(old) if new[n] == old[n])}


def plan_model(current: Spec, proposed: Spec) -> Plan:
    """What replacing ``current`` with ``proposed`` changes, dataset by dataset (with the
    keys that differ), channel by channel and lineage edge by edge."""
    old, new = model_document(current), model_document(proposed)
    old_ds, new_ds = _by_name(old["datasets"]), _by_name(new["datasets"])
    plan = Plan(datasets=_diff(old_ds, new_ds),
                notifications=_diff(_by_name(old["notifications"]),
                                    _by_name(new["notifications"])))
    for name in plan.datasets["updated"]:
        a, b = old_ds[name], new_ds[name]
        plan.dataset_changes[name] = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))

    def edges(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {f"{e['from']} -> {e['to']}": e for e in doc["lineage"]}

    plan.lineage = _diff(edges(old), edges(new))
    return plan


def _read(conn: Connection) -> ModelVersion:
    row = model_store.get_latest(conn)
    if row is None:
        # a database from before model versions: its datasets are the whole model
        return ModelVersion(version=0, spec=Spec(datasets=dataset_store.get_all(conn)))
    return ModelVersion(version=int(row["version"]), spec=Spec.model_validate(row["spec"]),
                        applied_by=str(row["applied_by"]), applied_at=row["applied_at"])


def current_model(engine: Engine) -> ModelVersion:
    """The newest applied model (secrets as ``${VAR}`` references)."""
    with engine.begin() as conn:
        return _read(conn)


def latest_version(engine: Engine) -> int:
    """The newest model version number: what running processes poll (one index read)."""
    with engine.begin() as conn:
        return model_store.latest_version(conn)


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def window_changes(conn: Connection, spec: Spec, source: str = "") -> list[str]:
    """A problem for each dataset of ``spec`` whose ``window`` differs from the one its
    stored windows were cut with (its definition in the database: the current model's, a
    removed dataset's kept row, or for one removed with ``--prune`` the newest model
    version that had it) while it has stored state (checkpoints or open windows).

    A window cannot change in place: the open windows of the old width would share their
    start, and so their key, with windows of the new one (a running worker's checkpoints
    then failed for ever on a duplicate key, and ingest stopped: found in session 48), and
    the history would mix windows of both widths under one series. Before any worker has
    consumed the dataset, its window may change freely."""
    stored = {d.name: d.window for d in dataset_store.get_all(conn)}
    problems = []
    for index, dataset in enumerate(spec.datasets):
        old_window = stored.get(dataset.name)
        if old_window == dataset.window:
            continue
        has_state = conn.execute(select(
            exists().where(partition_checkpoints.c.dataset == dataset.name)
            | exists().where(window_partials.c.dataset == dataset.name))).scalar()
        if not has_state:
            continue
        if old_window is None:  # removed with --prune: its state stayed; what was it?
            before = model_store.last_dataset(conn, name=dataset.name)
            if before is None:
                continue
            old_window = DatasetSpec.model_validate(before).window
            if old_window == dataset.window:
                continue
        line = line_in(source, ("datasets", index, "window")) if source else None
        where = f"{source}:{line}: " if line is not None else (f"{source}: " if source else "")
        problems.append(
            f"{where}datasets[{index}].window: dataset {dataset.name!r} has been measured in "
            f"{_seconds(old_window)} windows and cannot change to {_seconds(dataset.window)} "
            f"in place (its open windows would collide with the new ones, and its history "
            f"would mix both widths): add it under a new name with the new window (e.g. "
            f"{dataset.name}_{_seconds(dataset.window)}, same topic), and remove "
            f"{dataset.name!r} once the new one has history, or keep "
            f"window: {_seconds(old_window)}")
    return problems


def plan_apply(engine: Engine, spec: Spec, *, source: str = "") -> Plan:
    """What :func:`apply_model` would change; raises its ConfigError (a window changed in
    place, :func:`window_changes`) as apply would."""
    with engine.begin() as conn:
        problems = window_changes(conn, spec, source)
        if problems:
            raise ConfigError(problems)
        return plan_model(_read(conn).spec, spec)


def apply_model(engine: Engine, spec: Spec, *, applied_by: str, source: str = "",
                prune: bool = False) -> ApplyResult:
    """Store ``spec`` (secrets unexpanded) as a new model version, all or nothing, unless
    it equals the newest one; datasets and declared lineage are upserted for the API
    (``prune`` also deletes the rows of datasets not in ``spec``; without it a removed
    dataset stays listed with its history, and no process consumes it). A dataset whose
    window changes after it was measured is refused (:func:`window_changes`): ConfigError,
    naming ``source``'s line, and nothing is applied."""
    document = model_document(spec)
    digest = _digest(document)
    with engine.begin() as conn:
        problems = window_changes(conn, spec, source)
        if problems:
            raise ConfigError(problems)  # nothing applied
        current = _read(conn)
        plan = plan_model(current.spec, spec)
        dataset_store.apply_spec(conn, spec=spec, prune=prune)
        latest = model_store.get_latest(conn)
        if latest is not None and latest["digest"] == digest:
            return ApplyResult(plan=plan, version=int(latest["version"]), new_version=False)
        version = model_store.create(conn, digest=digest, spec=document,
                                     changes=plan.to_json(), applied_by=applied_by,
                                     source=source)
    return ApplyResult(plan=plan, version=version, new_version=True)


class ModelWatch:
    """Polls the model version (one index read every ``interval_s``) for a running process.

    :meth:`changed` returns the newer model once per new version and None otherwise; a
    database error is logged and retried at the next poll, so it rides out a restart."""

    def __init__(self, engine: Engine, current: int, *, interval_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine, self.version, self.interval_s = engine, current, interval_s
        self._clock = clock
        self._next = clock() + interval_s

    def changed(self) -> ModelVersion | None:
        now = self._clock()
        if now < self._next:
            return None
        self._next = now + self.interval_s
        try:
            if latest_version(self.engine) <= self.version:
                return None
            model = current_model(self.engine)
        except SQLAlchemyError as exc:
            log.warning("model poll failed (%s); retrying in %.0fs", type(exc).__name__,
                        self.interval_s)
            return None
        log.info("model version %d (was %d) applied by %s", model.version, self.version,
                 model.applied_by or "?")
        self.version = model.version
        return model


class ModelCache:
    """The current model for a request handler: the version is read on each use (one
    index read) and the model reloaded only when it changed. ``fixed`` pins a model (the
    demo and tests that build the app around one)."""

    def __init__(self, engine: Engine, fixed: Spec | None = None) -> None:
        self.engine, self.fixed = engine, fixed
        self._cached: ModelVersion | None = None

    def spec(self) -> Spec:
        if self.fixed is not None:
            return self.fixed
        version = latest_version(self.engine)
        if self._cached is None or self._cached.version != version:
            self._cached = current_model(self.engine)
        return self._cached.spec


def public_document(document: dict[str, Any]) -> dict[str, Any]:
    """The stored model as the API shows it: a channel's ``url`` and ``secret`` appear
    only as the ``${VAR}`` references they were written as; a literal secret is shown as
    ``"***"`` and a literal URL by its scheme and host alone (webhook URLs carry tokens)."""
    channels = []
    for channel in document.get("notifications") or []:
        shown = dict(channel)
        url, secret = shown.get("url"), shown.get("secret")
        if url and not has_env_reference(url):
            parts = urlsplit(url)
            shown["url"] = f"{parts.scheme}://{parts.hostname or ''}/***"
        if secret and not has_env_reference(secret):
            shown["secret"] = "***"  # noqa: S105 - the mask, not a password
        channels.append(shown)
    return {**document, "notifications": channels}


def literal_secrets(spec: Spec) -> list[str]:
    """Channels whose secret (or URL) is written out rather than a ``${VAR}`` reference:
    it would be stored in the database, so ``apply`` warns."""
    return [c.name for c in spec.notifications
            if (c.secret and not has_env_reference(c.secret))]
