"""Calibrated scores: a standardised deviation -> how rarely the series' own history saw one.

A detector's raw deviation (a residual over a scale) means different things on different
series: a z of 5 is routine on spiky tweet counts and unheard of on a smooth sensor. The
:class:`TailCalibrator` keeps the recent deviations of one series and answers the tail
probability ``p = P(deviation >= d)`` under that series' normal behaviour: the empirical
rank inside the history and, past its upper tail, a generalised Pareto tail fitted to the
largest deviations (peaks over threshold, as in SPOT, Siffer et al., KDD 2017). The
Pareto shape is kept at or above ``shape_min`` so that the extrapolated tail is never
lighter than a power law: real series have heavy tails, and a shape of 0.1 makes
``p`` fall like ``d ** -10`` far out, so even a huge deviation keeps a rank (no score ties
at 1.0).

The score is ``1 - p ** (1 / 4)``: ``0.9`` means ``p = 1e-4``, a deviation that a
calibrated series shows about once in 10,000 windows; ``0.99`` means ``1e-8``; beyond that
the score rises by decades of ``p`` without reaching 1.0 (see :func:`log_p_to_score`).
"""

from __future__ import annotations

import math
import struct
from array import array
from bisect import bisect_left, insort
from collections import deque

import numpy as np

from dqpulse.detectors.base import DEFAULT_THRESHOLD

__all__ = ["SCORE_EXPONENT", "FoldedPair", "TailCalibrator", "log_p_to_score", "score_to_log_p"]

#: ``score = 1 - p ** (1 / SCORE_EXPONENT)``
SCORE_EXPONENT = 4.0


_LN10 = math.log(10.0)
#: below this tail probability the score approaches 1 slowly instead of saturating
_KNEE_LOG10_P = -8.0
_KNEE_SCORE = 1.0 - math.pow(10.0, _KNEE_LOG10_P / SCORE_EXPONENT)  # 0.99


def log_p_to_score(log_p: float) -> float:
    """Score in ``[0, 1)`` of a natural-log tail probability.

    ``1 - p ** (1 / 4)`` down to ``p = 1e-8`` (score 0.99); rarer than that, the score
    keeps rising by decades of ``p`` but never reaches 1.0 in floating point, so the most
    extreme windows still rank.

    >>> round(log_p_to_score(math.log(1e-4)), 6), round(log_p_to_score(0.0), 6)
    (0.9, 0.0)
    >>> log_p_to_score(math.log(1e-9)) < log_p_to_score(-1e6) < 1.0
    True
    """
    if log_p >= 0.0:
        return 0.0
    log10_p = log_p / _LN10
    if log10_p >= _KNEE_LOG10_P:
        return -math.expm1(log_p / SCORE_EXPONENT)
    excess = _KNEE_LOG10_P - log10_p  # decades beyond the knee
    return 1.0 - (1.0 - _KNEE_SCORE) / (1.0 + excess / 8.0)


def score_to_log_p(score: float) -> float:
    """Inverse of :func:`log_p_to_score`.

    >>> round(math.exp(score_to_log_p(0.9)), 8)
    0.0001
    """
    if score <= _KNEE_SCORE:
        return SCORE_EXPONENT * math.log1p(-score)
    excess = 8.0 * ((1.0 - _KNEE_SCORE) / max(1.0 - score, 1e-300) - 1.0)
    return (_KNEE_LOG10_P - excess) * _LN10


THRESHOLD_LOG_P = score_to_log_p(DEFAULT_THRESHOLD)


