"""Statistical online detectors: seasonal baselines, robust scores, multivariate HalfSpaceTrees.

All of them follow the protocol in :mod:`dqpulse.detectors.base`: score before learn, 0
during warm-up, anomalies not learned, scores in ``[0, 1]`` with ``threshold = 0.9``
reached exactly at a robust z of ``z_threshold``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from river import anomaly

from dqpulse.detectors.base import (
    Explanation,
    MultivariateDetector,
    UnivariateDetector,
    Verdict,
    empty_explanation,
    register,
    z_to_score,
)

__all__ = ["HalfSpaceTreesDetector", "RobustDetector", "SeasonalDetector"]

# mean absolute deviation -> standard deviation, for Gaussian noise
_MEAN_ABS_TO_SIGMA = math.sqrt(math.pi / 2.0)
# median absolute deviation -> standard deviation, for Gaussian noise
_MAD_TO_SIGMA = 1.4826
_SIDES = ("both", "up", "down")


def _check_side(side: str) -> None:
    if side not in _SIDES:
        raise ValueError(f"side must be one of {_SIDES}, got {side!r}")


def _ew_alpha(count: int, alpha_min: float) -> float:
    """Step size of the ``count``-th update: the plain mean first, then exponential forgetting."""
    return max(1.0 / count, alpha_min)


def _ew_weight(k: int, n: int, alpha_min: float) -> float:
    """Weight that the ``k``-th update still has in an exponentially weighted mean after ``n``."""
    weight = _ew_alpha(k, alpha_min)
    for j in range(k + 1, min(n, k + 400) + 1):
        weight *= 1.0 - _ew_alpha(j, alpha_min)
    return 0.0 if n - k > 400 else weight


# what one learned point changed in one profile: what forget() needs to undo it
_Touched = tuple[int, int, int, float, float, float]


class _SeasonProfile:
    """Exponentially weighted robust level and spread per season bucket (hour of day, ...).

    The expected value interpolates linearly between the centres of neighbouring buckets,
    so a ramp inside an hour (the morning rise) does not count as noise.
    """

    def __init__(self, period: float, bucket_seconds: float, alpha_min: float) -> None:
        self.period = period
        self.bucket_seconds = bucket_seconds
        self.n_buckets = max(int(round(period / bucket_seconds)), 1)
        self.alpha_min = alpha_min
        self.count = [0] * self.n_buckets
        self.mean = [0.0] * self.n_buckets
        self.mad = [0.0] * self.n_buckets  # mean absolute residual (interpolated expectation)
        self.err_count = 0
        self.err = 0.0  # series-wide mean absolute one-step error of this profile
        # the same over every observed point, learned or not: chooses between profiles
        self.fit_count = 0
        self.fit_err = 0.0

    # Old saved states predate the fit error: they start it from ``err``.
    fit_count: int = 0
    fit_err: float = 0.0

    @property
    def selection_error(self) -> float:
        return self.fit_err if self.fit_count else self.err

    def track_fit(self, t: float, value: float, cap: float) -> None:
        """Score this profile's one-step forecast of ``value``, whether it is learned or not.

        Only learned points enter ``err``; a profile that explains what the chosen one calls
        anomalous (the first weekends, for the hour-of-week profile) would otherwise never
        show that it predicts better, and its rival would go on flagging every weekend.
        """
        own = self.expected(t, 1)
        if own is None:
            return
        if not self.fit_count:
            self.fit_count, self.fit_err = self.err_count, self.err
        self.fit_count += 1
        alpha = _ew_alpha(self.fit_count, 0.02)
        self.fit_err += alpha * (min(abs(value - own[0]), cap) - self.fit_err)

    def locate(self, t: float) -> tuple[int, int, float]:
        position = (t % self.period) / self.bucket_seconds
        bucket = int(position) % self.n_buckets
        offset = position - int(position) - 0.5
        neighbour = (bucket + (1 if offset >= 0 else -1)) % self.n_buckets
        return bucket, neighbour, abs(offset)

    def expected(self, t: float, warm: int) -> tuple[float, float, int] | None:
        """(level, mean absolute residual, count) at ``t`` or None while the bucket warms up."""
        bucket, neighbour, weight = self.locate(t)
        count = self.count[bucket]
        if count < warm:
            return None
        if self.count[neighbour] < warm or neighbour == bucket:
            return self.mean[bucket], self.mad[bucket], count
        level = (1 - weight) * self.mean[bucket] + weight * self.mean[neighbour]
        spread = (1 - weight) * self.mad[bucket] + weight * self.mad[neighbour]
        return level, spread, count

    def update(self, t: float, value: float, expected: float, cap: float,
               warm: int, weight: float = 1.0) -> tuple[int, int, float, float, float]:
        """Learn ``value`` with ``weight`` (1: a full step); returns what :meth:`forget`
        needs to take it back out."""
        bucket, _, _ = self.locate(t)
        count = self.count[bucket] + 1
        if count <= warm:
            weight = 1.0  # a bucket still warming up learns like the cold-only path
        alpha = _ew_alpha(count, self.alpha_min) * weight
        mean = self.mean[bucket]
        # Huber-style clipping once warm: one outlier that slipped through moves the
        # baseline by at most `cap`.
        clipped = min(max(value, mean - cap), mean + cap) if count > warm else value
        deviation = min(abs(value - expected), cap)
        self.mean[bucket] = mean + alpha * (clipped - mean)
        self.mad[bucket] += alpha * (deviation - self.mad[bucket])
        self.count[bucket] = count
        return bucket, count, clipped, deviation, weight

    def forget(self, bucket: int, k: int, clipped: float, deviation: float,
               learned_weight: float = 1.0) -> None:
        n = self.count[bucket]
        # later points are taken as learned at full weight: exact for them, else close
        weight = _ew_weight(k, n, self.alpha_min) * learned_weight
        if weight >= 1.0 - 1e-12:
            self.count[bucket], self.mean[bucket], self.mad[bucket] = 0, 0.0, 0.0
        elif weight > 0.0:
            self.mean[bucket] = (self.mean[bucket] - weight * clipped) / (1.0 - weight)
            mad = (self.mad[bucket] - weight * deviation) / (1.0 - weight)
            self.mad[bucket] = max(mad, 0.0)


@register("seasonal")
class SeasonalDetector(UnivariateDetector):
    """Seasonal robust baseline for volume and freshness series.

    Keeps an exponentially weighted level and mean absolute residual per hour of the week
    (168 buckets), per hour of the day (24) and one fast local level. A point is compared
    with the most specific baseline whose bucket is warm (hour-of-week, else hour-of-day,
    else the local level), interpolating between neighbouring buckets. The scale is the
    bucket's residual spread shrunk towards the series-wide one, floored by ``min_scale``
    (absolute) and ``rel_scale * |expected|`` (relative).

    Parameters
    ----------
    z_threshold
        Robust z at which the score reaches ``threshold`` (0.9).
    warm_up
        Learned points before any non-zero score.
    bucket_seconds
        Season bucket width; 3600 gives hour-of-day and hour-of-week.
    weekly
        Also keep the hour-of-week profile.
    bucket_warm
        Points a bucket needs before it is used (and before learning into it is clipped).
    alpha
        Smallest step of the exponentially weighted bucket statistics.
    local_alpha
        Step of the local level used while buckets warm up.
    min_scale, rel_scale
        Floors on the scale: absolute, and relative to the expected value.
    side
        ``"both"``, ``"up"`` (only increases are anomalous) or ``"down"``.
    learn_anomalies
        Learn points scored as anomalous (off by default).
    relearn_after
        After this many consecutive anomalies, learn them anyway (a lasting level
        shift becomes the new normal); ``None`` never does.
    learn_below
        Points scoring at or above this (but below ``threshold``) are not learned: a
        deviation held just under the alert threshold would otherwise widen the band
        window after window until it never alerts. ``1.0`` (the default) disables it.
        Measured on bench/incidents (volume, 0.8): it caught more slow seasonal shifts on
        one seed but, on another, a real level change was then never learned and alerted
        for hundreds of windows; so no built-in series uses it.
    taper_learning_from
        Points scoring between this and ``threshold`` are learned at a weight falling
        linearly from 1 to 0 at the threshold (the level, the spread and the persistence
        spread alike): a deviation held just under the threshold widens the band only
        slowly, while a lasting change that scores there is still learned, only later.
        ``1.0`` (the default) learns every point below the threshold at full weight.
    persistence
        Step of an EWMA of the (clipped) z of recent points, scored against its own
        learned spread beside the point's z: a shift too small to flag in one window but
        held for several (the daily pattern moved by hours) still alerts. ``0`` (the
        default) disables it; 0.2 remembers about 5 windows.

    Examples
    --------
    >>> detector = SeasonalDetector(warm_up=24)
    >>> for hour in range(24 * 14):
    ...     t = hour * 3600.0
    ...     x = {"value": 100.0 + 50.0 * math.sin(2 * math.pi * hour / 24), "t": t}
    ...     _ = detector.score_one(x)
    ...     detector.learn_one(x)
    >>> trough = {"value": 50.0, "t": (24 * 14 + 18) * 3600.0}  # the usual 18:00 low
    >>> drop = {"value": 5.0, "t": (24 * 14 + 6) * 3600.0}      # 6:00 is normally the peak
    >>> detector.score_one(trough) < 0.5, detector.score_one(drop) >= detector.threshold
    (True, True)
    """

    state_version = 2  # 2: persistence (drift EWMA) state

    def __init__(
        self,
        z_threshold: float = 5.0,
        warm_up: int = 24,
        bucket_seconds: float = 3600.0,
        weekly: bool = True,
        bucket_warm: int = 3,
        alpha: float = 0.1,
        local_alpha: float = 0.1,
        min_scale: float = 1.0,
        rel_scale: float = 0.02,
        huber: float = 3.0,
        side: str = "both",
        learn_anomalies: bool = False,
        relearn_after: int | None = None,
        persistence: float = 0.0,
        learn_below: float = 1.0,
        taper_learning_from: float = 1.0,
    ) -> None:
        _check_side(side)
        if not 0.0 <= persistence < 1.0:
            raise ValueError("persistence is an EWMA step in [0, 1)")
        if not 0.0 < learn_below <= 1.0:
            raise ValueError("learn_below is a score in (0, 1]")
        if not 0.0 <= taper_learning_from <= 1.0:
            raise ValueError("taper_learning_from is a score in [0, 1]")
        self.learn_below = learn_below
        self.taper_learning_from = taper_learning_from
        self.z_threshold = z_threshold
        self.warm_up = warm_up
        self.bucket_seconds = bucket_seconds
        self.weekly = weekly
        self.bucket_warm = bucket_warm
        self.alpha = alpha
        self.local_alpha = local_alpha
        self.min_scale = min_scale
        self.rel_scale = rel_scale
        self.huber = huber
        self.side = side
        self.learn_anomalies = learn_anomalies
        self.relearn_after = relearn_after
        self.persistence = persistence
        self._init_learner()
        self._drift = 0.0         # EWMA of the clipped z of recent points
        self._drift_spread = 0.0  # EW mean |drift| over normal points
        self._drift_count = 0
        self._profiles: list[_SeasonProfile] = []
        if weekly:
            self._profiles.append(_SeasonProfile(7 * 86400.0, bucket_seconds, alpha))
        self._profiles.append(_SeasonProfile(86400.0, bucket_seconds, alpha))
        self._local = _SeasonProfile(1.0, 1.0, local_alpha)
        self._last_t: float | None = None
        self._step: float | None = None
        # (t, value, [(profile index or -1, bucket, k, clipped, deviation, weight)])
        self._journal: deque[tuple[float | None, float, list[_Touched]]] = deque(maxlen=64)

    def _candidates(self, t: float | None) -> list[_SeasonProfile]:
        seasonal = list(self._profiles) if t is not None else []
        return [*seasonal, self._local]

    def _baseline(self, t: float | None) -> tuple[float, float, int, float]:
        """(expected, bucket spread, bucket count, profile error) of the best warm profile.

        Profiles compete on their own recent one-step error over every observed point
        (:meth:`_SeasonProfile.track_fit`), so the hour-of-week profile takes over from
        hour-of-day once it predicts better (e.g. weekends differ).
        """
        best: tuple[float, float, int, float] | None = None
        best_error = math.inf
        for profile in self._candidates(t):
            if profile is self._local:
                # Only a fallback: with anomalies not learned, a local level freezes during
                # an incident and would be hours stale when it ends.
                if best is not None:
                    break
            elif profile.err_count < self.bucket_warm * 4:
                continue
            found = profile.expected(t or 0.0, 1)
            if found is not None and (best is None or profile.selection_error < best_error):
                best, best_error = (*found, profile.err), profile.selection_error
        return best if best is not None else (0.0, 0.0, 0, 0.0)

    def _scale(self, expected: float, spread: float, count: int, error: float) -> float:
        # a bucket's own spread counts for more as it fills; until then, the profile's
        k = float(self.bucket_warm)
        shrunk = math.sqrt((count * spread ** 2 + k * error ** 2) / (count + k))
        return max(_MEAN_ABS_TO_SIGMA * shrunk, self.min_scale, self.rel_scale * abs(expected))

    def _z(self, value: float, t: float | None) -> tuple[float, float, float]:
        expected, spread, count, error = self._baseline(t)
        scale = self._scale(expected, spread, count, error)
        return (value - expected) / scale, expected, scale

    def learn_one(self, x: Mapping[str, Any]) -> None:
        """As the base class, but a season bucket that is still warming up learns the point
        even when it looks anomalous to the fallback baseline: otherwise the first Saturday
        (judged by weekday buckets) would never teach the Saturday buckets anything."""
        value, t = self._read(x)
        if value is None:
            return
        score = self.score_one(x)
        suspicious = self.is_warm and score >= self.learn_below
        weight = self._learning_weight(score)
        if t is not None:
            cap = self.huber * self._scale(*self._baseline(t))
            for profile in self._profiles:
                profile.track_fit(t, value, cap)
        if self.persistence > 0.0 and self.is_warm:
            drift = self._next_drift(value, t)
            if score < self.threshold and not suspicious:
                self._drift_count += 1
                alpha = _ew_alpha(self._drift_count, 0.005) * weight
                self._drift_spread += alpha * (abs(drift) - self._drift_spread)
            self._drift = drift
        if self._should_learn(score) and not suspicious:
            self._update(value, t, weight=weight)
            self.n_learned += 1
        elif t is not None:
            self._update(value, t, cold_only=True)

    def _learning_weight(self, score: float) -> float:
        """1 up to ``taper_learning_from``, then linearly down to 0 at the threshold."""
        start = self.taper_learning_from
        if not self.is_warm or score <= start or start >= self.threshold:
            return 1.0
        return max(0.0, (self.threshold - score) / (self.threshold - start))

    # Old saved states predate ``learn_below`` and ``taper_learning_from``: they read the
    # class defaults.
    learn_below: float = 1.0
    taper_learning_from: float = 1.0
    _DRIFT_WARM = 50       # normal points before the persistence score speaks
    _DRIFT_MIN_SPREAD = 0.1

    def _next_drift(self, value: float, t: float | None) -> float:
        z, _, _ = self._z(value, t)
        # clipped, so one huge outlier (a silent topic) does not keep alerting for hours
        bound = self.effective_z_threshold
        return (1.0 - self.persistence) * self._drift + self.persistence * max(
            -bound, min(z, bound))

    def _drift_z(self, value: float, t: float | None) -> float:
        if self.persistence <= 0.0 or self._drift_count < self._DRIFT_WARM:
            return 0.0
        spread = max(self._drift_spread, self._DRIFT_MIN_SPREAD)
        return self._next_drift(value, t) / (_MEAN_ABS_TO_SIGMA * spread)

    def score_one(self, x: Mapping[str, Any]) -> float:
        """The larger of the point's score and the persistence score (see ``persistence``)."""
        value, t = self._read(x)
        if value is None or not self.is_warm:
            return 0.0
        z, _, _ = self._z(value, t)
        point = z_to_score(self._one_sided(z), self.effective_z_threshold, self.threshold)
        drift = self._drift_z(value, t)
        if drift == 0.0:
            return point
        return max(point, z_to_score(self._one_sided(drift), self.effective_z_threshold,
                                     self.threshold))

    def _track_step(self, t: float | None) -> None:
        """Forget per season cycle, not per point: with 5-minute windows an hour bucket gets
        12 points a day, and a per-point step would weight the end of the hour most."""
        if t is None:
            return
        if self._last_t is not None and t > self._last_t:
            step = t - self._last_t
            if self._step is None or step < self._step:
                self._step = step
                for profile in self._profiles:
                    profile.alpha_min = self.alpha * min(1.0, step / self.bucket_seconds)
        self._last_t = t if self._last_t is None else max(self._last_t, t)

    def _update(self, value: float, t: float | None, cold_only: bool = False,
                weight: float = 1.0) -> None:
        self._track_step(t)
        expected, spread, count, error = self._baseline(t)
        cap = self.huber * self._scale(expected, spread, count, error)
        touched: list[_Touched] = []
        for index, profile in enumerate(self._candidates(t)):
            if cold_only and (profile is self._local or
                              profile.count[profile.locate(t or 0.0)[0]] >= self.bucket_warm):
                continue
            own = profile.expected(t or 0.0, 1)
            if own is not None and not cold_only:
                profile.err_count += 1
                alpha = _ew_alpha(profile.err_count, 0.02) * weight
                profile.err += alpha * (min(abs(value - own[0]), cap) - profile.err)
            bucket, k, clipped, deviation, learned_weight = profile.update(
                t or 0.0, value, own[0] if own is not None else value, cap, self.bucket_warm,
                weight)
            is_local = profile is self._local
            touched.append((-1 if is_local else index, bucket, k, clipped, deviation,
                            learned_weight))
        self._journal.append((t, value, touched))

    def _forget(self, value: float, t: float | None) -> bool:
        for position in range(len(self._journal) - 1, -1, -1):
            when, learned, touched = self._journal[position]
            if when == t and learned == value:
                # entries of old saved states have no learned weight: they were full steps
                for index, bucket, k, clipped, deviation, *learned_weight in touched:
                    profile = self._local if index == -1 else self._profiles[index]
                    profile.forget(bucket, k, clipped, deviation, *learned_weight)
                del self._journal[position]
                return True
        return False


