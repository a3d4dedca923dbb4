"""Event-time tumbling windows, per-partition watermarks, lateness and idle partitions.

A record's window starts at ``floor(event_time / window) * window``. A partition's
watermark is the largest event time it has seen (it never goes back). A window is closed
for a partition when ``window_start + window + lateness <= watermark``; a record that falls
into a closed window is *late*. A partition that has accepted no record for
``idle_timeout_s`` of wall-clock time is idle: ``tick(now)`` then moves its watermark up to
``now`` (the wall clock), so its windows close and a silent topic still produces windows.
A source whose event times lag the wall clock by more than ``lateness`` should raise
``lateness``, or records arriving after an idle spell may be late.

Event times are parsed from epoch seconds, epoch milliseconds, microseconds or nanoseconds
(told apart by magnitude: below 1e11 seconds, below 1e14 milliseconds, below 1e17
microseconds, else nanoseconds) or ISO-8601 strings (a missing offset means UTC).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dqpulse.utc import MICROS_LIMIT, MILLIS_LIMIT, SECONDS_LIMIT


def window_start(event_time: float, window: float) -> float:
    """Start of the tumbling window holding ``event_time``.

    >>> window_start(125.0, 60.0), window_start(-1.0, 60.0)
    (120.0, -60.0)
    """
    return math.floor(event_time / window) * window


def window_starts(event_times: npt.NDArray[np.float64], window: float) -> npt.NDArray[np.float64]:
    return np.floor(event_times / window) * window


def epoch_seconds(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Epoch numbers in s, ms, us or ns (by magnitude) as seconds.

    >>> epoch_seconds(np.array([1.7e9, 1.7e12, 1.7e15, 1.7e18])).tolist()
    [1700000000.0, 1700000000.0, 1700000000.0, 1700000000.0]
    """
    magnitude = np.abs(values)
    scale = np.where(
        magnitude < SECONDS_LIMIT, 1.0,
        np.where(magnitude < MILLIS_LIMIT, 1e-3, np.where(magnitude < MICROS_LIMIT, 1e-6, 1e-9)),
    )
    return values * scale


def _parse_iso(value: str) -> float:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return math.nan
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def parse_event_times(column: pl.Series, type_name: str) -> npt.NDArray[np.float64]:
    """Event times in epoch seconds from a decoded column; NaN where absent or unparseable."""
    # A float column's to_numpy() gives NaN for nulls (Series.fill_null cost ~0.2 ms a
    # call, more than the rest of a poll batch's event times)
    if type_name in ("integer", "number"):
        return epoch_seconds(np.asarray(column.cast(pl.Float64).to_numpy(), dtype=np.float64))
    if type_name == "timestamp":
        return np.array(column.cast(pl.Float64).to_numpy(), dtype=np.float64)  # writable
    if type_name in ("string", "bytes"):
        try:  # Arrow's ISO-8601 parser is ~15x faster than polars' format inference
            stamps = pc.cast(column.to_arrow(), pa.timestamp("us", tz="UTC"))
            missing = stamps.null_count
            micros = stamps.cast(pa.int64()).to_numpy(zero_copy_only=False)
            seconds = np.asarray(micros, dtype=np.float64) / 1e6  # nulls arrive as NaN
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            parsed = column.str.to_datetime(strict=False, time_zone="UTC", time_unit="us")
            missing = parsed.null_count()
            seconds = np.asarray(
                parsed.dt.epoch("us").cast(pl.Float64).to_numpy(),
                dtype=np.float64,
            ) / 1e6
        if missing > column.null_count():
            # polars infers one format per column; odd values get Python's parser
            missed = np.flatnonzero(np.isnan(seconds) & column.is_not_null().to_numpy())
            strings = column.gather(missed).to_list()
            seconds[missed] = [_parse_iso(s) for s in strings]
        return seconds
    return np.full(len(column), math.nan)


@dataclass(slots=True)
class PartitionClock:
    """Watermark and idle bookkeeping of one partition."""

    window: float
    lateness: float
    idle_timeout_s: float
    max_event_time: float | None = None
    watermark: float = -math.inf
    last_record_at: float | None = None

    def is_closed(self, start: float) -> bool:
        return start + self.window + self.lateness <= self.watermark

    def closed_mask(self, starts: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return np.asarray(starts + self.window + self.lateness <= self.watermark)

    def observe(self, max_event_time: float, now: float) -> None:
        """Records were accepted at wall-clock ``now``, the newest with ``max_event_time``."""
        if self.max_event_time is None or max_event_time > self.max_event_time:
            self.max_event_time = max_event_time
        self.watermark = max(self.watermark, max_event_time)
        self.last_record_at = now if self.last_record_at is None else max(self.last_record_at, now)

    def is_idle(self, now: float) -> bool:
        return self.last_record_at is None or now - self.last_record_at >= self.idle_timeout_s

    def tick(self, now: float) -> None:
        if self.is_idle(now):
            self.watermark = max(self.watermark, now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_event_time": self.max_event_time,
            "watermark": None if self.watermark == -math.inf else self.watermark,
            "last_record_at": self.last_record_at,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.max_event_time = state["max_event_time"]
        watermark = state["watermark"]
        self.watermark = -math.inf if watermark is None else float(watermark)
        self.last_record_at = state["last_record_at"]
