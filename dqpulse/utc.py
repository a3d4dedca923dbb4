"""Aware UTC datetimes: SQLite hands back naive values, and every time dqpulse writes is UTC.
Epoch numbers in seconds, milliseconds, microseconds or nanoseconds, told by magnitude."""

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


def iso(seconds: float) -> str:
    """Epoch seconds as an ISO 8601 UTC time ending in ``Z``.

    >>> iso(1_780_000_000)
    '2026-05-28T20:26:40Z'
    """
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


#: An epoch number below ``SECONDS_LIMIT`` in magnitude is in seconds (up to the year 5138),
#: then milliseconds, microseconds, and nanoseconds from ``MICROS_LIMIT`` on.
SECONDS_LIMIT = 1e11
MILLIS_LIMIT = 1e14
MICROS_LIMIT = 1e17


def epoch_divisor(magnitude: float) -> float:
    """What an epoch number of this magnitude is divided by to make seconds.

    >>> [n / epoch_divisor(abs(n)) for n in (1.7e9, 1.7e12, 1.7e15, 1.7e18)]
    [1700000000.0, 1700000000.0, 1700000000.0, 1700000000.0]
    """
    if magnitude < SECONDS_LIMIT:
        return 1.0
    if magnitude < MILLIS_LIMIT:
        return 1e3
    return 1e6 if magnitude < MICROS_LIMIT else 1e9