@register("robust")
class RobustDetector(UnivariateDetector):
    """Rolling median / MAD scorer for ratios, drift scores and other level-free series.

    The scale is ``max(1.4826 * MAD, min_scale, rel_scale * |median|)``: a ratio that sits
    at exactly 0 for days has MAD 0, and the absolute floor ``min_scale`` keeps a change to
    0.001 from being infinitely anomalous while a jump to 0.3 still is.

    Parameters
    ----------
    z_threshold
        Robust z at which the score reaches ``threshold`` (0.9).
    window_size
        Number of recent learned values the median and MAD are taken over.
    warm_up
        Learned values before any non-zero score.
    min_scale, rel_scale
        Absolute and relative floors on the scale.
    side
        ``"both"``, ``"up"`` or ``"down"``.
    learn_anomalies, relearn_after
        As in :class:`SeasonalDetector`.

    Examples
    --------
    >>> detector = RobustDetector(warm_up=10)
    >>> for _ in range(50):
    ...     detector.learn_one({"value": 0.0})
    >>> detector.score_one({"value": 0.001}) < 0.1, detector.score_one({"value": 0.3}) > 0.99
    (True, True)
    """

    state_version = 1

    def __init__(
        self,
        z_threshold: float = 6.0,
        window_size: int = 256,
        warm_up: int = 20,
        min_scale: float = 0.01,
        rel_scale: float = 0.02,
        side: str = "both",
        learn_anomalies: bool = False,
        relearn_after: int | None = None,
    ) -> None:
        _check_side(side)
        self.z_threshold = z_threshold
        self.window_size = window_size
        self.warm_up = warm_up
        self.min_scale = min_scale
        self.rel_scale = rel_scale
        self.side = side
        self.learn_anomalies = learn_anomalies
        self.relearn_after = relearn_after
        self._init_learner()
        self._window: deque[float] = deque(maxlen=window_size)
        self._stats: tuple[float, float] | None = None

    def _median_mad(self) -> tuple[float, float]:
        if self._stats is None:
            if not self._window:
                return 0.0, 0.0
            values = np.fromiter(self._window, dtype=float, count=len(self._window))
            median = float(np.median(values))
            self._stats = median, float(np.median(np.abs(values - median)))
        return self._stats

    def _z(self, value: float, t: float | None) -> tuple[float, float, float]:
        median, mad = self._median_mad()
        scale = max(_MAD_TO_SIGMA * mad, self.min_scale, self.rel_scale * abs(median))
        return (value - median) / scale, median, scale

    def _update(self, value: float, t: float | None) -> None:
        self._window.append(value)
        self._stats = None

    def _forget(self, value: float, t: float | None) -> bool:
        try:
            # the newest occurrence is the one most likely to be this point
            index = len(self._window) - 1 - list(reversed(self._window)).index(value)
        except ValueError:
            return False
        del self._window[index]
        self._stats = None
        return True


