"""One-step forecasters that the adaptive detector chooses between, series by series.

Each forecaster predicts the next value of a series before seeing it and learns it
afterwards; the detector keeps, per forecaster, its recent one-step error and uses the
forecaster with the lowest one. They are deliberately small (a few floats, or one float
per season bucket) so that a series' state stays a few KiB.
"""

from __future__ import annotations

import math
from array import array

from dqpulse.detectors.base import UnsavedCaches

__all__ = ["Forecaster", "LevelForecaster", "LevelledProfile", "SamplePhase",
           "SeasonalForecaster",
           "season_bucket"]


def ew_alpha(count: int, alpha_min: float) -> float:
    """Step of the ``count``-th update: the plain mean first, then exponential forgetting."""
    return max(1.0 / count, alpha_min)


def season_bucket(t: float, period: float, bucket_seconds: float,
                  n_buckets: int, centre: float = 0.5) -> tuple[int, int, float]:
    """(bucket of ``t``, the neighbour it leans towards, weight of that neighbour): the
    weights that interpolate linearly between neighbouring bucket centres.

    ``centre`` is where in its bucket a bucket's mean stands (a share of the bucket): the
    mean phase of the points it learned (:class:`SamplePhase`). Windows much narrower than
    a bucket fill it evenly (about 0.5); one window per bucket, starting on the hour, makes
    it 0, and a window at its bucket's start is then forecast by its own bucket alone.

    >>> season_bucket(9 * 3600.0, 86400.0, 3600.0, 24)  # halfway from 8:30 to 9:30
    (9, 8, 0.5)
    >>> season_bucket(9 * 3600.0, 86400.0, 3600.0, 24, centre=0.0)
    (9, 10, 0.0)
    """
    position = (t % period) / bucket_seconds
    bucket = int(position) % n_buckets
    offset = position - int(position) - centre
    neighbour = (bucket + (1 if offset >= 0 else -1)) % n_buckets
    return bucket, neighbour, abs(offset)


class SamplePhase:
    """Where in its season bucket a bucket's mean stands, from the points it learned.

    A bucket's mean is the mean of the values at these positions, so interpolation between
    buckets should measure from there. Windows much narrower than a bucket fill it evenly
    and their mean stands near the middle (5-minute windows: 0.458 of an hour, taken as
    0.5, the measured behaviour). A bucket holding three windows or fewer (20-minute,
    30-minute, hourly windows) uses the learned mean position: hourly windows stamped on
    the hour were forecast halfway between their own hour and the one before (at 09:00,
    the mean of the 08:00 and 09:00 buckets: on a series that rises at 9, half the rise
    was read as noise). The record counts' seasonal detector does not use it: there the
    wider spreads of the old forecast had hidden the first weekends' mornings at hourly
    windows, which the hour-of-week profile takes hours to explain (bench/incidents
    ``--window 3600``, seed 191: 8 false windows, 43 with the phase).

    >>> phase = SamplePhase()
    >>> for hour in range(48):
    ...     phase.learn(hour * 3600.0, 3600.0)
    >>> phase.centre(3600.0, step=3600.0)
    0.0
    >>> half = SamplePhase()
    >>> for step in range(96):
    ...     half.learn(step * 1800.0, 3600.0)
    >>> half.centre(3600.0, step=1800.0)  # 30-minute windows: at 0 and 0.5 of the hour
    0.25
    >>> fine = SamplePhase()
    >>> for minute in range(0, 24 * 60, 5):
    ...     fine.learn(minute * 60.0, 3600.0)
    >>> round(fine.mean, 3), fine.centre(3600.0, step=300.0)
    (0.458, 0.5)
    """

    __slots__ = ("count", "mean")

    def __init__(self) -> None:
        self.mean = 0.5
        self.count = 0

    def __getstate__(self) -> tuple[float, int]:
        return self.mean, self.count

    def __setstate__(self, state: tuple[float, int]) -> None:
        self.mean, self.count = state

    def centre(self, bucket_seconds: float, step: float | None) -> float:
        """The learned mean position when a bucket holds three windows or fewer (``step``:
        the smallest gap between the points), else 0.5."""
        coarse = step is None or 3.0 * step >= bucket_seconds
        return self.mean if self.count and coarse else 0.5

    def learn(self, t: float, bucket_seconds: float) -> None:
        position = (t / bucket_seconds) % 1.0
        self.count = min(self.count + 1, 1 << 30)
        alpha = 1.0 / self.count  # ew_alpha(count, 0.001), inline: a call per window
        self.mean += (alpha if alpha > 0.001 else 0.001) * (position - self.mean)


class Forecaster:
    """Protocol: ``predict(t)`` (None while cold), ``learn(t, y)``, ``shift(delta)``."""

    name = ""
    #: factor on the one-step error when forecasters are compared: one with more freedom
    #: must fit clearly better to be chosen
    penalty = 1.0

    def predict(self, t: float | None) -> float | None:
        raise NotImplementedError

    def learn(self, t: float | None, value: float, weight: float = 1.0) -> None:
        """Learn ``value``; ``weight`` < 1 takes a shorter step (a doubtful window)."""
        raise NotImplementedError

    def shift(self, delta: float) -> None:
        """Move the whole forecast by ``delta`` (a level shift adopted as the new normal)."""
        raise NotImplementedError

    def rescale(self, factor: float) -> None:
        """Multiply the whole forecast by ``factor`` (a level shift of a positive series
        adopted as the new normal: a daily profile keeps its shape)."""
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
        alpha = 1.0 / self.count  # ew_alpha(count, self.alpha), inline
        if alpha <= self.alpha:
            alpha = self.alpha
        self.level += weight * alpha * (value - self.level)

    def shift(self, delta: float) -> None:
        self.level += delta

    def rescale(self, factor: float) -> None:
        self.level *= factor


