"""The dqpulse.yaml model: what a process runs, and ``dqpulse apply``."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from dqpulse.config import Settings
from dqpulse.spec import Spec, load_spec
from dqpulse.store import datasets as dataset_store


def apply_model(engine: Engine, spec: Spec, *, prune: bool = False) -> dict[str, list[str]]:
    """Store ``spec``'s datasets and lineage, all or nothing; returns the dataset names by
    what happened to them (created, updated, unchanged, deleted)."""
    with engine.begin() as conn:
        return dataset_store.apply_spec(conn, spec=spec, prune=prune)


def current_model(settings: Settings, engine: Engine) -> Spec:
    """The dqpulse.yaml model a process runs: the config file when present, else what
    ``dqpulse apply`` stored."""
    if Path(settings.config_file).is_file():
        return load_spec(settings.config_file)
    with engine.begin() as conn:
        return Spec(datasets=dataset_store.get_all(conn))