class _FeatureScaler:
    """Running mean/std per feature (Welford) with a floor, squashed into (0, 1)."""

    def __init__(self, min_scale: float) -> None:
        self.min_scale = min_scale
        self.count: dict[str, int] = {}
        self.mean: dict[str, float] = {}
        self.m2: dict[str, float] = {}

    def std(self, name: str) -> float:
        count = self.count.get(name, 0)
        variance = self.m2[name] / (count - 1) if count > 1 else 0.0
        return max(math.sqrt(variance), self.min_scale, 0.01 * abs(self.mean.get(name, 0.0)))

    def z(self, name: str, value: float) -> float:
        if name not in self.count:
            return 0.0
        return (value - self.mean[name]) / self.std(name)

    def squash(self, features: Mapping[str, float], names: list[str]) -> dict[str, float]:
        # logistic of z/2: +-6 sigma stays distinguishable from +-12 sigma inside (0, 1)
        return {
            name: 1.0 / (1.0 + math.exp(-max(min(self.z(name, features[name]), 40.0), -40.0)
                                        / 2.0))
            for name in names if name in features
        }

    def update(self, features: Mapping[str, float]) -> None:
        for name, value in features.items():
            count = self.count.get(name, 0) + 1
            mean = self.mean.get(name, 0.0)
            delta = value - mean
            mean += delta / count
            self.count[name], self.mean[name] = count, mean
            self.m2[name] = self.m2.get(name, 0.0) + delta * (value - mean)


