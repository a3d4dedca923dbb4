"""History retention: one pass of partition upkeep and deletion of what expired.

Run by the score worker every ``retention_interval_s`` and by ``dqpulse retention`` (one
pass, e.g. from cron). Each step is its own transaction under one advisory lock, so
several workers never run DDL on the same table at once. Postgres: day partitions of
``metric_points`` are created ahead (and for points that landed in the DEFAULT
partition) and expired days are dropped whole; SQLite deletes by time. Rollups and
resolved incidents (with their alerts, events and notifications) and audit entries are
deleted by time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine

from dqpulse.config import Settings
from dqpulse.store import audit as audit_store
from dqpulse.store import partitions
from dqpulse.store.db import advisory_lock
from dqpulse.store.rollups import RESOLUTIONS

log = logging.getLogger(__name__)

DAY = 86_400.0
LOCK = "dqpulse:retention"


@dataclass(slots=True)
class RetentionReport:
    ran: bool = True
    partitions_created: list[str] = field(default_factory=list)
    partitions_dropped: list[partitions.DroppedPartition] = field(default_factory=list)
    points_deleted: int = 0
    rollups_deleted: int = 0
    incidents_deleted: int = 0
    audit_deleted: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"ran": self.ran, "partitions_created": self.partitions_created,
                "partitions_dropped": [{"name": d.name, "seconds": round(d.seconds, 4)}
                                       for d in self.partitions_dropped],
                "points_deleted": self.points_deleted,
                "rollups_deleted": self.rollups_deleted,
                "incidents_deleted": self.incidents_deleted,
                "audit_deleted": self.audit_deleted}


def _cutoff(now: float, days: float) -> float | None:
    return None if days <= 0 else now - days * DAY


def run_retention(engine: Engine, settings: Settings, *, now: float | None = None
                  ) -> RetentionReport:
    """One retention pass; ``ran`` is False when another process holds the lock."""
    now = time.time() if now is None else now
    report = RetentionReport()
    points_cutoff = _cutoff(now, settings.retention_points_days)
    with engine.begin() as conn:
        if not advisory_lock(conn, LOCK):
            return RetentionReport(ran=False)
        report.partitions_created = partitions.ensure_partitions(
            conn, now=now, ahead_days=settings.partitions_ahead_days,
            keep_from=points_cutoff or 0.0)
        if points_cutoff is not None:
            report.partitions_dropped = partitions.drop_partitions_before(conn, points_cutoff)
            report.points_deleted = partitions.delete_points_before(conn, points_cutoff)
    rollups_cutoff = _cutoff(now, settings.retention_rollups_days)
    incidents_cutoff = _cutoff(now, settings.retention_incidents_days)
    with engine.begin() as conn:
        if rollups_cutoff is not None:
            report.rollups_deleted = sum(
                partitions.delete_rollups_before(conn, resolution=res, cutoff=rollups_cutoff)
                for res in RESOLUTIONS)
        if incidents_cutoff is not None:
            report.incidents_deleted = partitions.delete_resolved_incidents_before(
                conn, datetime.fromtimestamp(incidents_cutoff, UTC))
        audit_cutoff = _cutoff(now, settings.retention_audit_days)
        if audit_cutoff is not None:
            report.audit_deleted = audit_store.delete_before(
                conn, cutoff=datetime.fromtimestamp(audit_cutoff, UTC))
    log.info("retention: %s", report.as_dict())
    return report
