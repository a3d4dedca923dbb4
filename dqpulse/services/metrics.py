"""Reads of finalized metric points for the processes that report them (the demo)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from dqpulse.store import metrics as metric_store


def latest_windows(engine: Engine, datasets: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The points of each dataset's newest finalized window (datasets without one are left
    out)."""
    with engine.begin() as conn:
        latest = {name: metric_store.get_latest_window(conn, dataset=name) for name in datasets}
    return {name: points for name, points in latest.items() if points}