@register("hst")
class HalfSpaceTreesDetector(MultivariateDetector):
    """River's HalfSpaceTrees over a dataset's window vector, with input scaling and calibration.

    Each feature is standardised with its running mean/std (floored) and squashed into
    ``(0, 1)`` for the trees. HalfSpaceTrees' raw score has no fixed meaning, so it is
    calibrated against the raw scores of recently learned windows: the robust z of
    ``-log(1 - raw)`` above their median maps to ``[0, 1]`` as for the univariate detectors
    (``z_threshold`` 8: on Gaussian data the largest of 2,000 normal windows reached z 6.3).
    ``explain`` names the features that deviate most.

    Parameters
    ----------
    n_trees, height, window_size, seed
        Passed to :class:`river.anomaly.HalfSpaceTrees`.
    z_threshold
        Robust z of the raw score at which the score reaches 0.9.
    warm_up
        Learned windows before any non-zero score (at least one HST window plus calibration).
    calibration_size
        Raw scores of learned windows kept for calibration.
    min_scale
        Floor on each feature's standard deviation.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> detector = HalfSpaceTreesDetector(window_size=50, warm_up=100)
    >>> for _ in range(300):
    ...     x = {"volume.records": rng.gauss(100, 5), "completeness.null_ratio": 0.0}
    ...     detector.learn_one(x)
    >>> broken = {"volume.records": 100.0, "completeness.null_ratio": 0.6}
    >>> 0.0 <= detector.score_one(broken) <= 1.0, detector.explain(broken)["top_feature"]
    (True, 'completeness.null_ratio')

    HalfSpaceTrees separates a single shifted feature poorly: on three Gaussian features
    a 12-sigma shift of one of them lands near the 99th percentile of normal raw scores.
    The autoencoder is the stronger multivariate detector; this one is cheap and has no
    dependency beyond River.
    """

    state_version = 1
    multivariate = True

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 42,
        z_threshold: float = 8.0,
        warm_up: int = 300,
        calibration_size: int = 256,
        min_scale: float = 0.01,
        learn_anomalies: bool = False,
        relearn_after: int | None = None,
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.z_threshold = z_threshold
        self.warm_up = max(warm_up, window_size + 1)
        self.calibration_size = calibration_size
        self.min_scale = min_scale
        self.learn_anomalies = learn_anomalies
        self.relearn_after = relearn_after
        self._init_learner()
        self.features: list[str] | None = None
        self._scaler = _FeatureScaler(min_scale)
        self._trees = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed)
        self._raw_scores: deque[float] = deque(maxlen=calibration_size)

    @property
    def is_warm(self) -> bool:
        return self.n_learned >= self.warm_up and len(self._raw_scores) >= 30

    def _raw(self, features: Mapping[str, float]) -> float:
        """``-log(1 - HST score)``: HST saturates near 1, the log spreads its upper end."""
        if self.features is None:
            return 0.0
        raw = float(self._trees.score_one(  # type: ignore[no-untyped-call]
            self._scaler.squash(features, self.features)))
        return -math.log(max(1.0 - raw, 1e-9))

    def _calibrated(self, raw: float) -> float:
        if not self._raw_scores:
            return 0.0
        values = np.fromiter(self._raw_scores, dtype=float, count=len(self._raw_scores))
        median = float(np.median(values))
        mad = float(np.median(np.abs(values - median)))
        scale = max(_MAD_TO_SIGMA * mad, 0.05)
        return z_to_score(max(raw - median, 0.0) / scale, self.effective_z_threshold,
                          self.threshold)

    def score_one(self, x: Mapping[str, Any]) -> float:
        features = self._features(x)
        if features is None or not self.is_warm:
            return 0.0
        return self._calibrated(self._raw(features))

    def _learn(self, features: dict[str, float]) -> None:
        if self.features is None:
            self.features = sorted(features)
        raw = self._raw(features)
        self._trees.learn_one(  # type: ignore[no-untyped-call]
            self._scaler.squash(features, self.features))
        self._scaler.update({k: v for k, v in features.items() if k in self.features})
        if not self._trees._first_window:
            self._raw_scores.append(raw)
        self.n_learned += 1

    def learn_one(self, x: Mapping[str, Any]) -> None:
        features = self._features(x)
        if features is None:
            return
        if self._should_learn(self.score_one(x)):
            self._learn(features)

    def explain(self, x: Mapping[str, Any]) -> Explanation:
        features = self._features(x)
        if features is None or self.features is None:
            return empty_explanation()
        ranked = sorted(
            ((name, self._scaler.z(name, features[name])) for name in self.features
             if name in features),
            key=lambda item: -abs(item[1]),
        )
        if not ranked:
            return empty_explanation()
        top, z = ranked[0]
        mean, width = self._scaler.mean.get(top, 0.0), 3.0 * self._scaler.std(top)
        return {
            # the typical range (mean +- 3 sigma) of the feature that deviates most
            "expected_low": mean - width,
            "expected_high": mean + width,
            "observed": features[top],
            "direction": "up" if z > 0 else "down" if z < 0 else None,
            "top_feature": top,
            "features": [
                {"feature": name, "z": score, "observed": features[name],
                 "expected": self._scaler.mean.get(name, 0.0)}
                for name, score in ranked[:5]
            ],
        }

    def feedback(self, x: Mapping[str, Any], verdict: Verdict) -> None:
        """False positive: learn ``x`` and widen; confirmed: narrow again.

        HalfSpaceTrees cannot take a learned window back out of its mass profile, so a
        confirmed window that was learned (during warm-up, or with ``learn_anomalies``)
        stays in the current tree window until it rotates out (``window_size`` windows).
        """
        super().feedback(x, verdict)
        features = self._features(x)
        if verdict == "false_positive":
            self._widen()
            if features is not None:
                self._learn(features)
        else:
            self._narrow()
