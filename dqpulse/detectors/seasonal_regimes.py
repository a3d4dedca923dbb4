"""Regime adoption for the seasonal detector: a held level shift becomes the new normal.

A mixin of :class:`dqpulse.detectors.seasonal.SeasonalDetector`, kept apart so that the
detector's module holds the season profiles and scoring and this one the episode
bookkeeping. The adaptive detector has its own (:mod:`dqpulse.detectors.regimes`): its
forecasters move by a residual or, where that fits a season profile clearly better, by a
ratio; the seasonal profiles here are rescaled by a ratio whenever the series is positive.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

__all__ = ["SILENT_RATIO", "SeasonalAdoption", "in_episode", "upper_median"]

#: windows of the current anomaly episode: (window start, value, expected, anomalous or held)
_EpisodePoint = tuple[float | None, float, float, bool]
# normal windows in a row that end an anomaly episode
_EPISODE_END = 3
#: a window whose value is below this share of the expected one is a near-silence: a dead
#: source is left to the silence and freshness rules, never adopted as a normal level
SILENT_RATIO = 0.02
# the most the held ratio may move between the first and second half of the windows, as a
# share of the shift itself, for them to count as one new level
_DRIFT_SHARE = 0.25
# anomalous windows back at the level before an adoption of the last day that undo it
_UNDO_WINDOWS = 3
# an adoption can be undone for a day, or for this many times ``adopt_after`` windows when
# that is longer (hourly windows: two days; the first weekend's adoption is undone on
# Monday instead of being followed by an adoption of the weekday level, which moved the
# hour-of-week profile's weekend hours up with it)
_UNDO_SPANS = 2
# how the spread of a count follows its level, ``spread ~ level ** b``, read off the
# hour-of-day profile: b = 0.5 is counting (Poisson) noise, 1 noise in proportion to the
# level; only from this many warm hours whose levels differ by at least this factor
_SPREAD_MIN_HOURS = 8
_SPREAD_MIN_RANGE = 1.5
_SPREAD_EXPONENT_MIN = 0.5


class SeasonalAdoption:
    """Anomaly episodes and the adoption of a shift held for ``adopt_after`` windows."""

    adopt_after: int | None = None  # old saved states: never (the scorer sets the new value)
    adopt_min_seconds: float = 0.0  # old saved states: no floor in time
    threshold: float
    _profiles: list[Any]
    _local: Any
    _journal: deque[Any]
    _drift: float

    # Old saved states predate adoption: they read these class defaults.
    _shift_episode: deque[_EpisodePoint] | None = None
    _hold: bool = False
    adoptions: int = 0
    verdict_undos: int = 0  # adoptions taken back by a ``confirmed`` verdict on their windows
    # the ratio adopted over the last day (1: none), when, and windows back at the old level
    _undo: float = 1.0
    _undo_t: float | None = None
    _undo_run: int = 0
    _undo_spread: float = 1.0  # the factor the spreads moved by in those adoptions
    _undo_since: float | None = None  # the first window of the first of those adoptions
    # per profile, the buckets empty when the current episode / the adopted one began
    _episode_empty: tuple[tuple[int, ...], ...] = ()
    _step: float | None = None  # the series' window width (set by the detector)
    _undo_empty: tuple[tuple[int, ...], ...] = ()

    def _episode_window(self, t: float | None, value: float, expected: float,
                        anomalous: bool, held: bool = False) -> bool:
        """Note a window in the current episode; True when it completes an adoption.

        ``held``: not anomalous, but scoring where learning is tapered (near the alert
        threshold): it neither opens an episode nor ends one, and counts as held for an
        adoption. Traffic that wanders brings some windows of a real shift just under the
        threshold; with them counted as normal, three in a row ended the episode."""
        if self.adopt_after is None:
            return False
        episode = self._shift_episode
        span = 2 * self._adopt_windows()
        if episode is None or episode.maxlen != span:
            episode = self._shift_episode = deque(episode or (), maxlen=span)
        if not anomalous and not episode:
            return False
        if not episode:
            self._episode_empty = self._empty_buckets()
        episode.append((t, value, expected, anomalous or held))
        if anomalous and self._old_level_back(t, value, expected):
            return True
        if not anomalous:
            if not any(bad for *_, bad in list(episode)[-_EPISODE_END:]):
                episode.clear()  # the episode is over: the old normal came back
                self._episode_empty = ()
                self._hold = False
            return False
        return self._maybe_adopt()

    def _maybe_adopt(self) -> bool:
        """Move every profile to the held level: by the median ratio of value to expected
        over the last ``adopt_after`` windows (all anomalous, on one side, the ratio
        steady) when the series is not negative, else by the median difference."""
        episode = self._shift_episode
        if self.adopt_after is None or self._hold or episode is None:
            return False
        windows = self._adopt_windows()
        recent = list(episode)[-windows:]
        if len(recent) < windows or not all(bad for *_, bad in recent):
            return False
        if len({value > expected for _, value, expected, _ in recent}) > 1:
            return False  # above and below: no one level explains it
        if all(value >= 0.0 and expected > 0.0 for _, value, expected, _ in recent):
            logs = [math.log(max(value / expected, SILENT_RATIO))
                    for _, value, expected, _ in recent]
            shift = upper_median(logs)
            if shift <= math.log(SILENT_RATIO) + 1e-9:
                return False
            # a level shift is one ratio held; a daily pattern moved by hours is a ratio
            # that drifts window by window: its two halves differ by much of the shift
            half = len(logs) // 2
            drift = upper_median(logs[half:]) - upper_median(logs[:half])
            if abs(drift) > _DRIFT_SHARE * abs(shift):
                return False
            if self._undo == 1.0:
                self._undo_empty = self._episode_empty
                self._undo_since = episode[0][0]
            self._undo_spread *= self._rescale(math.exp(shift), 0.0, keep=self._episode_empty)
            self._undo *= math.exp(shift)
            self._undo_t, self._undo_run = recent[-1][0], 0
        else:
            deltas = sorted(value - expected for _, value, expected, _ in recent)
            self._rescale(1.0, deltas[len(deltas) // 2], keep=self._episode_empty)
        episode.clear()
        self._episode_empty = ()
        self._journal.clear()  # learned points can no longer be taken back exactly
        self._drift = 0.0
        self.adoptions += 1
        return True

    def _adopt_windows(self) -> int:
        """Windows a shift must be held for: ``adopt_after``, or as many as cover
        ``adopt_min_seconds`` at the series' window width when that is more."""
        windows = self.adopt_after or 0
        if self.adopt_min_seconds > 0.0 and self._step:
            windows = max(windows, math.ceil(self.adopt_min_seconds / self._step - 1e-9))
        return windows

    def _old_level_back(self, t: float | None, value: float, expected: float) -> bool:
        """Undo the adoptions of the last day when the level before them is back.

        A daily pattern moved by hours for a while can pass as a held level (its ratio
        drifts only slowly); when it ends, the windows sit at the old level again, and
        ``_UNDO_WINDOWS`` anomalous windows there restore it at once instead of alerting
        until a new adoption."""
        if self._undo == 1.0 or self._undo_t is None or t is None:
            return False
        # the adopted level held for a day (or for two adoption spans of windows, when that
        # is longer: at hourly windows a weekend adopted on Saturday is undone on Monday)
        span = _UNDO_SPANS * self._adopt_windows() * (self._step or 0.0)
        if t - self._undo_t > max(86400.0, span):
            self._undo, self._undo_t, self._undo_spread = 1.0, None, 1.0
            self._undo_empty = ()
            self._undo_since = None
            return False
        undo = math.log(self._undo)
        near = value > 0.0 and expected > 0.0 and (
            abs(math.log(value / expected) + undo) < 0.5 * abs(undo))
        self._undo_run = self._undo_run + 1 if near else 0
        if self._undo_run < _UNDO_WINDOWS:
            return False
        self._undo_adoptions()
        return True

    def _undo_adoptions(self) -> None:
        """Move the profiles back by what the adoptions of the last day moved them."""
        self._rescale(1.0 / self._undo, 0.0, spread=1.0 / self._undo_spread,
                      keep=self._undo_empty)
        self._undo, self._undo_t, self._undo_run, self._undo_spread = 1.0, None, 0, 1.0
        self._undo_empty = ()
        self._undo_since = None
        if self._shift_episode is not None:
            self._shift_episode.clear()
        self._episode_empty = ()
        self._drift = 0.0
        self.adoptions -= 1

    def _spread_exponent(self) -> float:
        """``b`` in ``spread ~ level ** b`` across the hours of the day (1.0 when the
        hours do not tell): the slope of log spread on log level over the warm buckets of
        the hour-of-day profile, kept within [0.5, 1]."""
        daily = next((p for p in self._profiles if p.period == 86400.0), None)
        if daily is None:
            return 1.0
        points = [(math.log(mean), math.log(mad))
                  for mean, mad, count in zip(daily.mean, daily.mad, daily.count, strict=True)
                  if count >= 3 and mean > 0.0 and mad > 0.0]
        if len(points) < _SPREAD_MIN_HOURS:
            return 1.0
        xs = [x for x, _ in points]
        if max(xs) - min(xs) < math.log(_SPREAD_MIN_RANGE):
            return 1.0
        mean_x = sum(xs) / len(xs)
        mean_y = sum(y for _, y in points) / len(points)
        slope = (sum((x - mean_x) * (y - mean_y) for x, y in points)
                 / sum((x - mean_x) ** 2 for x in xs))
        return min(max(slope, _SPREAD_EXPONENT_MIN), 1.0)

    def _empty_buckets(self) -> tuple[tuple[int, ...], ...]:
        """Per profile, the buckets that have learned nothing yet."""
        return tuple(tuple(i for i, count in enumerate(profile.count) if not count)
                     for profile in (*self._profiles, self._local))

    def _rescale(self, ratio: float, delta: float, spread: float | None = None,
                 keep: tuple[tuple[int, ...], ...] = ()) -> float:
        """Move every profile to ``mean * ratio + delta``; returns the factor the spreads
        moved by (``spread``, else the ratio for a rise and ``ratio ** b`` for a fall).

        Buckets in ``keep`` (per profile: those still empty when the episode began) hold
        only what they learned since, at the level being adopted (or, when an adoption is
        undone, what they learned while it stood): they are not moved. On hourly windows
        the first weekend is such an episode: the hour-of-week profile learns its first
        Saturday and Sunday during it, and moving those buckets with the weekday hours
        (down at the adoption, up again when Monday undid it) left the next weekend
        forecast at weekday traffic (bench/incidents ``--window 3600``: most false windows).

        A count's noise does not shrink in proportion to its level: after a halving,
        counting noise is 71 % of what it was, not 50 %, and a band scaled by the ratio
        would flag the noise of the new level for hours. Of the two candidate bands (in
        proportion, or as the series' own hours say) the wider one is taken: the
        proportional one for a rise, ``ratio ** b`` for a fall."""
        if spread is None:
            spread = ratio if ratio >= 1.0 else ratio ** self._spread_exponent()
        for index, profile in enumerate((*self._profiles, self._local)):
            kept = frozenset(keep[index]) if index < len(keep) else frozenset()
            profile.mean = [mean * ratio + delta if count and i not in kept else mean
                            for i, (mean, count) in enumerate(
                                zip(profile.mean, profile.count, strict=True))]
            profile.mad = [mad if i in kept else mad * spread
                           for i, mad in enumerate(profile.mad)]
            profile.err *= spread
            profile.fit_err *= ratio
        return spread

    def _confirm(self, t: float | None = None) -> None:
        """A user confirmed the anomaly at ``t``: keep the old normal while this episode
        lasts, when ``t`` belongs to it. A verdict on an earlier episode holds no later
        one; on a window of the adoptions that can still be undone (those of the last
        day, see :meth:`_old_level_back`), it undoes them and keeps the old normal from
        now on, until 3 windows in a row are back at it."""
        if self._shift_episode is not None and in_episode(self._shift_episode, t):
            self._hold = True
            return
        last_t = getattr(self, "_last_t", None)
        if (t is None or self._undo == 1.0 or self._undo_t is None or last_t is None
                or not (self._undo_since or -math.inf) <= t <= self._undo_t):
            return
        span = _UNDO_SPANS * self._adopt_windows() * (self._step or 0.0)
        if last_t - self._undo_t > max(86400.0, span):
            return  # too long ago: the next window's check forgets it
        self._undo_adoptions()
        self._hold = True
        self.verdict_undos += 1


def in_episode(episode: deque[Any], t: float | None) -> bool:
    """Whether a window at ``t`` belongs to the episode in progress, whose kept windows
    (window start first in each) are ``episode``: any window while one is on when ``t`` is
    unknown, or when the episode is longer than its kept windows and may have begun before
    the first of them.

    >>> from collections import deque
    >>> episode = deque([(600.0, 1.0), (900.0, 1.0)], maxlen=4)
    >>> in_episode(episode, 900.0), in_episode(episode, 300.0), in_episode(deque(), 900.0)
    (True, False, False)
    """
    if not episode:
        return False
    first = episode[0][0]
    return t is None or first is None or len(episode) == episode.maxlen or t >= first


def upper_median(values: list[float]) -> float:
    """The upper median (the middle of an odd count), as adoption has always taken it."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