class TailCalibrator:
    """Tail probability of a non-negative deviation from the recent history of deviations.

    Parameters
    ----------
    size
        Deviations kept (a sliding window over the learned points).
    tail
        Share of the history treated as the tail (at least ``min_tail`` points) and fitted
        with a generalised Pareto distribution.
    shape_min, shape_max
        Bounds on the fitted Pareto shape.
    scale_min
        Floor on the Pareto scale, in deviation units: a history of identical deviations
        (a constant series) still ranks a change by its size.
    prior
        ``(scale, shape)`` of the Pareto tail above 0 used while the history is shorter
        than ``min_count``: conservative, so a young series alerts only on a large change.

    Examples
    --------
    >>> calibrator = TailCalibrator(size=200)
    >>> import random
    >>> rng = random.Random(3)
    >>> for _ in range(200):
    ...     calibrator.add(abs(rng.gauss(0.0, 1.0)))
    >>> p2, p6 = math.exp(calibrator.log_p(2.0)), math.exp(calibrator.log_p(6.0))
    >>> 0.01 < p2 < 0.1, p6 < 1e-4
    (True, True)
    """

    def __init__(self, size: int = 256, tail: float = 0.1, min_tail: int = 8,
                 min_count: int = 30, shape_min: float = 0.1, shape_max: float = 0.5,
                 scale_min: float = 0.25, prior: tuple[float, float] = (1.0, 0.25)) -> None:
        self.size = size
        self.tail = tail
        self.min_tail = min_tail
        self.min_count = min_count
        self.shape_min = shape_min
        self.shape_max = shape_max
        self.scale_min = scale_min
        self.prior = prior
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []
        self._fit: tuple[float, float, float, float] | None = None  # (u, k/n, beta, xi)
        self._stale = 0  # values added since the tail was last fitted
        self._added = 0  # values added in all
        self._marks: deque[int] = deque()  # ordinals (``_added``) of marked values kept

    # Kept as a packed array in saved state: 8 bytes a value instead of pickle's 9, and the
    # sorted copy is rebuilt on load.
    def __getstate__(self) -> dict[str, object]:
        state = self._fields()
        # packed by struct: 3x as fast as array("d", deque); still an array in the state,
        # which every dqpulse version reads
        state["_fifo"] = array("d", struct.pack(f"{len(self._fifo)}d", *self._fifo))
        state["_sorted"] = None
        return state

    def _fields(self) -> dict[str, object]:
        """The saved state without the history."""
        state = dict(self.__dict__)
        del state["_fifo"], state["_sorted"]
        # marks are rare (a remembered burst, for 256 windows): without any, the state
        # does not carry them; it carries the count they are numbered by, which a verdict
        # on an episode that is over names its remembered bursts by
        if self._marks:
            state["_marks"] = tuple(self._marks)
        else:
            del state["_marks"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._fifo = deque(state["_fifo"])  # type: ignore[call-overload]
        self._sorted = sorted(self._fifo)
        # states saved without marks (or before them): nothing in them is marked
        self.__dict__.setdefault("_added", len(self._fifo))
        self._marks = deque(state.get("_marks", ()))  # type: ignore[call-overload]

    def __len__(self) -> int:
        return len(self._fifo)

    def add(self, deviation: float, marked: bool = False) -> None:
        """Add one deviation; a ``marked`` one counts like any other, but
        :meth:`unmarked_deviation_at` leaves it out."""
        if deviation != deviation:  # NaN: no deviation to rank (and it would unsort the history)
            return
        value = deviation if 0.0 <= deviation <= 1e30 else min(max(deviation, 0.0), 1e30)
        fifo, ordered, marks = self._fifo, self._sorted, self._marks
        fifo.append(value)
        insort(ordered, value)
        self._added += 1
        if marked:
            marks.append(self._added)
        if len(fifo) > self.size:
            del ordered[bisect_left(ordered, fifo.popleft())]
            if marks:
                first_kept = self._added - len(fifo) + 1  # as _first_kept
                while marks and marks[0] < first_kept:
                    marks.popleft()
        self._stale += 1
        # refitting the tail on every value buys nothing measurable; refitting at fixed
        # points (not when a score happens to ask) keeps scores independent of call order
        if (self._fit is None or self._stale >= 8) and len(ordered) >= self.min_count:
            self._fit = None
            self._tail_fit()

    def clear(self) -> None:
        self._fifo.clear()
        self._sorted.clear()
        self._marks.clear()
        self._fit = None

    def _first_kept(self) -> int:
        """Ordinal (``_added``) of the oldest value still in the history."""
        return self._added - len(self._fifo) + 1

    def unmarked_deviation_at(self, log_p: float) -> float:
        """:meth:`deviation_at` of the history without its marked values.

        >>> calibrator = TailCalibrator(size=100)
        >>> for i in range(100):
        ...     calibrator.add(0.0)
        >>> for _ in range(10):
        ...     calibrator.add(50.0, marked=True)
        >>> calibrator.deviation_at(-9.0) > 50.0
        True
        >>> calibrator.unmarked_deviation_at(-9.0) < 10.0
        True
        """
        if not self._marks:
            return self.deviation_at(log_p)
        first = self._first_kept()
        marked = {ordinal - first for ordinal in self._marks}
        plain = TailCalibrator(self.size, self.tail, self.min_tail, self.min_count,
                               self.shape_min, self.shape_max, self.scale_min, self.prior)
        plain._sorted = sorted(v for i, v in enumerate(self._fifo) if i not in marked)
        return plain.deviation_at(log_p)

    def forget_marked(self, first: int, count: int) -> None:
        """Turn the marked values still kept among the ``count`` added from ordinal
        ``first`` (``_added`` as it was when each was added) into zero deviations,
        unmarked: bursts remembered as how the series behaves that a user confirmed as
        anomalies.

        >>> calibrator = TailCalibrator(size=100)
        >>> for i in range(100):
        ...     calibrator.add(0.0)
        >>> for _ in range(10):
        ...     calibrator.add(50.0, marked=True)
        >>> calibrator.forget_marked(101, 10)
        >>> calibrator.deviation_at(-9.0) < 10.0, len(calibrator), calibrator._marks
        (True, 100, deque([]))
        """
        last = first + count - 1
        targets = [ordinal for ordinal in self._marks if first <= ordinal <= last]
        if not targets:
            return
        kept_from = self._first_kept()
        fifo, ordered = self._fifo, self._sorted
        for ordinal in targets:
            index = ordinal - kept_from
            del ordered[bisect_left(ordered, fifo[index])]
            fifo[index] = 0.0
            insort(ordered, 0.0)
        self._marks = deque(ordinal for ordinal in self._marks if not first <= ordinal <= last)
        self._fit = None
        if len(ordered) >= self.min_count:
            self._tail_fit()

    def _tail_fit(self) -> tuple[float, float, float, float]:
        """(threshold u, share of points above it, Pareto scale, Pareto shape)."""
        if self._fit is None:
            n = len(self._sorted)
            k = min(max(int(self.tail * n), self.min_tail), n - 1)
            u = float(self._sorted[n - k - 1])
            excesses = [v - u for v in self._sorted[n - k:]]
            mean = sum(excesses) / k
            var = sum([(e - mean) ** 2 for e in excesses]) / max(k - 1, 1)
            # method of moments for the generalised Pareto: shape = (1 - mean^2/var) / 2
            shape = 0.5 * (1.0 - mean * mean / var) if var > 0.0 else self.shape_min
            shape = min(max(shape, self.shape_min), self.shape_max)
            beta = max(mean * (1.0 - shape), self.scale_min)
            self._fit = (u, k / (n + 1.0), beta, shape)
            self._stale = 0
        return self._fit

    def log_p(self, deviation: float) -> float:
        """Natural log of the tail probability of ``deviation`` (``0.0`` for ``<= 0``)."""
        if not deviation > 0.0:
            return 0.0
        if math.isinf(deviation):
            deviation = 1e300
        n = len(self._sorted)
        if n < self.min_count:
            beta, shape = self.prior
            return -math.log1p(shape * deviation / beta) / shape
        fit = self._fit
        u, share, beta, shape = fit if fit is not None else self._tail_fit()
        if deviation <= u:
            above = n - bisect_left(self._sorted, deviation)
            return math.log((above + 1.0) / (n + 1.0))
        return math.log(share) - math.log1p(shape * (deviation - u) / beta) / shape

    def deviation_at(self, log_p: float) -> float:
        """The deviation whose tail probability is ``exp(log_p)`` (the alert boundary)."""
        n = len(self._sorted)
        if n < self.min_count:
            beta, shape = self.prior
            return beta * math.expm1(-shape * log_p) / shape
        u, share, beta, shape = self._tail_fit()
        if log_p >= math.log(share):
            index = min(max(int(math.ceil(n + 1 - math.exp(log_p) * (n + 1))), 0), n - 1)
            return float(self._sorted[index])
        return u + beta * math.expm1(-shape * (log_p - math.log(share))) / shape


class FoldedPair:
    """The saved form of two calibrators that learn the two sides of one signed deviation.

    A detector calibrates ``z > 0`` and ``z < 0`` apart: one calibrator learns
    ``max(z, 0)`` and the other ``max(-z, 0)`` of every window, so at each place of their
    histories at least one of them holds a zero. Their histories fold into one signed
    history (``up - down``) and unfold exactly (``max(s, 0)``, ``max(-s, 0)``, signed
    zeros included): a state carries 256 values instead of 512, about 2 KB less per
    pair. The rest of each calibrator (its parameters, fit and marks) is kept as it is.

    >>> up, down = TailCalibrator(size=4), TailCalibrator(size=4)
    >>> for z in (1.5, -2.0, 0.0, 3.0, -0.5):
    ...     up.add(max(z, 0.0)); down.add(max(-z, 0.0))
    >>> folded = FoldedPair.fold(up, down)
    >>> list(folded.signed)
    [-2.0, 0.0, 3.0, -0.5]
    >>> again_up, again_down = folded.unfold()
    >>> list(again_up._fifo), list(again_down._fifo)
    ([0.0, 0.0, 3.0, 0.0], [2.0, -0.0, 0.0, 0.5])
    >>> FoldedPair.fold(up, up) is None  # histories that are not two sides do not fold
    True
    """

    def __init__(self, signed: array[float], up: dict[str, object],
                 down: dict[str, object]) -> None:
        self.signed = signed
        self.up = up
        self.down = down

    @classmethod
    def fold(cls, up: TailCalibrator, down: TailCalibrator) -> FoldedPair | None:
        """The pair folded, or None when their histories are not two sides of one
        (different lengths, a place where both are above 0, a negative or NaN value)."""
        n = len(up._fifo)
        if len(down._fifo) != n:
            return None
        ups = np.frombuffer(struct.pack(f"{n}d", *up._fifo))
        downs = np.frombuffer(struct.pack(f"{n}d", *down._fifo))
        if not ((ups >= 0.0).all() and (downs >= 0.0).all()) or ((ups > 0.0) & (downs > 0.0)).any():
            return None
        return cls(array("d", (ups - downs).tobytes()), up._fields(), down._fields())

    def unfold(self) -> tuple[TailCalibrator, TailCalibrator]:
        """The two calibrators, as they were folded: ``max(s, 0)`` and ``max(-s, 0)`` as
        Python computes them (a zero keeps its sign)."""
        signed = np.frombuffer(self.signed)
        negated = -signed
        up = TailCalibrator.__new__(TailCalibrator)
        up.__setstate__({**self.up, "_fifo": np.where(signed < 0.0, 0.0, signed).tolist()})
        down = TailCalibrator.__new__(TailCalibrator)
        down.__setstate__({**self.down,
                           "_fifo": np.where(negated < 0.0, 0.0, negated).tolist()})
        return up, down
