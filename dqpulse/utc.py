"""Aware UTC datetimes: SQLite hands back naive values, and every time dqpulse writes is UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive value is taken to be UTC already.

    >>> as_utc(datetime(2026, 1, 1)).isoformat()
    '2026-01-01T00:00:00+00:00'
    """
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def as_utc_or_now(moment: datetime | None) -> datetime:
    """``moment`` as aware UTC, or the current time when it is None."""
    return datetime.now(UTC) if moment is None else as_utc(moment)