class SeasonalForecaster(UnsavedCaches, Forecaster):
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
        self.phase = SamplePhase() if interpolate else None

    # Saved states from before the phase was learned start learning it.
    phase: SamplePhase | None = None
    # the last ``_locate`` (t, centre, result): a window is located several times (scored,
    # explained, learned); not saved
    _located: tuple[float, float, tuple[int, int, float]] | None = None
    _unsaved = ("_located",)

    def _locate(self, t: float) -> tuple[int, int, float]:
        phase = self.phase
        centre = 0.5 if phase is None else phase.centre(self.bucket_seconds, self.step)
        located = self._located
        if located is not None and located[0] == t and located[1] == centre:
            return located[2]
        result = season_bucket(t, self.period, self.bucket_seconds, self.n_buckets, centre)
        self._located = (t, centre, result)
        return result

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

    def closer_residual(self, residual: float, value: float, t: float | None,
                        offset: float = 0.0) -> float:
        """``residual`` shrunk to the value's distance from this profile's forecast when
        that is closer (same sign): used as a memory of the last days at this time of day,
        anomalies included, a jump that recurs daily is explained by it."""
        remembered = self.predict(t)
        if remembered is not None:
            remembered += offset
        if remembered is None or abs(value - remembered) >= abs(residual):
            return residual
        return math.copysign(abs(value - remembered), residual)

    def learn(self, t: float | None, value: float, weight: float = 1.0) -> None:
        if t is None:
            return
        if self.first_t is None:
            self.first_t = t
        # min, max and clamps written out: this runs three times a window
        last_t = self.last_t
        if last_t is None or t > last_t:
            if last_t is not None:
                gap, step = t - last_t, self.step
                if step is None or gap < step:
                    self.step = gap
            self.last_t = t
        if self.interpolate:
            if self.phase is None:  # a state saved before the phase was learned
                self.phase = SamplePhase()
            self.phase.learn(t, self.bucket_seconds)
        bucket, _, _ = self._locate(t)
        per_cycle = self.bucket_seconds / (self.step or self.bucket_seconds)
        if per_cycle < 1.0:
            per_cycle = 1.0
        count = self.count[bucket] + 1
        if count > 65535:
            count = 65535
        self.count[bucket] = count
        alpha, alpha_min = 1.0 / count, self.alpha / per_cycle  # ew_alpha, inline
        if alpha <= alpha_min:
            alpha = alpha_min
        if count > 1:
            alpha *= weight
        self.mean[bucket] += alpha * (value - self.mean[bucket])

    def shift(self, delta: float) -> None:
        for i in range(self.n_buckets):
            self.mean[i] += delta

    def rescale(self, factor: float) -> None:
        for i in range(self.n_buckets):
            self.mean[i] *= factor



class LevelledProfile(UnsavedCaches, Forecaster):
    """A season profile times a recent level: ``profile(t) * ratio``, where ``ratio`` is an
    exponentially weighted mean of value / profile forecast with a time constant of
    ``level_seconds``.

    The hour-of-week profile learns each bucket once a week, so a season at another level
    (a quieter fortnight around the holidays, a summer) takes it weeks to follow, and its
    one-step error, which sets the scale, grows until a special day inside the season no
    longer stands out. Times a level that follows the last day, the week's shape stays and
    the level is today's. It shares the profile (no state but a few floats) and forecasts
    while the profile does; a series whose profile forecasts 0 or less keeps its ratio.
    Moving the profile (an adopted shift) moves this forecast with it, so ``shift`` and
    ``rescale`` leave the ratio alone.
    """

    def __init__(self, profile: SeasonalForecaster, level_seconds: float,
                 bounds: tuple[float, float] = (0.2, 5.0)) -> None:
        self.profile = profile
        self.name = profile.name + "_level"
        self.level_seconds = level_seconds
        self.bounds = bounds
        self.ratio = 1.0
        self.count = 0
        self.value_sum = 0.0  # exponentially weighted sums of values and of the forecasts
        self.base_sum = 0.0

    #: it must fit 10 % better than the others to be chosen: on a series whose week does not
    #: change level it follows noise (without: the same holiday seasons caught, 5 of 168
    #: plain special days fewer)
    penalty = 1.1
    # (t, the profile's forecast for t): learn measures against the forecast made before
    # the profile learned the window; not saved
    _last: tuple[float, float | None] | None = None
    _unsaved = ("_last",)

    def predict(self, t: float | None) -> float | None:
        return self.scaled(t, self.profile.predict(t))

    def scaled(self, t: float | None, base: float | None) -> float | None:
        """The forecast for ``t`` from the profile's forecast ``base`` for it."""
        if t is not None:
            self._last = (t, base)
        return None if base is None else base * self.ratio

    def learn(self, t: float | None, value: float, weight: float = 1.0) -> None:
        if t is None:
            return
        last = self._last
        base = last[1] if last is not None and last[0] == t else self.profile.predict(t)
        if base is None or base <= 0.0 or value < 0.0:
            return
        step = self.profile.step or self.profile.bucket_seconds
        self.count += 1
        alpha = weight * ew_alpha(self.count, min(step / self.level_seconds, 1.0))
        # the ratio of the day's sums, not the mean of its ratios: a quiet hour's ratio
        # is mostly noise
        self.value_sum += alpha * (value - self.value_sum)
        self.base_sum += alpha * (base - self.base_sum)
        if self.base_sum > 0.0:  # 0 until a window is learned with a weight above 0
            low, high = self.bounds
            self.ratio = min(max(self.value_sum / self.base_sum, low), high)

    def shift(self, delta: float) -> None:
        pass  # the profile moved: this forecast moved with it

    def rescale(self, factor: float) -> None:
        pass
