"""Rolling median / MAD scorer for ratios, drift scores and other level-free series."""

from __future__ import annotations

from collections import deque

import numpy as np

from dqpulse.detectors.base import MAD_TO_SIGMA, UnivariateDetector, check_side, register

__all__ = ["RobustDetector"]


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
        check_side(side)
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
        scale = max(MAD_TO_SIGMA * mad, self.min_scale, self.rel_scale * abs(median))
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
