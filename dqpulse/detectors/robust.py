"""Rolling median / MAD scorer for ratios, drift scores and other level-free series."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import bdtr, bdtrc, ndtri

from dqpulse.detectors.base import (
    MAD_TO_SIGMA,
    Explanation,
    UnivariateDetector,
    Verdict,
    check_side,
    finite,
    register,
    z_to_score,
)
from dqpulse.detectors.evidence import RepeatCounter

__all__ = ["RobustDetector"]


@register("robust")
class RobustDetector(UnivariateDetector):
    """Rolling median / MAD scorer for ratios, drift scores and other level-free series.

    The scale is ``max(1.4826 * MAD, min_scale, rel_scale * |median|)``: a ratio that sits
    at exactly 0 for days has MAD 0, and the absolute floor ``min_scale`` keeps a change to
    0.001 from being infinitely anomalous while a jump to 0.3 still is.
    For a share of records (nulls, duplicates, violations) the window's record count
    ``x["n"]`` adds counting noise: the share's z is at most the z of its binomial tail
    probability (the chance of at least that many of the ``n`` records, each with ``p``
    the mean learned share), so two nulls among the 17 records of a quiet night window
    (12 %) are no news when 1 % of records are null (a 1.2 % chance), while 5 duplicate
    keys among 17 are when duplicates are rare.

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
    binomial
        Weigh counting noise when the window's record count is given as ``x["n"]``
        (a share of records); off for other series.
    learn_anomalies, relearn_after
        As in :class:`SeasonalDetector`.
    repeat_windows, repeat_count, repeat_runs
        A window that would open an alert while ``repeat_count`` others of the last
        ``repeat_windows`` scored as high, in at least ``repeat_runs`` separate alert runs
        (windows at most 3 apart are one run), reports just under the threshold: a defect
        seen once earlier today still alerts, a third time (or a fifth, for defects of one
        window) is how the series behaves (a
        field whose nulls come in bursts, one producer's batch at a time). The windows of
        an alert run that is on are not held back, and a ``confirmed`` verdict clears the
        memory. Anomalies are never learned, so without it such a series alerts on every
        burst however often they come. ``0`` off.
    repeat_margin
        How much higher than the earlier windows a window may score and still be a
        repeat: they need only reach its z divided by ``1 + repeat_margin`` (``0``: as
        high). Nulls come in one producer's batches whose sizes vary, and the highest of
        each day's bursts would otherwise alert as news every day.

    Examples
    --------
    >>> detector = RobustDetector(warm_up=10)
    >>> for _ in range(50):
    ...     detector.learn_one({"value": 0.0})
    >>> detector.score_one({"value": 0.001}) < 0.1, detector.score_one({"value": 0.3}) > 0.99
    (True, True)

    A share of 1 % learned from windows of 300 records: 2 of 17 records scores low, 20 of
    300 does not.

    >>> shares = RobustDetector(warm_up=10, side="up", binomial=True)
    >>> for i in range(100):
    ...     shares.learn_one({"value": 0.01 if i % 2 else 0.0, "n": 300})
    >>> shares.score_one({"value": 2 / 17, "n": 17}) < 0.9
    True
    >>> shares.score_one({"value": 20 / 300, "n": 300}) >= 0.9
    True

    Bursts of two windows at the same height: the first two alert, the third is how the
    series behaves (four windows as high, in two runs, came before it); a higher one
    alerts again.

    >>> bursty = RobustDetector(warm_up=10, side="up")
    >>> alerts = []
    >>> for i in range(160):
    ...     x = {"value": 0.2 if i % 40 >= 38 else 0.0}
    ...     alerts.append(bursty.score_one(x) >= 0.9)
    ...     bursty.learn_one(x)
    >>> [i for i, alert in enumerate(alerts) if alert]
    [38, 39, 78, 79]
    >>> bursty.score_one({"value": 0.5}) >= 0.9
    True
    """

    state_version = 1
    # the repeat rule's memory follows the configuration (the scorer gives a data set of
    # narrow windows a day's worth of them): a change keeps the learned median and MAD
    live_params = frozenset({"repeat_windows", "repeat_count", "repeat_runs", "repeat_margin"})
    binomial = False  # states saved before the parameter existed
    _records: float | None = None
    # states saved before the repeat rule: on with the defaults from their next window
    repeat_windows = 288
    repeat_count = 4
    repeat_runs = 2
    repeat_margin = 0.0
    _repeats: RepeatCounter | None = None
    _alerting = False  # the last window learned was reported as an anomaly

    def __init__(
        self,
        z_threshold: float = 6.0,
        window_size: int = 256,
        warm_up: int = 20,
        min_scale: float = 0.01,
        rel_scale: float = 0.02,
        side: str = "both",
        binomial: bool = False,
        learn_anomalies: bool = False,
        relearn_after: int | None = None,
        repeat_windows: int = 288,
        repeat_count: int = 4,
        repeat_runs: int = 2,
        repeat_margin: float = 0.0,
    ) -> None:
        check_side(side)
        if not repeat_margin >= 0.0:
            raise ValueError("repeat_margin is a share of a window's z >= 0 (0: as high)")
        self.z_threshold = z_threshold
        self.window_size = window_size
        self.warm_up = warm_up
        self.min_scale = min_scale
        self.rel_scale = rel_scale
        self.side = side
        self.binomial = binomial
        self.learn_anomalies = learn_anomalies
        self.relearn_after = relearn_after
        self.repeat_windows = repeat_windows
        self.repeat_count = repeat_count
        self.repeat_runs = repeat_runs
        self.repeat_margin = repeat_margin
        self._repeats = None
        self._alerting = False
        self._init_learner()
        self._window: deque[float] = deque(maxlen=window_size)
        self._stats: tuple[float, float, float] | None = None
        self._records: float | None = None  # x["n"] of the window being scored

    def _read(self, x: Mapping[str, Any]) -> tuple[float | None, float | None]:  # type: ignore[override]
        records = finite(x.get("n"))
        self._records = records if records is not None and records > 0.0 else None
        return super()._read(x)

    def _raw_score(self, x: Mapping[str, Any]) -> float:
        return super().score_one(x)

    def _repeated(self, score: float, x: Mapping[str, Any]) -> bool:
        """Whether window ``x`` of ``score`` would open an alert that earlier windows of the
        last ``repeat_windows`` make a repeat (see the class docstring)."""
        repeats = self._repeat_memory()
        if (repeats is None or self._alerting or score < self.threshold
                or self.repeat_count <= 0):
            return False
        score = self._compared(score, x)
        return (repeats.as_high(score) >= self.repeat_count
                and repeats.runs(score) >= self.repeat_runs)

    def _compared(self, score: float, x: Mapping[str, Any]) -> float:
        """The score earlier windows must reach to make window ``x`` a repeat: its own, or
        with ``repeat_margin`` the score of its z shrunk by that share (never under the
        threshold)."""
        if self.repeat_margin <= 0.0:
            return score
        value, t = self._read(x)
        if value is None:
            return score
        z = self._one_sided(self._z(value, t)[0]) / (1.0 + self.repeat_margin)
        return max(self.threshold, min(score, z_to_score(z, self.effective_z_threshold,
                                                         self.threshold)))

    def _repeat_memory(self) -> RepeatCounter | None:
        """The repeat rule's memory over the last ``repeat_windows`` (``None``: off)."""
        repeats = self._repeats
        if repeats is None or self.repeat_windows <= 0:
            return None
        repeats.windows = self.repeat_windows  # a live param: the configured memory
        return repeats

    def score_one(self, x: Mapping[str, Any]) -> float:
        score = self._raw_score(x)
        return self.threshold - 1e-4 if self._repeated(score, x) else score

    def learn_one(self, x: Mapping[str, Any]) -> None:
        value, t = self._read(x)
        if value is None:
            return
        score = self._raw_score(x)
        reported = self.threshold - 1e-4 if self._repeated(score, x) else score
        if self.repeat_windows > 0:
            if self._repeats is None:
                self._repeats = RepeatCounter(self.repeat_windows)
            self._repeats.windows = self.repeat_windows
            self._repeats.add(score)
        self._alerting = reported >= self.threshold
        if self._should_learn(score):  # learning follows the window's own score
            self._update(value, t)
            self.n_learned += 1

    def explain(self, x: Mapping[str, Any]) -> Explanation:
        explanation = super().explain(x)
        if self._repeated(self._raw_score(x), x):
            explanation = {**explanation, "evidence": ["repeat"]}
        return explanation

    def feedback(self, x: Mapping[str, Any], verdict: Verdict) -> None:
        super().feedback(x, verdict)
        if verdict == "confirmed" and self._repeats is not None:
            # a confirmed defect is no habit to hold the next one like it back with
            self._repeats = RepeatCounter(self.repeat_windows)

    def _median_mad(self) -> tuple[float, float, float]:
        """Median, MAD and mean of the learned values."""
        if self._stats is None or len(self._stats) != 3:  # a state saved with two
            if not self._window:
                return 0.0, 0.0, 0.0
            ordered = sorted(self._window)
            median = _sorted_median(ordered)
            # |v - median| as two ascending runs (below the median, reversed; then the
            # rest): one merge sorts them, cheaper than numpy's medians on a few hundred
            below = bisect_left(ordered, median)
            deviations = [median - v for v in reversed(ordered[:below])]
            deviations += [v - median for v in ordered[below:]]
            deviations.sort()
            values = np.fromiter(self._window, dtype=float, count=len(self._window))
            self._stats = (median, _sorted_median(deviations), float(values.mean()))
        return self._stats

    def _z(self, value: float, t: float | None) -> tuple[float, float, float]:
        median, mad, mean = self._median_mad()
        scale = max(MAD_TO_SIGMA * mad, self.min_scale, self.rel_scale * abs(median))
        z = (value - median) / scale
        if self.binomial and self._records is not None and z != 0.0:
            counted = _counting_z(value, self._records, mean)
            if abs(counted) < abs(z):  # counting noise explains it better: report its z
                if counted * z > 0.0:
                    z, scale = counted, (value - median) / counted
                else:  # the count is no higher (lower) than its rate makes likely
                    z = 0.0
        return z, median, scale

    def _explanation(self, value: float, fit: tuple[float, float, float]) -> Explanation:
        """The base band; a share of records (``binomial``) lies in 0 .. 1, and so does
        its band: a share of the 2 values of a sparse field's window reads "expected up
        to 100 %", not "up to 217 %"."""
        explanation = super()._explanation(value, fit)
        if self.binomial:
            low, high = explanation["expected_low"], explanation["expected_high"]
            if low is not None:
                explanation["expected_low"] = min(max(low, 0.0), 1.0)
            if high is not None:
                explanation["expected_high"] = min(max(high, 0.0), 1.0)
        return explanation

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


def _sorted_median(ordered: list[float]) -> float:
    """Median of a sorted non-empty list, as ``numpy.median`` computes it.

    >>> _sorted_median([1.0, 2.0, 4.0]), _sorted_median([1.0, 2.0, 4.0, 8.0])
    (2.0, 3.0)
    """
    half = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[half])
    return float((ordered[half - 1] + ordered[half]) / 2)


def _counting_z(share: float, records: float, rate: float) -> float:
    """Signed z of ``share`` of ``records`` records when each is counted with chance
    ``rate``: the normal quantile of the binomial tail probability on the side of
    ``share`` (infinite when the rate makes that count impossible).

    >>> round(_counting_z(2 / 17, 17, 0.01), 2), round(_counting_z(7 / 17, 17, 0.01), 2)
    (2.25, 6.27)
    >>> _counting_z(1 / 17, 17, 0.0), _counting_z(0.0, 17, 0.01)
    (inf, 0.0)
    """
    n = max(round(records), 1)
    k = round(share * n)
    rate = min(max(rate, 0.0), 1.0)
    if k > rate * n:
        tail, sign = float(bdtrc(k - 1, n, rate)), 1.0  # P(K >= k)
    elif k < rate * n:
        tail, sign = float(bdtr(k, n, rate)), -1.0  # P(K <= k)
    else:
        return 0.0
    if tail <= 0.0:
        return math.copysign(math.inf, sign)
    return sign * max(-float(ndtri(min(tail, 0.5))), 0.0)
