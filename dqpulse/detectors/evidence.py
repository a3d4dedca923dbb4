"""Long-view evidence for the adaptive detector: records over weeks, repeats within a day.

A window's tail probability comes from the residuals of the last day or so; two facts from
a longer view change how unusual it really is:

- :class:`RecordRange`: a value above the highest (or below the lowest) of the last
  ``windows`` windows, anomalies included, is something this series has not done in that
  time, rarer than its residual alone says. The range is kept as per-bucket extremes
  (``buckets`` of them, a few hundred bytes), so it spans between ``windows * (1 - 1 /
  buckets)`` and ``windows`` windows.
- :class:`RepeatCounter`: a window no more unusual than ``count`` others of the last
  ``windows`` is how the series behaves today (a burst that recurs hour after hour), not
  news: it is reported just under the threshold.
"""

from __future__ import annotations

import math
from array import array
from collections import deque

from dqpulse.detectors.base import DEFAULT_THRESHOLD

__all__ = ["RUN_GAP", "DailyRepeat", "RecordRange", "RepeatCounter", "RunPeaks"]

#: windows at most this far apart are one run of alerts: an incident resolves after 3
#: healthy windows, so fewer quiet windows than that between two alerts is one incident
RUN_GAP = 3

_DAY_LIMIT = 2**31 - 1  # DailyRepeat keeps days in an array("i")


