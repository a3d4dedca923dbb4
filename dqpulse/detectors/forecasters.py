"""One-step forecasters that the adaptive detector chooses between, series by series.

Each forecaster predicts the next value of a series before seeing it and learns it
afterwards; the detector keeps, per forecaster, its recent one-step error and uses the
forecaster with the lowest one. They are deliberately small (a few floats, or one float
per season bucket) so that a series' state stays a few KiB.
"""

from __future__ import annotations

import math
from array import array

__all__ = ["Forecaster", "LevelForecaster", "SeasonalForecaster", "season_bucket"]


def ew_alpha(count: int, alpha_min: float) -> float:
    """Step of the ``count``-th update: the plain mean first, then exponential forgetting."""
    return max(1.0 / count, alpha_min)


def season_bucket(t: float, period: float, bucket_seconds: float,
                  n_buckets: int) -> tuple[int, int, float]:
    """(bucket of ``t``, the neighbour it leans towards, weight of that neighbour): the
    weights that interpolate linearly between neighbouring bucket centres."""
    position = (t % period) / bucket_seconds
    bucket = int(position) % n_buckets
    offset = position - int(position) - 0.5
    neighbour = (bucket + (1 if offset >= 0 else -1)) % n_buckets
    return bucket, neighbour, abs(offset)


class Forecaster:
    """Protocol: ``predict(t)`` (None while cold), ``learn(t, y)``, ``shift(delta)``."""

    name = ""

    def predict(self, t: float | None) -> float | None:
        raise NotImplementedError

    def learn(self, t: float | None, value: float, weight: float = 1.0) -> None:
        """Learn ``value``; ``weight`` < 1 takes a shorter step (a doubtful window)."""
        raise NotImplementedError

    def shift(self, delta: float) -> None:
        """Move the whole forecast by ``delta`` (a level shift adopted as the new normal)."""
        raise NotImplementedError


class LevelForecaster(Forecaster):
    """Exponentially weighted level: ``alpha`` 1.0 is the last normal value."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.name = "last" if alpha >= 1.0 else f"level_{alpha:g}"
        self.count = 0
        self.level = 0.0

    def predict(self, t: float | None) -> float | None:
        return self.level if self.count else None

    def learn(self, t: float | None, value: float, weight: float = 1.0) -> None:
        self.count += 1
        self.level += weight * ew_alpha(self.count, self.alpha) * (value - self.level)

    def shift(self, delta: float) -> None:
        self.level += delta


class SeasonalForecaster(Forecaster):
    """Exponentially weighted mean per season bucket (hour of day, hour of week).

    The forecast interpolates linearly between neighbouring bucket centres, so a ramp inside
    an hour (the morning rise) is not noise. A bucket forgets per season cycle, not per
    point: with 5-minute windows an hour bucket gets 12 points a day, and a per-point step
    would weight the end of the hour most. It forecasts only after ``cycles`` full periods.
    """

    def __init__(self, period: float, bucket_seconds: float, alpha: float = 0.2,
                 cycles: float = 2.0, interpolate: bool = True) -> None:
        self.name = "daily" if period <= 86400.0 else "weekly"
        if not interpolate:
            self.name += "_fine"
        self.interpolate = interpolate
        self.period = period
        self.bucket_seconds = bucket_seconds
        self.n_buckets = max(int(round(period / bucket_seconds)), 1)
        self.alpha = alpha
        self.cycles = cycles
        self.mean = array("f", bytes(4 * self.n_buckets))
        self.count = array("H", bytes(2 * self.n_buckets))
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.step: float | None = None

    def _locate(self, t: float) -> tuple[int, int, float]:
        return season_bucket(t, self.period, self.bucket_seconds, self.n_buckets)

    def predict(self, t: float | None) -> float | None:
        if (t is None or self.first_t is None or self.last_t is None
                or self.last_t - self.first_t < self.cycles * self.period):
            return None
        bucket, neighbour, weight = self._locate(t)
        if not self.count[bucket]:
            return None
        if not self.interpolate or not self.count[neighbour] or neighbour == bucket:
            return float(self.mean[bucket])
        return (1.0 - weight) * self.mean[bucket] + weight * self.mean[neighbour]

    def closer_residual(self, residual: float, value: float, t: float | None) -> float:
        """``residual`` shrunk to the value's distance from this profile's forecast when
        that is closer (same sign): used as a memory of the last days at this time of day,
        anomalies included, a jump that recurs daily is explained by it."""
        remembered = self.predict(t)
        if remembered is None or abs(value - remembered) >= abs(residual):
            return residual
        return math.copysign(abs(value - remembered), residual)

    def learn(self, t: float | None, value: float, weight: float = 1.0) -> None:
        if t is None:
            return
        if self.first_t is None:
            self.first_t = t
        if self.last_t is not None and t > self.last_t:
            gap = t - self.last_t
            self.step = gap if self.step is None else min(self.step, gap)
        self.last_t = t if self.last_t is None else max(self.last_t, t)
        bucket, _, _ = self._locate(t)
        per_cycle = max(self.bucket_seconds / (self.step or self.bucket_seconds), 1.0)
        count = min(self.count[bucket] + 1, 65535)
        self.count[bucket] = count
        alpha = ew_alpha(count, self.alpha / per_cycle)
        if count > 1:
            alpha *= weight
        self.mean[bucket] += alpha * (value - self.mean[bucket])

    def shift(self, delta: float) -> None:
        for i in range(self.n_buckets):
            self.mean[i] += delta

