"""The default detector: forecasters chosen per series, calibrated scores, regime adoption.

Per series it runs a few one-step forecasters (a slow and a fast level, hour-of-day and
hour-of-week profiles, the latter also times a recent level; a time-of-day memory can only
explain a value), forecasts with the one whose recent one-step error is lowest,
standardises the residual by that error (floored by the series' resolution and, for
counts, counting noise) and turns it into a tail
probability (:class:`~dqpulse.detectors.calibration.TailCalibrator`, fed with the residuals
of normal windows): a score of 0.9 is about once in 10,000 normal windows.

A level or variance shift that persists for ``adopt_after`` windows becomes the new normal:
the forecasters move to the new level and the scale to the new spread, so a regime change
raises one alert at its start instead of one per window for ever. A user's ``confirmed``
verdict holds the old normal instead (the shift is a problem, keep alerting).
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Mapping
from typing import Any

from dqpulse.detectors.base import (
    MEAN_ABS_TO_SIGMA,
    Explanation,
    UnivariateDetector,
    UnsavedCaches,
    check_side,
    finite,
    register,
)
from dqpulse.detectors.calibration import (
    THRESHOLD_LOG_P,
    FoldedPair,
    TailCalibrator,
    log_p_to_score,
)
from dqpulse.detectors.evidence import DailyRepeat, RecordRange, RepeatCounter
from dqpulse.detectors.forecasters import (
    Forecaster,
    LevelForecaster,
    LevelledProfile,
    SeasonalForecaster,
    ew_alpha,
)
from dqpulse.detectors.regimes import LONE_GAP, RegimeAdoption
from dqpulse.detectors.sampling import SamplingFit

__all__ = ["AdaptiveDetector"]

#: A series' first windows are standardised by a scale estimated from at most two
#: residuals (the first window's from none: only the floors), so their z says as much
#: about the scale as about the value. They enter the calibration history capped at
#: ``YOUNG_Z_CAP``: a large early deviation without the weight of a tail that would make
#: the series' next breaks look ordinary for its first ~260 windows (a z of 10 from the
#: second window of an integer count had a 5x category explosion 60 windows later score
#: 0.87; it alerted in 12 of 20 such series, and in 20 of 20 with the cap).
YOUNG_WINDOWS = 3
YOUNG_Z_CAP = 3.0
_read_value = UnivariateDetector._read
#: Step of the fit of how the noise follows a window's count of values (``sample_noise``):
#: about a day of 1-minute windows, so that the typical window it widens against is the
#: whole day's, not the last hours' (a night of few values is then as wide as it is).
SAMPLING_ALPHA = 1.0 / 1440.0
#: See ``AdaptiveDetector._restart_calibration_at_first_season``. Measured on NAB visible
#: and its copies cut to 1,600-2,500 rows and resampled hourly: 0.7 left the 5-minute
#: corpus unchanged (0.870 / 9.5) and caught 2 more of 69 windows hourly; 1.0 (every first
#: choice) 0.884 / 9.3 but 3-5 more false episodes on the cut copies.
SEASON_RESTART_RATIO = 0.7

#: (z, scale, z against the season profile, log tail probability, (score, capped,
#: reported)) of one window
Window = tuple[float, float, float, float, tuple[float, float, float]]

#: positions of the hour-of-day and hour-of-week profiles among the forecasters (after the
#: two levels, when ``season_seconds`` > 0)
_DAILY, _WEEKLY, _WEEKLY_LEVEL = 2, 3, 4
#: the forecasters that follow a season (their residuals are the persistence EWMA's)
_SEASONAL = (SeasonalForecaster, LevelledProfile)

#: calibrators that learn the two sides of one signed deviation, saved folded into one
_SIDES = (("_up", "_down"), ("_drift_up", "_drift_down"))


@register("adaptive")
class AdaptiveDetector(UnsavedCaches, RegimeAdoption, UnivariateDetector):
    """Calibrated online detector with per-series model choice and regime adoption.

    Parameters
    ----------
    warm_up
        Normal windows learned before any non-zero score.
    side
        ``"both"``, ``"up"`` (only increases are anomalous) or ``"down"``.
    lower, upper
        Bounds of the series' values (``0`` for counts, ``0``/``1`` for ratios): forecasts
        and bands are clipped to them.
    count_noise
        Counting noise floor on the scale: ``count_noise * sqrt(max(forecast, 1))``; set
        ``1.0`` for record counts (Poisson), ``0`` for other series.
    min_scale, rel_scale
        Absolute floor, and floor relative to ``|forecast|``, on the scale.
    resolution_floor
        Multiple of the series' resolution (its smallest non-zero step between windows)
        that the scale never goes below: a quantised or constant series does not turn the
        smallest possible change into an infinite deviation.
    unit
        The smallest step the series can take when its kind says so (``1`` for a count of
        distinct values), used as its resolution until a smaller step is learned. ``0``:
        only the learned steps.
    adopt_after
        Windows of a persisting shift after which it becomes the new normal; ``None``
        never adopts.
    season_seconds
        Width of the season buckets (3600: hour of day and hour of week); ``0`` turns the
        seasonal forecasters off.
    fine_seconds
        Bucket width of the time-of-day memory (300: one value per 5 minutes of the day),
        which learns every window, anomalies included: a value close to what the same time
        of day looked like over the last days is judged by its distance from that, so a
        jump that recurs daily (a nightly batch) alerts on its first days only. ``0`` off.
    calibration_size
        Normal residuals kept per side for calibration.
    calibration_stride
        Once the point calibration history is full, every how many-th normal window
        enters it (the deviations of an ended burst, ``spike_memory``, always enter): the
        scorer sets enough for the history to span half a day at windows under 3 minutes
        (3 at 1-minute windows: 13 hours instead of 4, where a heavy tail that shows a few
        times a day, a field's mean with a timeout of 30 s among 20 latencies, was news
        each time). ``1``: every window.
    sample_noise
        The value is a statistic of ``x["n"]`` values (a field's mean or median in a
        window): the detector learns how much of its noise is sampling error, whose
        spread shrinks as ``1 / sqrt(n)``, and how much moves between windows whatever
        their size (:class:`~dqpulse.detectors.sampling.SamplingFit`, over about 1,440
        windows). A window of fewer values than usual has its scale widened by the noise
        its ``n`` adds, teaches the scale and the calibration its residual shrunk by the
        same factor, and is no record for ``record_boost`` (the range was set mostly by
        windows of many values); a window of more values is judged as a typical one
        (never narrower). ``False`` (or no ``n``): off.
    error_alpha
        Step of the exponentially weighted one-step error that sets the scale.
    select_alpha
        Step of the exponentially weighted one-step error that chooses the forecaster
        (longer memory: a day of 5-minute windows is about 300).
    persistence
        Step of an EWMA of recent z, calibrated like the point's own z: a shift too small
        to flag in one window but held for several alerts. ``0`` turns it off.
    spike_memory
        When an anomaly episode ends without being adopted (a burst that came and went),
        its deviations enter the calibration history, capped at ``spike_memory`` times the
        alert boundary: on a series where bursts recur, the next one is less surprising.
        ``0`` keeps every burst out of the calibration.
    held_noise_from, held_noise_weight
        While a season profile forecasts and the persistence EWMA (against that profile)
        has held at ``held_noise_from`` or beyond, on one side, for at least a season
        bucket (``season_seconds``), a window's residual on that side teaches the scale
        with ``held_noise_weight`` of its weight: a whole day above or below the profile
        (a holiday, a storm) is a day unlike the others, not noise, and must not widen
        the band within hours until the day no longer stands out. The forecasts and the
        calibration learn it as usual. ``held_noise_weight`` ``1.0``: off.
    weekly_memory
        While the hour-of-week profile forecasts with a one-step error at most this share of
        the hour-of-day profile's, the time-of-day memory is moved by the difference of the
        two profiles before it explains a value: a weekend day at a weekday's level is not
        explained by weekdays' memory. ``0`` off.
    level_seconds
        Time constant of the level that a fifth forecaster multiplies the hour-of-week
        profile by (the ratio of the recent values' sum to the profile's forecasts' sum):
        the week's shape at the last day's level, so a quieter season (a holiday
        fortnight) does not leave the weekly profile forecasting the old level for weeks
        while its error, the scale, grows until a special day inside the season no longer
        stands out. Chosen only when its one-step error is 10 % below every other's.
        ``0`` off (not live: it changes the forecasters).
    taper_from
        Windows scoring between this and the threshold are learned with a step falling
        linearly to 0 at the threshold: a change held just under the threshold does not
        become the forecast at once. ``1.0`` learns every normal window fully.
    tail_shape
        Smallest shape of the generalised Pareto tail fitted to the calibration history:
        how heavy a tail is assumed beyond what the history shows (0.1: ``p`` falls like
        ``deviation ** -10``).
    seasonal_persistence
        The persistence EWMA follows the residual against the better warm season profile
        instead of the chosen forecaster's: a daily pattern moved by hours stays visible
        there, while a fast level forecaster follows it window by window.
    point_share, drift_share
        Bonferroni factors on the point's and the persistence EWMA's tail probabilities
        (the window's probability is the smaller of the two, after its factor).
    report_share
        Factor on the tail probability a window reports (not the one it learns by).
    sustain_windows
        A window after this many anomalous windows in a row (anomalous by their own tail
        probability, as learning counts them) reports its own tail probability, without
        ``report_share``: the share is for one marginal window, not a change held for a
        quarter of an hour. ``0`` off.
    record_windows, record_boost, record_margin
        A value outside the range of the last ``record_windows`` windows (anomalies
        included) by more than ``record_margin`` of the range's width has its tail
        probability divided by ``record_boost``. ``0`` / ``1`` off. The margin keeps a burst
        that repeats at the height of the last ones (a transfer of the same size, a CPU at
        its cap again) from counting as a new record by a rounding's worth; the range
        checks of the repeats below use it too.
    repeat_windows, repeat_count, repeat_runs
        A window no more unusual than ``repeat_count`` others of the last
        ``repeat_windows``, found in at least ``repeat_runs`` separate runs (windows at most
        3 apart are one run), reports just under the threshold: a defect seen once
        earlier today still alerts, a third time is how the series behaves. ``0`` off.
        So does one no more unusual than the same time yesterday (``daily_repeat_seconds``
        buckets; 0 off).
    burst_runs
        A window inside the range of the last ``record_windows`` reports just under the
        threshold once the last ``repeat_windows`` scored at alert level in this many
        separate runs before the current one: bursts that recur every hour, each a
        little further out than the last as the series stays quiet between them (which
        the repeat count, comparing scores, never holds). Runs at alert level are logged
        apart from the repeat count's 16 highest scores, which three long bursts fill
        (session 40). ``0`` off; off with the repeat count.
    daily_job_days, daily_job_seconds
        A window that comes where each of the last ``daily_job_days`` days (at most 2)
        alerted within ``daily_job_seconds`` of this time of day, and whose value is inside
        the range of the last ``record_windows``, reports just under the threshold: a daily
        job whose start moves by up to an hour from day to day alerts on its first two days
        only, a value beyond every earlier one at that time still alerts. On a series'
        second day, before any daily profile can forecast, its first day is enough: a
        sharp daily step (business hours opening) that alerted on the first day alerts
        once, not once more on the second. Uses the daily repeat's buckets (off with it);
        ``0`` off.
    daily_job_margin
        How far beyond the range of the last ``record_windows``, as a share of its width,
        a value may be and still count as inside it for the two daily rules (the same
        time yesterday, the daily job); the record boost keeps ``record_margin``. A daily
        job that runs a few % higher than on earlier days (a CPU spike at 03:05 at 1.53
        after 1.47 on NAB's ``ec2_cpu_utilization_24ae8d``) is still the job; one half
        again as high alerts. On NAB's altered copies 33 fewer false episodes on the real
        series over the twelve, at the same windows (most on young series: their first
        1,600 rows 14.6 -> 13.5 per 10k rows); two windows of an artificial series lost on
        the copies with 20 % of rows dropped (docs/benchmarks.md, session 40). ``0``: the
        rules use ``record_margin`` (before session 40).
    long_repeat_runs
        A window no more unusual than the peaks of this many separate alerts of the last
        ``record_windows`` (12: about one a day for two weeks, counted once each alert
        run has ended) reports just under the threshold: how the series behaves, not
        news (a tweet volume that bursts every day). Counts alerts raised, so a series
        held quiet by it alerts again as its old alerts leave the two weeks. On NAB's
        altered copies 35 fewer false episodes at the same windows (9 with 14; 10 lost a
        window), NAB as published 8.8 -> 8.5 per 10k rows (docs/benchmarks.md, session
        40). ``0`` off.
    hold, hold_from
        Alert hysteresis: once a window reports the threshold, up to ``hold`` following
        windows scoring ``hold_from`` or more report it too. ``0`` off.
    confirm_below
        A window that would open an alert with a score under this (0.92: a tail
        probability between about 4e-5 and 1e-4) reports just under the threshold, and the
        alert opens on the next window if that one scores ``hold_from`` or more: a lone
        marginal window alerts one window late or not at all, a window past it at once.
        On NAB it removed 2-12 % of the false alert episodes on each altered copy (NAB as
        published 9.4 -> 9.0 per 10k rows, no labelled window lost) and 27 % on seeded
        noise (``bench/null_series.py``), for 5 of about 800 windows summed over the
        twelve copies, each caught by one marginal row alone (docs/benchmarks.md, session
        39). ``0`` off. Learning sees none of these four: it follows the residual's own
        score.
    learn_anomalies, relearn_after
        As in the other detectors (``relearn_after`` is superseded by ``adopt_after``).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(7)
    >>> detector = AdaptiveDetector(adopt_after=6)
    >>> scores = []
    >>> for i in range(400):
    ...     value = 100.0 + rng.gauss(0.0, 2.0) + (60.0 if i >= 300 else 0.0)
    ...     x = {"value": value, "t": i * 300.0}
    ...     scores.append(detector.score_one(x))
    ...     detector.learn_one(x)
    >>> max(scores[100:300]) < 0.9, scores[300] >= 0.9, max(scores[310:]) < 0.9
    (True, True, True)
    """

    state_version = 2  # 2: time-of-day memory, long-view evidence; version-1 states reset
    # what a loaded state starts with (the caches are not saved; old states had no step)
    _mutations = 0  # learn_one and feedback calls: what invalidates ``_memo``
    _memo: tuple[tuple[float, float | None, int, float], Window] | None = None
    _cache: tuple[float | None, int, list[float | None]] | None = None
    _z_cache: (tuple[float, float | None, tuple[int, float], tuple[float, float, float]]
               | None) = None
    _unsaved = ("_cache", "_z_cache", "_memo", "_sample_widen")
    sample_noise = False  # states saved before the param
    _sampling: SamplingFit | None = None  # how the noise follows n (``sample_noise``)
    _sample_widen = 1.0  # the window being read: the noise its count of values adds
    # Saved states from before the flag: their calibration is long past its first season.
    _season_found = True
    unit = 0.0  # states saved before the param (the scorer sets the configured value)
    held_noise_from = 1.0  # states saved before these two params: the defaults
    held_noise_weight = 0.25
    weekly_memory = 0.8  # states saved before the param
    level_seconds = 0.0  # states saved before the param: no levelled weekly profile
    _held_since: tuple[float, float] | None = None  # (side, t) the EWMA began to hold
    live_params = frozenset({"report_share", "record_boost", "record_margin", "repeat_count",
                             "repeat_runs", "burst_runs",
                             "spike_memory", "hold", "hold_from", "confirm_below",
                             "daily_job_days", "daily_job_seconds", "daily_job_margin",
                             "long_repeat_runs",
                             "sustain_windows", "held_noise_from", "held_noise_weight",
                             "weekly_memory", "calibration_stride", "sample_noise"})

    def __getstate__(self) -> dict[str, Any]:
        # each side pair as one signed history (FoldedPair): 4 KB less, under 16 KiB on
        # every NAB series at every window (16.7 KB at most before); states saved before
        # the fold (two calibrators each) still load
        state = super().__getstate__()
        for up, down in _SIDES:
            folded = FoldedPair.fold(state[up], state[down])
            if folded is not None:
                state[up] = folded
                del state[down]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for up, down in _SIDES:
            folded = state.get(up)
            if isinstance(folded, FoldedPair):
                state[up], state[down] = folded.unfold()
        self.__dict__.update(state)

    def __init__(
        self,
        warm_up: int = 30,
        side: str = "both",
        lower: float | None = None,
        upper: float | None = None,
        count_noise: float = 0.0,
        min_scale: float = 0.0,
        rel_scale: float = 0.01,
        resolution_floor: float = 1.0,
        unit: float = 0.0,
        spread_floor: float = 0.05,
        adopt_after: int | None = 12,
        season_seconds: float = 3600.0,
        fine_seconds: float = 300.0,
        calibration_size: int = 256,
        calibration_stride: int = 1,
        sample_noise: bool = False,
        error_alpha: float = 0.05,
        select_alpha: float = 0.003,
        persistence: float = 0.3,
        spike_memory: float = 5.0,
        taper_from: float = 0.7,
        held_noise_from: float = 1.0,
        held_noise_weight: float = 0.25,
        weekly_memory: float = 0.8,
        level_seconds: float = 86400.0,
        tail_shape: float = 0.1,
        seasonal_persistence: bool = True,
        point_share: float = 2.0,
        drift_share: float = 2.0,
        report_share: float = 3.0,
        sustain_windows: int = 2,
        record_windows: int = 4032,
        record_boost: float = 30.0,
        record_margin: float = 0.01,
        repeat_windows: int = 288,
        repeat_count: int = 4,
        repeat_runs: int = 2,
        burst_runs: int = 4,
        daily_repeat_seconds: float = 900.0,
        daily_job_days: int = 2,
        daily_job_seconds: float = 3600.0,
        daily_job_margin: float = 0.1,
        long_repeat_runs: int = 12,
        hold: int = 3,
        hold_from: float = 0.5,
        confirm_below: float = 0.92,
        learn_anomalies: bool = False,
        relearn_after: int | None = None,
    ) -> None:
        """Each argument under its own name (River's convention), then the empty state."""
        check_side(side)
        if adopt_after is not None and adopt_after < 1:
            raise ValueError("adopt_after is a number of windows >= 1 (or None)")
        if sustain_windows < 0:
            raise ValueError("sustain_windows is a number of windows >= 0 (0: off)")
        if daily_job_days not in (0, 1, 2):
            raise ValueError("daily_job_days is 0 (off), 1 or 2: the daily repeat keeps two "
                             "days before today")
        self.warm_up = warm_up
        self.side = side
        self.lower = lower
        self.upper = upper
        self.count_noise = count_noise
        self.min_scale = min_scale
        self.rel_scale = rel_scale
        self.resolution_floor = resolution_floor
        self.unit = unit
        self.spread_floor = spread_floor
        self.adopt_after = adopt_after
        self.season_seconds = season_seconds
        self.fine_seconds = fine_seconds
        self.calibration_size = calibration_size
        if calibration_stride < 1:
            raise ValueError("calibration_stride is a number of windows >= 1 (1: every one)")
        self.calibration_stride = calibration_stride
        self.sample_noise = sample_noise
        self.error_alpha = error_alpha
        self.select_alpha = select_alpha
        self.persistence = persistence
        self.spike_memory = spike_memory
        self.taper_from = taper_from
        self.held_noise_from = held_noise_from
        self.held_noise_weight = held_noise_weight
        self.weekly_memory = weekly_memory
        self.level_seconds = level_seconds
        self.tail_shape = tail_shape
        self.seasonal_persistence = seasonal_persistence
        self.point_share = point_share
        self.drift_share = drift_share
        self.report_share = report_share
        self.sustain_windows = sustain_windows
        self.record_windows = record_windows
        self.record_boost = record_boost
        self.record_margin = record_margin
        self.repeat_windows = repeat_windows
        self.repeat_count = repeat_count
        self.repeat_runs = repeat_runs
        self.burst_runs = burst_runs
        self.daily_repeat_seconds = daily_repeat_seconds
        self.daily_job_days = daily_job_days
        self.daily_job_seconds = daily_job_seconds
        self.daily_job_margin = daily_job_margin
        self.long_repeat_runs = long_repeat_runs
        self.hold = hold
        self.hold_from = hold_from
        self.confirm_below = confirm_below
        self.learn_anomalies = learn_anomalies
        self.relearn_after = relearn_after
        self.z_threshold = 1.0  # unused by the calibrated score; kept for the protocol
        self._init_learner()
        self._forecasters: list[Forecaster] = [
            LevelForecaster(0.02), LevelForecaster(0.2)]
        if season_seconds > 0:
            weekly = SeasonalForecaster(7 * 86400.0, season_seconds)
            self._forecasters += [SeasonalForecaster(86400.0, season_seconds), weekly]
            if level_seconds > 0:
                self._forecasters.append(LevelledProfile(weekly, level_seconds))
        # what this time of day looked like in the last days, anomalies included: a jump
        # that recurs at the same time every day stops being a surprise
        self._memory = (SeasonalForecaster(86400.0, fine_seconds, interpolate=False)
                        if fine_seconds > 0 else None)
        n = len(self._forecasters)
        self._fit_error = [0.0] * n   # EW mean |one-step error| over every observed window
        self._fit_count = [0] * n
        self._noise = [0.0] * n       # the same over learned (normal) windows: the scale
        self._noise_count = [0] * n
        # mean |residual| of the chosen forecast per hour of day: noise that follows the day
        # (a daily ramp that the hourly profile follows only roughly) sets its own scale
        self._hour_noise = array("f", bytes(4 * 24))
        self._hour_count = array("H", bytes(2 * 24))
        self._up = TailCalibrator(size=calibration_size, shape_min=tail_shape)
        self._down = TailCalibrator(size=calibration_size, shape_min=tail_shape)
        self._drift_up = TailCalibrator(size=calibration_size, shape_min=tail_shape)
        self._drift_down = TailCalibrator(size=calibration_size, shape_min=tail_shape)
        self._ewma = 0.0
        self._version = 0  # bumped by every change of the forecasters
        self._resolution = math.inf
        self._spread = 0.0  # EW mean |value - slow level|: how much the series moves
        self._spread_count = 0
        self._last_value: float | None = None
        # the current anomaly episode: (t, value) of its windows, anomalous or not
        self._episode: deque[tuple[float | None, float, bool, float]] = deque(
            maxlen=max(max(adopt_after or 1, 1) * 2, sustain_windows))
        self._hold = False  # a confirmed verdict: keep the old normal during this episode
        # a season profile has been the chosen forecaster (none to wait for without them)
        self._season_found = season_seconds <= 0
        self._records = RecordRange(record_windows) if record_windows > 0 else None
        self._repeats = RepeatCounter(repeat_windows) if repeat_windows > 0 else None
        self._daily = DailyRepeat(daily_repeat_seconds) if daily_repeat_seconds > 0 else None

    # ---- forecast and scale -------------------------------------------------------------
    def _read(self, x: Mapping[str, Any]) -> tuple[float | None, float | None]:  # type: ignore[override]
        """(value, t) of a window; with ``sample_noise`` it also sets the window's widening
        from its count of values ``x["n"]``."""
        sampling = self._sampling
        if sampling is not None and sampling.fitted is not None and self.sample_noise:
            n = finite(x.get("n"))
            self._sample_widen = 1.0 if n is None else sampling.widen(n)
        elif self._sample_widen != 1.0:
            self._sample_widen = 1.0
        return _read_value(x)

    def _beyond_range(self, value: float) -> bool:
        """As :class:`RegimeAdoption`'s, but never for a window widened by its few values
        (``sample_noise``): the range was set mostly by windows of many values, and a
        statistic of one or two of them leaves it by sampling alone."""
        return self._sample_widen == 1.0 and super()._beyond_range(value)

    def _learn_sampling(self, x: Mapping[str, Any], z: float, scale: float) -> None:
        """A normal window's residual (``z * scale``) teaches how the noise follows its
        count of values (``sample_noise``)."""
        n = finite(x.get("n")) if self.sample_noise else None
        if n is None or n <= 0.0 or scale <= 0.0:
            return
        if self._sampling is None:
            self._sampling = SamplingFit(SAMPLING_ALPHA)
        self._sampling.learn(n, max(min(z, 6.0), -6.0) * scale)

    def _forecasts(self, t: float | None) -> list[float | None]:
        """Every forecaster's forecast for ``t``: score_one and learn_one of one window share
        them (the detector does not change in between)."""
        cached = self._cache
        if cached is not None and cached[0] == t and cached[1] == self._version:
            return cached[2]
        forecasters = self._forecasters
        if len(forecasters) == _WEEKLY_LEVEL and self.level_seconds > 0:
            self._add_levelled_profile()  # a state saved before the param
        forecasts = [f.predict(t) for f in forecasters[:_WEEKLY_LEVEL]]
        if len(forecasters) > _WEEKLY_LEVEL:  # the weekly profile times its level
            forecasts.append(forecasters[_WEEKLY_LEVEL].scaled(  # type: ignore[attr-defined]
                t, forecasts[_WEEKLY]))
        self._cache = (t, self._version, forecasts)
        return forecasts

    def _add_levelled_profile(self) -> None:
        """Give a state saved before ``level_seconds`` its levelled weekly profile (it
        starts at the weekly profile's level and is chosen once it has 10 errors)."""
        weekly = self._forecasters[_WEEKLY]
        if not isinstance(weekly, SeasonalForecaster):
            return
        self._forecasters.append(LevelledProfile(weekly, self.level_seconds))
        for errors in (self._fit_error, self._noise):
            errors.append(0.0)
        for counts in (self._fit_count, self._noise_count):
            counts.append(0)
        self._adopted = None  # an adoption to undo was measured on four forecasters
        self._confirmable = None
        self._version += 1

    def _choose(self, t: float | None) -> tuple[int, float] | None:
        """Index and forecast of the forecaster with the lowest recent one-step error."""
        best: tuple[int, float] | None = None
        best_error = math.inf
        forecasts = self._forecasts(t)
        for index, forecast in enumerate(forecasts):
            if forecast is None or self._fit_count[index] < 10:
                continue
            error = self._fit_error[index] * self._forecasters[index].penalty
            if error < best_error:
                best, best_error = (index, forecast), error
        if best is None:
            forecast = forecasts[0]
            return None if forecast is None else (0, forecast)
        return best

    def _clip(self, value: float) -> float:
        if self.lower is not None and value < self.lower:
            value = self.lower
        return self.upper if self.upper is not None and value > self.upper else value

    def _scale_of(self, index: int, forecast: float, t: float | None) -> float:
        noise = self._noise[index]
        if t is not None and self.season_seconds > 0:
            hour = int((t % 86400.0) // 3600.0)
            count = self._hour_count[hour]
            if count:
                # shrunk towards the series-wide noise while the hour has few points
                hourly = (count * self._hour_noise[hour] + 5.0 * noise) / (count + 5.0)
                noise = max(noise, hourly)
        # floors: absolute, relative, counting noise, the series' resolution, and a few
        # percent of how much the series moves at all (a smooth curve's smallest step is no
        # resolution, and a deterministic series has no noise to standardise by)
        resolution = min(self._resolution, self.unit) if self.unit > 0.0 else self._resolution
        if resolution == math.inf:
            resolution = 0.0
        return self._sample_widen * max(
            MEAN_ABS_TO_SIGMA * noise, self.min_scale, self.rel_scale * abs(forecast),
            self.count_noise * math.sqrt(max(forecast, 1.0)), self.resolution_floor * resolution,
            self.spread_floor * MEAN_ABS_TO_SIGMA * self._spread, 1e-12)

    def _z(self, value: float, t: float | None) -> tuple[float, float, float]:
        cached = self._z_cache
        version = (self._version, self._sample_widen)
        if (cached is not None and cached[0] == value and cached[1] == t
                and cached[2] == version):
            return cached[3]
        chosen = self._choose(t)
        if chosen is None:
            result = (0.0, value, 0.0)
        else:
            index, forecast = chosen
            forecast = self._clip(forecast)
            scale = self._scale_of(index, forecast, t)
            result = (self._remembered(value - forecast, value, t, index) / scale, forecast,
                      scale)
        self._z_cache = (value, t, version, result)
        return result

    def _side_log_p(self, z: float, up: TailCalibrator, down: TailCalibrator) -> float:
        if z > 0.0 and self.side != "down":
            return up.log_p(z)
        if z < 0.0 and self.side != "up":
            return down.log_p(-z)
        return 0.0

    def _drift(self, z: float) -> float:
        """Next value of the EWMA of recent (clipped) z: a held shift too small to flag in
        one window shows here."""
        if z > 8.0:  # clipped to +-8 (written out: three times a window)
            z = 8.0
        elif z < -8.0:
            z = -8.0
        return (1.0 - self.persistence) * self._ewma + self.persistence * z

    def _seasonal_z(self, value: float, t: float | None, z: float) -> float:
        """The window's z against the better warm season profile (``z`` when none is warm).

        The persistence EWMA follows this one: a fast level absorbs a daily pattern that
        moved by hours (each window only a little off the last), the profile does not.
        """
        if not self.seasonal_persistence:
            return z
        forecasts = self._forecasts(t)
        best, best_error = -1, math.inf
        for index, forecaster in enumerate(self._forecasters):
            error = self._fit_error[index] * forecaster.penalty
            if (isinstance(forecaster, _SEASONAL) and forecasts[index] is not None
                    and self._fit_count[index] >= 10 and error < best_error):
                best, best_error = index, error
        if best < 0:
            return z
        forecast = self._clip(forecasts[best])  # type: ignore[arg-type]
        return (self._remembered(value - forecast, value, t, best)
                / self._scale_of(best, forecast, t))

    def _remembered(self, residual: float, value: float, t: float | None,
                    index: int = -1) -> float:
        """``residual`` (against forecaster ``index``) shrunk by the time-of-day memory."""
        memory = self._memory
        if memory is None:
            return residual
        return memory.closer_residual(residual, value, t, self._memory_offset(index, t))

    def _memory_offset(self, index: int, t: float | None) -> float:
        """What to add to the time-of-day memory before it explains a residual of forecaster
        ``index``: the hour-of-week profile's difference from the hour-of-day profile at
        ``t`` while the weekly profile forecasts and fits clearly better than the daily one
        (its one-step error at most ``weekly_memory`` of the daily's), else 0.

        The memory keeps one value per time of day, mostly from weekdays: a Saturday at
        1.3x its usual traffic is a weekday's level, which the memory explained (5 of the 7
        special days the default still missed on the taxi-shaped series were weekend days
        up). Moved by what the week says this day is, the memory still explains what recurs
        daily (a nightly batch, the fine shape of an hour) and no longer a weekend at a
        weekday's level.
        """
        if index not in (_WEEKLY, _WEEKLY_LEVEL) or self.weekly_memory <= 0.0:
            return 0.0
        if self._fit_error[index] > self.weekly_memory * self._fit_error[_DAILY]:
            return 0.0
        forecasts = self._forecasts(t)
        daily, weekly = forecasts[_DAILY], forecasts[index]
        return 0.0 if daily is None or weekly is None else weekly - daily

    def _log_p_parts(self, z: float,
                     seasonal_z: float | None = None) -> tuple[float, float | None]:
        """(point, persistence) tail probabilities of the window, each with its own
        Bonferroni share; persistence is None when off."""
        point = self._side_log_p(z, self._up, self._down)
        if self.persistence <= 0.0:
            return point, None
        held = self._drift(z if seasonal_z is None else seasonal_z)
        drift = self._side_log_p(held, self._drift_up, self._drift_down)
        return point + math.log(self.point_share), drift + math.log(self.drift_share)

    def _log_p(self, z: float, seasonal_z: float | None = None) -> float:
        """Tail probability of the window (point and persistence), after sensitivity."""
        point, drift = self._log_p_parts(z, seasonal_z)
        # the smaller of the two tail probabilities
        log_p = point if drift is None else min(point, drift)
        return min(log_p, 0.0) / self.sensitivity

    # ---- River's protocol ---------------------------------------------------------------
    def _window(self, value: float, t: float | None) -> Window:
        """(z, scale, seasonal z, log p, evidence) of a window.

        score_one, explain and learn_one of one window share it: nothing changes the
        detector in between (``_mutations`` counts what does: learn_one and feedback).
        """
        key = (value, t, self._mutations, self._sample_widen)
        memo = self._memo
        if memo is not None and memo[0] == key:
            return memo[1]
        z, _, scale = self._z(value, t)
        seasonal_z = self._seasonal_z(value, t, z) if scale > 0.0 else z
        log_p = self._log_p(z, seasonal_z) if self.is_warm and scale > 0.0 else 0.0
        evidence = self._evidence(log_p, value, t) if log_p < 0.0 else (0.0, 0.0, 0.0)
        result = (z, scale, seasonal_z, log_p, evidence)
        self._memo = (key, result)
        return result

    def score_one(self, x: Mapping[str, Any]) -> float:
        value, t = self._read(x)
        if value is None or not self.is_warm:
            return 0.0
        return self._window(value, t)[4][2]

    def learn_one(self, x: Mapping[str, Any]) -> None:
        value, t = self._read(x)
        if value is None:
            return
        if self._adopted is not None and self._maybe_undo(value, t):
            self._mutations += 1  # the window's memo predates the undo
        z, scale, seasonal_z, log_p, evidence = self._window(value, t)
        self._mutations += 1
        score = log_p_to_score(log_p)
        self._observe(value, evidence, t)
        anomalous = self.is_warm and score >= self.threshold and not self.learn_anomalies
        if self._memory is not None:
            self._memory.learn(t, value)
        weight = self._learning_weight(score)
        noise_weight = self._noise_weight(weight, z, seasonal_z, t) if scale > 0.0 else weight
        self._track_errors(value, t, scale, learned=not anomalous, weight=noise_weight,
                           shrink=self._sample_widen)
        if not anomalous:
            self._learn_sampling(x, z, scale)
        if not self._season_found:
            self._restart_calibration_at_first_season(t)
        if scale > 0.0 and not anomalous:
            young = self.n_learned < YOUNG_WINDOWS
            self._calibrate(max(min(z, YOUNG_Z_CAP), -YOUNG_Z_CAP) if young else z,
                            history=weight >= 1.0, seasonal_z=seasonal_z)
        if anomalous:
            self._episode.append((t, value, True, z))
            self._maybe_adopt()
            return
        if self._episode:
            self._episode.append((t, value, False, z))
            if not any(bad for _, _, bad, _ in list(self._episode)[-3:]):
                self._end_episode()  # three normal windows in a row: the episode is over
        elif self._hold:
            self._hold = False  # a verdict undid an adoption, and the level is back
        self._learn(value, t, z, scale, weight, noise_weight)

    def _noise_weight(self, weight: float, z: float, seasonal_z: float,
                      t: float | None) -> float:
        """The weight a window teaches the scale with: ``held_noise_weight`` of ``weight``
        when a season profile forecasts it and the persistence EWMA has held on its side
        for a season bucket.

        The 5 % noise of a series of trips per half hour set a scale of 650 trips at night;
        a day at 1.46 of the traffic (a storm) was 2.7 scales above it at midnight, scored
        0.5, and taught the scale at full weight: 880 by 01:30, 1,600 by 06:00, 6,700 by the
        evening, where that day's residuals (10,000 trips at the peak) scored 0.06. A
        residual that keeps the side of the ones before it is a shift in the making;
        judged against the noise of the days before, such a day alerts. Level forecasters
        are left alone: they follow a shift within a few windows themselves (the weight
        there cost NAB's AWS series false alerts). The side must have held for a season
        bucket (an hour): at 5-minute windows the hourly profile's misfit within an hour
        holds a side for several windows on ordinary days, and damping those left the
        scale small (a permanent 30 % drop on a 5-minute taxi series: 22 false episodes
        in the 19 days around it over 8 seeds, 6 without the weight, 9 with the hour)."""
        if self.held_noise_weight >= 1.0 or self.persistence <= 0.0 or t is None:
            return weight
        held = self._drift(seasonal_z)
        if abs(held) < self.held_noise_from or held * z <= 0.0:
            self._held_since = None  # a window on the other side starts the hour again
            return weight
        side = 1.0 if held > 0.0 else -1.0
        since = self._held_since
        if since is None or since[0] != side:
            self._held_since = since = (side, t)
        if t - since[1] < self.season_seconds:
            return weight
        chosen = self._choose(t)
        if chosen is None or not isinstance(self._forecasters[chosen[0]], _SEASONAL):
            return weight
        return weight * self.held_noise_weight

    def _second_day(self, t: float) -> bool:
        """Whether ``t`` falls on the series' second day (its first day is over, and no
        daily profile has seen two days yet)."""
        first: float | None = None
        for forecaster in (*self._forecasters, self._memory):
            if isinstance(forecaster, SeasonalForecaster) and forecaster.first_t is not None:
                first = forecaster.first_t
                break
        return first is not None and 86400.0 <= t - first < 2 * 86400.0

    def _restart_calibration_at_first_season(self, t: float | None) -> None:
        """The first window forecast by a season profile that clearly fits better than a
        level restarts the point calibration.

        Until a profile has seen two days, a level forecasts a daily pattern and every
        morning rise is a large residual that enters the history as normal; the history
        then judges the profile's residuals by the level's. On hourly windows those rises
        stay in it for ten days (256 windows): a doubled daily peak, z 14 by the profile,
        scored 0.5-0.6 (0.98 with the restart). Only when the profile's one-step error is
        at most ``SEASON_RESTART_RATIO`` of the better level's: a profile chosen by chance
        on a series without a daily shape restarts nothing (restarting on every first
        choice cost 3-5 more false episodes on NAB's young series). The persistence
        EWMA's history is kept; the point history restarts on the conservative prior for
        its first ``min_count`` windows.
        """
        chosen = self._choose(t)
        if chosen is None or not isinstance(self._forecasters[chosen[0]], _SEASONAL):
            return
        self._season_found = True
        level_error = min(self._fit_error[0], self._fit_error[1])
        if self._fit_error[chosen[0]] <= SEASON_RESTART_RATIO * level_error:
            self._up.clear()
            self._down.clear()

    def _learn(self, value: float, t: float | None, z: float, scale: float,
               weight: float = 1.0, noise_weight: float | None = None) -> None:
        if noise_weight is None:
            noise_weight = weight
        if t is not None and self.season_seconds > 0 and scale > 0.0:
            hour = int((t % 86400.0) // 3600.0)
            count = min(self._hour_count[hour] + 1, 65535)
            self._hour_count[hour] = count
            # as a window of the typical count of values (``sample_noise``)
            unwidened = scale / self._sample_widen
            residual = abs(z) * unwidened / MEAN_ABS_TO_SIGMA
            self._hour_noise[hour] += noise_weight * ew_alpha(count, self.error_alpha) * (
                min(residual, 6.0 * unwidened) - self._hour_noise[hour])
        # a window just under the threshold moves the forecasts only a little: a drop that
        # scores 0.89 must not become the next window's forecast (and so never alert)
        for forecaster in self._forecasters:
            forecaster.learn(t, value, weight)
        self._version += 1
        self._spread_count += 1
        self._spread += ew_alpha(self._spread_count, 0.01) * (
            abs(value - self._forecasters[0].level) - self._spread)  # type: ignore[attr-defined]
        if self._last_value is not None and value != self._last_value:
            self._resolution = min(self._resolution, abs(value - self._last_value))
        self._last_value = value
        self.n_learned += 1

    # ---- explain (feedback: regimes.py) ------------------------------------------------------
    def explain(self, x: Mapping[str, Any]) -> Explanation:
        value, t = self._read(x)
        explanation: Explanation = {"expected_low": None, "expected_high": None,
                                    "observed": value, "direction": None}
        if value is None or self.n_learned == 0:
            return explanation
        z, forecast, scale = self._z(value, t)
        boundary = THRESHOLD_LOG_P * self.sensitivity
        high = forecast + scale * self._up.deviation_at(boundary)
        low = forecast - scale * self._down.deviation_at(boundary)
        chosen = self._choose(t)
        explanation.update({
            "expected": forecast,
            "expected_low": None if self.side == "up" else self._clip(low),
            "expected_high": None if self.side == "down" else self._clip(high),
            "z": z,
            "p_value": (math.exp(self._log_p(z, self._window(value, t)[2]))
                        if scale > 0.0 else 1.0),
            "model": self._forecasters[chosen[0]].name if chosen else None,
        })
        if self.score_one(x) > 0.0:
            explanation["direction"] = "up" if z > 0 else "down"
            grounds = self._grounds(value, t)
            if grounds:
                explanation["evidence"] = grounds
                if "beyond_range" in grounds:
                    explanation["range_windows"] = self.record_windows
        return explanation

    def _grounds(self, value: float, t: float | None) -> list[str]:
        """What decided a window that alerts or that a repeat kept quiet (else ``[]``):
        ``point`` (its own deviation) or ``persistence`` (the EWMA of recent windows),
        then any of ``beyond_range`` (outside the range of the last ``record_windows``),
        ``held`` (an alert kept on while the series hovers about the threshold),
        ``repeat`` (no more unusual than what the last day saw, or than
        ``long_repeat_runs`` alerts of the last two weeks: opens no alert), ``lone``
        (a lone marginal window: opens no alert unless the next is raised too) and
        ``follows_lone`` (the window after one, which opens the alert)."""
        z, scale, seasonal_z, log_p, (score, capped, reported) = self._window(value, t)
        if scale <= 0.0 or log_p >= 0.0 or (reported < self.threshold and capped >= score):
            return []
        point, drift = self._log_p_parts(z, seasonal_z)
        grounds = ["persistence" if drift is not None and drift < point else "point"]
        if self._beyond_range(value):
            grounds.append("beyond_range")
        if capped < score:
            grounds.append("lone" if capped == self.threshold - LONE_GAP else "repeat")
        if reported > capped:
            grounds.append("follows_lone" if self._follows_lone(capped) else "held")
        return grounds
