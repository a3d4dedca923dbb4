"""Regime changes for the adaptive detector: anomaly episodes, adoption of a held shift.

A mixin of :class:`dqpulse.detectors.adaptive.AdaptiveDetector`, kept apart so that the
detector's module holds forecasting and scoring and this one the episode bookkeeping.
"""

from __future__ import annotations

import math
from collections import deque

from dqpulse.detectors.calibration import THRESHOLD_LOG_P, TailCalibrator
from dqpulse.detectors.forecasters import Forecaster, ew_alpha

__all__ = ["Episode", "RegimeAdoption"]

#: (window start, value, anomalous, z) of the windows of the current anomaly episode
Episode = deque[tuple[float | None, float, bool, float]]


class RegimeAdoption:
    """Calibration history, episode bookkeeping and regime adoption; the detector provides
    the forecasts and scales."""

    adopt_after: int | None
    spike_memory: float
    select_alpha: float
    n_learned: int
    _episode: Episode
    _forecasters: list[Forecaster]
    _fit_count: list[int]
    _fit_error: list[float]
    _noise: list[float]
    _hold: bool
    _last_value: float | None
    _version: int
    persistence: float
    _ewma: float
    _up: TailCalibrator
    _down: TailCalibrator
    _drift_up: TailCalibrator
    _drift_down: TailCalibrator

    def _choose(self, t: float | None) -> tuple[int, float] | None:
        raise NotImplementedError

    def _clip(self, value: float) -> float:
        raise NotImplementedError

    def _scale_of(self, index: int, forecast: float, t: float | None) -> float:
        raise NotImplementedError

    def _drift(self, z: float) -> float:
        raise NotImplementedError

    def _z(self, value: float, t: float | None) -> tuple[float, float, float]:
        raise NotImplementedError

    def _learn(self, value: float, t: float | None, z: float, scale: float,
               weight: float = 1.0) -> None:
        raise NotImplementedError

    def _boundary(self, z: float) -> float:
        if z > 0.0:
            return self._up.deviation_at(THRESHOLD_LOG_P)
        return -self._down.deviation_at(THRESHOLD_LOG_P)

    def _calibrate(self, z: float, drift: bool = True, history: bool = True,
                   seasonal_z: float | None = None) -> None:
        """Add ``z`` to the calibration history (``history``) and move the persistence EWMA
        (``drift``). A doubtful window (scoring above ``taper_from``) moves the EWMA, so a
        held change builds up there, but stays out of the history it is judged against."""
        if history:
            self._up.add(max(z, 0.0))
            self._down.add(max(-z, 0.0))
        # the persistence EWMA follows normal windows only: an anomaly alerts by itself
        if drift and self.persistence > 0.0:
            ewma = self._drift(z if seasonal_z is None else seasonal_z)
            if history:
                self._drift_up.add(max(ewma, 0.0))
                self._drift_down.add(max(-ewma, 0.0))
            self._ewma = ewma

    def _settle(self, points: list[tuple[float | None, float, bool, float]]) -> None:
        """Count an ended episode's anomalous windows in the model choice.

        While an episode lasts its windows change nothing (anomalies are not learned); once
        it is over or adopted, which forecaster explained them best counts like any other
        window: the hour-of-day profile that foresaw a daily jump wins over a level that
        did not.
        """
        for t, value, bad, _ in points:
            if not bad:
                continue
            forecasts = [f.predict(t) for f in self._forecasters]
            chosen = self._choose(t)
            scale = self._scale_of(chosen[0], chosen[1], t) if chosen else 0.0
            cap = 6.0 * scale if scale > 0.0 else math.inf
            for index, forecast in enumerate(forecasts):
                if forecast is None:
                    continue
                error = min(abs(value - self._clip(forecast)), cap)
                self._fit_count[index] += 1
                alpha = ew_alpha(self._fit_count[index], self.select_alpha)
                self._fit_error[index] += alpha * (error - self._fit_error[index])
        self._version += 1

    def _end_episode(self) -> None:
        points = list(self._episode)
        self._settle(points)
        if self.spike_memory > 0.0:
            # a burst that came and went is part of how this series behaves: the next one
            # like it is less surprising (capped, so one huge burst does not mask the rest)
            for _, _, bad, z in points:
                if bad:
                    bound = self.spike_memory * self._boundary(z)
                    self._calibrate(max(min(z, bound), -bound) if z > 0 else
                                    max(z, bound), drift=False)
        self._episode.clear()
        self._hold = False

    def _maybe_adopt(self) -> None:
        """Adopt a shift held for ``adopt_after`` windows (at least half of them anomalous):
        each forecaster moves by its own median residual over them, and its scale grows to
        their spread around it."""
        if self.adopt_after is None or self._hold:
            return
        recent = list(self._episode)[-self.adopt_after:]
        if len(recent) < self.adopt_after:
            return
        if sum(1 for _, _, bad, _ in recent if bad) * 2 < len(recent):
            return
        self._settle(recent)
        chosen_delta: float | None = None
        for index, forecaster in enumerate(self._forecasters):
            residuals = sorted(value - self._clip(forecast) for t, value, *_ in recent
                               if (forecast := forecaster.predict(t)) is not None)
            if not residuals:
                # a profile still warming up moves with the level that did forecast, so it
                # does not come alive with the old level in half of its buckets
                if chosen_delta is not None:
                    forecaster.shift(chosen_delta)
                continue
            delta = residuals[len(residuals) // 2]
            if chosen_delta is None:
                chosen_delta = delta
            spread = sorted(abs(r - delta) for r in residuals)[len(residuals) // 2]
            forecaster.shift(delta)
            # the new spread as a mean absolute error (for Gaussian noise MAD ~ 0.85 of it)
            self._noise[index] = max(self._noise[index], spread * 1.18)
        for t, value, *_ in recent:
            for forecaster in self._forecasters:
                forecaster.learn(t, value)
        self._last_value = recent[-1][1]
        self._episode.clear()
        self._version += 1
        self.n_learned += len(recent)

    # ---- the feedback path of the base class -----------------------------------------
    def _update(self, value: float, t: float | None) -> None:
        z, _, scale = self._z(value, t)
        self._learn(value, t, z, scale)
        self.n_learned -= 1  # the base class counts it

    def _forget(self, value: float, t: float | None) -> bool:
        return False  # exponentially weighted state: a learned window cannot be taken back