class RecordRange:
    """Highest and lowest value over the last ``windows`` windows, in ``buckets`` buckets.

    >>> record = RecordRange(windows=40, buckets=4, min_history=10)
    >>> for i in range(40):
    ...     record.add(float(i % 10))
    >>> record.outside(12.0), record.outside(5.0), record.outside(-1.0)
    (1, 0, -1)
    """

    def __init__(self, windows: int = 4032, buckets: int = 28, min_history: int = 288) -> None:
        self.per_bucket = max(windows // buckets, 1)
        self.min_history = min_history
        self.high = array("d", [float("-inf")] * buckets)
        self.low = array("d", [float("inf")] * buckets)
        self.top, self.bottom = float("-inf"), float("inf")  # over every bucket
        self.seen = 0

    def outside(self, value: float, margin: float = 0.0) -> int:
        """+1 above every value of the range by more than ``margin`` of its width, -1 below
        by as much, 0 inside (or history too short).

        >>> record = RecordRange(windows=40, buckets=4, min_history=10)
        >>> for i in range(40):
        ...     record.add(float(i % 10))
        >>> record.outside(9.1), record.outside(9.1, margin=0.02), record.outside(9.3, 0.02)
        (1, 0, 1)
        """
        if self.seen < self.min_history:
            return 0
        slack = margin * (self.top - self.bottom) if margin > 0.0 else 0.0
        if value > self.top + slack:
            return 1
        return -1 if value < self.bottom - slack else 0

    def add(self, value: float) -> None:
        bucket = (self.seen // self.per_bucket) % len(self.high)
        if self.seen % self.per_bucket == 0:  # a new bucket replaces the oldest one
            self.high[bucket], self.low[bucket] = value, value
            self.top, self.bottom = max(self.high), min(self.low)
        else:
            self.high[bucket] = max(self.high[bucket], value)
            self.low[bucket] = min(self.low[bucket], value)
            self.top, self.bottom = max(self.top, value), min(self.bottom, value)
        self.seen += 1


class RepeatCounter:
    """How many of the last ``windows`` windows scored at least as high as a given score
    (only scores from ``floor`` up are kept, at most ``keep`` of them, the highest).

    >>> repeats = RepeatCounter(windows=10, floor=0.5)
    >>> for score in (0.95, 0.2, 0.97, 0.6):
    ...     repeats.add(score)
    >>> repeats.as_high(0.9), repeats.as_high(0.99)
    (2, 0)
    >>> repeats.runs(0.9)  # windows 0 and 2: one run
    1
    >>> for score in (0.1, 0.3, 0.5, 0.96):
    ...     repeats.add(score)
    >>> repeats.runs(0.9), repeats.runs(0.9, gap=5)  # window 7 after 4 quiet ones
    (2, 1)
    """

    #: states saved before the run log: built from their kept scores on their next window
    _alert_runs: deque[int] | None = None
    level = DEFAULT_THRESHOLD

    def __init__(self, windows: int = 288, floor: float = 0.8, keep: int = 16,
                 level: float = DEFAULT_THRESHOLD) -> None:
        self.windows = windows
        self.floor = floor
        self.keep = keep
        self.level = level
        self.recent: deque[tuple[int, float]] = deque()
        # the last window of each run at ``level`` or more: the kept scores are the
        # highest ``keep``, and a few long runs of rising scores evict the earlier runs
        self._alert_runs = deque(maxlen=keep)
        self.seen = 0

    def as_high(self, score: float) -> int:
        oldest = self.seen - self.windows
        return sum(1 for index, kept in self.recent if index >= oldest and kept >= score)

    def runs(self, score: float, gap: int = RUN_GAP, ended: bool = False) -> int:
        """In how many separate runs the last ``windows`` windows scored at least as high
        as ``score``: windows at most ``gap`` apart (fewer than ``gap`` quiet windows between
        them: one incident, which resolves after 3 healthy windows) are one run. With
        ``ended``, a run that the next window would continue is not counted.

        >>> repeats = RepeatCounter(windows=50, floor=0.5)
        >>> for score in (0.95, 0.1, 0.1, 0.1, 0.1, 0.96, 0.97):
        ...     repeats.add(score)
        >>> repeats.runs(0.9), repeats.runs(0.9, ended=True)
        (2, 1)
        """
        oldest = self.seen - self.windows
        count, last = 0, None
        for index, kept in self.recent:
            if index >= oldest and kept >= score:
                if last is None or index - last > gap:
                    count += 1
                last = index
        if ended and last is not None and self.seen - last <= gap:
            count -= 1
        return count

    def alert_runs(self, ended: bool = False) -> int:
        """In how many separate runs the last ``windows`` windows scored ``level`` or more
        (as :meth:`runs` at ``level``, with its ``gap`` of :data:`RUN_GAP`, but every run
        counts, not only those among the ``keep`` highest scores, at most ``keep`` of them).

        >>> repeats = RepeatCounter(windows=100, floor=0.5, keep=4)
        >>> for score in (0.95, 0.1, 0.1, 0.1, 0.1) + (0.96, 0.97) + (0.1,) * 4 + (0.98, 0.99):
        ...     repeats.add(score)
        >>> repeats.runs(0.9), repeats.alert_runs(), repeats.alert_runs(ended=True)
        (2, 3, 2)
        """
        runs = self._alert_runs
        if runs is None:  # a state saved before the log, not added to since
            return self.runs(self.level, ended=ended)
        oldest = self.seen - self.windows
        count = sum(1 for last in runs if last >= oldest)
        if ended and count and self.seen - runs[-1] <= RUN_GAP:
            count -= 1
        return count

    def forget_since(self, index: int, last: float = math.inf) -> None:
        """Drop what windows from ``index`` on (up to ``last``, inclusive) left: a
        confirmed anomaly is no repeat to hold the next one back with.

        >>> repeats = RepeatCounter(windows=10, floor=0.5)
        >>> for score in (0.95, 0.2, 0.2, 0.2, 0.2, 0.97, 0.96):
        ...     repeats.add(score)
        >>> repeats.as_high(0.9), repeats.alert_runs()
        (3, 2)
        >>> repeats.forget_since(5)
        >>> repeats.as_high(0.9), repeats.alert_runs()
        (1, 1)
        >>> repeats.forget_since(0, last=0)  # an episode that ended before
        >>> repeats.as_high(0.9), repeats.alert_runs()
        (0, 0)
        """
        self.recent = deque(item for item in self.recent if not index <= item[0] <= last)
        if self._alert_runs is not None:
            self._alert_runs = deque((end for end in self._alert_runs
                                      if not index <= end <= last), maxlen=self.keep)

    @staticmethod
    def _log_run(runs: deque[int], index: int) -> None:
        if runs and index - runs[-1] <= RUN_GAP:
            runs[-1] = index
        else:
            runs.append(index)

    def add(self, score: float) -> None:
        runs = self._alert_runs
        if runs is None:  # a state saved before the log: its kept scores' runs
            runs = self._alert_runs = deque(maxlen=self.keep)
            for index, kept in self.recent:
                if kept >= self.level:
                    self._log_run(runs, index)
        if score >= self.level:
            self._log_run(runs, self.seen)
        recent = self.recent
        while recent and recent[0][0] < self.seen - self.windows:
            recent.popleft()
        if score >= self.floor:
            recent.append((self.seen, score))
            if len(recent) > self.keep:
                lowest = min(range(len(recent)), key=lambda i: recent[i][1])
                del recent[lowest]
        self.seen += 1


class RunPeaks:
    """Peaks of the separate runs of windows scoring ``level`` or more (windows at most
    :data:`RUN_GAP` apart are one run) over the last ``windows`` windows, the ``keep``
    highest: how many alerts at least as unusual as a given score the series has raised in
    that time. A run counts once it has ended (:data:`RUN_GAP` quiet windows after it).

    >>> peaks = RunPeaks(windows=100, keep=4)
    >>> for score in (0.95, 0.97, 0.1, 0.1, 0.1, 0.1) + (0.99, 0.1, 0.1, 0.1, 0.1) + (0.92,):
    ...     peaks.add(score)
    >>> peaks.as_high(0.96), peaks.as_high(0.9), peaks.as_high(0.999)
    (2, 2, 0)
    """

    def __init__(self, windows: int = 4032, level: float = DEFAULT_THRESHOLD,
                 keep: int = 16) -> None:
        self.windows = windows
        self.level = level
        self.keep = keep
        self.peaks: list[tuple[int, float]] = []  # (last window, peak) of ended runs
        self._run: tuple[int, float] | None = None  # (last window, peak) of the open run
        self.seen = 0

    def as_high(self, score: float) -> int:
        oldest = self.seen - self.windows
        return sum(1 for last, peak in self.peaks if last >= oldest and peak >= score)

    def add(self, score: float) -> None:
        run = self._run
        if run is not None and self.seen - run[0] > RUN_GAP:
            self._close(run)
            run = None
        if score >= self.level:
            self._run = (self.seen, score if run is None else max(run[1], score))
        self.seen += 1

    def forget_since(self, index: int, last: float = math.inf) -> None:
        """Drop the runs that ended at a window from ``index`` on (up to ``last``,
        inclusive): the runs that windows from ``index`` on took part in, or of an episode
        that ended before.

        >>> peaks = RunPeaks(windows=100, keep=4)
        >>> for score in (0.95, 0.1, 0.1, 0.1, 0.1, 0.97, 0.1, 0.1, 0.1, 0.1, 0.1):
        ...     peaks.add(score)
        >>> peaks.forget_since(5)
        >>> peaks.as_high(0.9)
        1
        >>> peaks.forget_since(0, last=0)
        >>> peaks.as_high(0.9)
        0
        """
        if self._run is not None and index <= self._run[0] <= last:
            self._run = None
        self.peaks = [item for item in self.peaks if not index <= item[0] <= last]

    def _close(self, run: tuple[int, float]) -> None:
        oldest = self.seen - self.windows
        peaks = [item for item in self.peaks if item[0] >= oldest]
        peaks.append(run)
        if len(peaks) > self.keep:
            peaks.remove(min(peaks, key=lambda item: item[1]))
        self.peaks = peaks
        self._run = None


class DailyRepeat:
    """The highest score of each ``bucket_seconds`` of the day, today's and the two days
    before: what this time of day scored yesterday (the bucket and its two neighbours), and
    whether it alerted at about this time on each of the last days (a daily job whose start
    wanders by an hour).

    >>> daily = DailyRepeat(bucket_seconds=900.0)
    >>> daily.add(86400.0 + 3600.0, 0.95)
    >>> round(daily.yesterday(2 * 86400.0 + 3600.0 + 600.0), 3), daily.yesterday(2 * 86400.0)
    (0.95, 0.0)
    >>> daily.add(2 * 86400.0 + 3600.0 + 2700.0, 0.93)  # 45 minutes later the next day
    >>> round(daily.each_day(3 * 86400.0 + 3600.0, days=2, seconds=3600.0), 3)
    0.93
    >>> daily.each_day(3 * 86400.0 + 3600.0, days=2, seconds=900.0)  # 45 minutes is too far
    0.0
    """

    def __init__(self, bucket_seconds: float = 900.0) -> None:
        self.bucket_seconds = bucket_seconds
        buckets = max(int(86400.0 // bucket_seconds), 1)
        self.today = array("H", bytes(2 * buckets))
        self.before = array("H", bytes(2 * buckets))
        self.before2 = array("H", bytes(2 * buckets))
        self.day = array("i", [-2] * buckets)  # the day whose highest score ``today`` holds

    def __setstate__(self, state: dict[str, object]) -> None:
        # states saved before the third day was kept start it empty
        self.__dict__.update(state)
        if "before2" not in state:
            self.before2 = array("H", bytes(2 * len(self.day)))

    def _slot(self, t: float) -> tuple[int, int]:
        # the day is kept as a 32-bit int: clamped (a clock 6 million years off still runs)
        day = min(max(int(t // 86400.0), -_DAY_LIMIT), _DAY_LIMIT)
        return day, int((t % 86400.0) // self.bucket_seconds) % len(self.day)

    def _on(self, day: int, bucket: int) -> int:
        """The highest score (as stored) of ``bucket`` on ``day``, 0 when not kept."""
        kept = self.day[bucket]
        if kept == day:
            return self.today[bucket]
        if kept == day + 1:
            return self.before[bucket]
        return self.before2[bucket] if kept == day + 2 else 0

    def _highest(self, t: float, spread: int) -> int:
        """The highest stored score of ``t``'s bucket and ``spread`` buckets either side."""
        day, bucket = self._slot(t)
        highest, buckets = 0, len(self.day)
        for offset in range(-spread, spread + 1):
            # a neighbour across midnight belongs to the day before or after
            shifted = bucket + offset
            highest = max(highest, self._on(day + shifted // buckets, shifted % buckets))
        return highest

    def yesterday(self, t: float) -> float:
        return self._highest(t - 86400.0, 1) / 65535.0

    def each_day(self, t: float, days: int = 2, seconds: float = 3600.0) -> float:
        """The lowest, over each of the last ``days`` days (at most 2), of the highest
        score within ``seconds`` of this time of day: high when a burst came at about this
        time on every one of them."""
        spread = int(seconds // self.bucket_seconds)
        lowest = 65535
        for back in range(1, min(days, 2) + 1):
            lowest = min(lowest, self._highest(t - back * 86400.0, spread))
        return lowest / 65535.0 if days >= 1 else 0.0

    def forget(self, t: float) -> None:
        """Clear what ``t``'s bucket holds for ``t``'s day (a confirmed anomaly is no
        daily habit); the bucket's other windows that day go with it.

        >>> daily = DailyRepeat(bucket_seconds=900.0)
        >>> daily.add(3600.0, 0.95)
        >>> daily.forget(3600.0 + 300.0)
        >>> daily.yesterday(86400.0 + 3600.0)
        0.0
        """
        day, bucket = self._slot(t)
        kept = self.day[bucket]
        if kept == day:
            self.today[bucket] = 0
        elif kept == day + 1:
            self.before[bucket] = 0
        elif kept == day + 2:
            self.before2[bucket] = 0

    def add(self, t: float, score: float) -> None:
        day, bucket = self._slot(t)
        kept = self.day[bucket]
        if kept != day:
            self.before2[bucket] = (self.before[bucket] if kept == day - 1
                                    else self.today[bucket] if kept == day - 2 else 0)
            self.before[bucket] = self.today[bucket] if kept == day - 1 else 0
            self.today[bucket], self.day[bucket] = 0, day
        stored = int(min(max(score, 0.0), 1.0) * 65535.0)
        if stored > self.today[bucket]:
            self.today[bucket] = stored
