"""Regime changes for the adaptive detector: anomaly episodes, adoption of a held shift.

A mixin of :class:`dqpulse.detectors.adaptive.AdaptiveDetector`, kept apart so that the
detector's module holds forecasting and scoring and this one the episode bookkeeping.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from dqpulse.detectors.base import Verdict, finite
from dqpulse.detectors.calibration import THRESHOLD_LOG_P, TailCalibrator, log_p_to_score
from dqpulse.detectors.evidence import DailyRepeat, RecordRange, RepeatCounter, RunPeaks
from dqpulse.detectors.forecasters import Forecaster, ew_alpha
from dqpulse.detectors.seasonal_regimes import SILENT_RATIO, in_episode
from dqpulse.detectors.seasonal_regimes import upper_median as _median

__all__ = ["ENDED_KEPT", "LONE_GAP", "RATIO_BETTER", "UNDO_SECONDS", "UNDO_WINDOWS",
           "Episode", "RegimeAdoption"]

#: how long after an adoption the level before it may come back and undo it
UNDO_SECONDS = 86400.0
#: windows in a row back at the level before an adoption that undo it
UNDO_WINDOWS = 3
#: a held ratio moves the forecasters only when the windows spread around it by at most
#: this share of their spread around the median difference: clearly better, not a tie (a
#: level forecaster explains both equally, up to rounding)
RATIO_BETTER = 0.9

#: (window start, value, anomalous, z) of the windows of the current anomaly episode
Episode = deque[tuple[float | None, float, bool, float]]

#: episodes that ended (or were adopted) kept for a ``confirmed`` verdict that comes after
#: them: an incident is often judged after it resolved
ENDED_KEPT = 4


#: how far under the threshold a lone marginal window reports (a repeat: 1e-4)
LONE_GAP = 2e-4


class RegimeAdoption:
    """Calibration history, episode bookkeeping and regime adoption; the detector provides
    the forecasts and scales."""

    adopt_after: int | None
    adoptions_undone = 0  # adoptions taken back because the old level came back
    verdict_undos = 0  # adoptions taken back by a ``confirmed`` verdict on their windows
    spike_memory: float
    select_alpha: float
    n_learned: int
    _episode: Episode
    _forecasters: list[Forecaster]
    _fit_count: list[int]
    _fit_error: list[float]
    _noise: list[float]
    _noise_count: list[int]
    error_alpha: float
    lower: float | None
    upper: float | None
    _hold: bool
    _last_value: float | None
    _version: int
    _mutations: int
    persistence: float
    _ewma: float
    calibration_stride = 1  # states saved before the param: every normal window
    _calibration_seen = 0  # normal windows offered to the point calibration (the stride's count)
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

    def _forecasts(self, t: float | None) -> list[float | None]:
        raise NotImplementedError

    def _z(self, value: float, t: float | None) -> tuple[float, float, float]:
        raise NotImplementedError

    def _learn(self, value: float, t: float | None, z: float, scale: float,
               weight: float = 1.0) -> None:
        raise NotImplementedError

    # ---- what a window reports: long-view evidence and alert hysteresis ------------------
    hold: int
    hold_from: float
    threshold: float
    side: str
    record_boost: float
    record_margin: float = 0.0  # what states saved before it did
    report_share: float
    repeat_count: int
    repeat_runs: int = 1  # what states saved before it did
    burst_runs: int = 0  # what states saved before it did: off
    _records: RecordRange | None
    _repeats: RepeatCounter | None
    _run_held = -1  # windows held up in the current alert run; -1: no run
    confirm_below = 0.0  # states saved before the param: off
    _waiting = False  # the window before was a lone marginal one, held back
    # old saved states predate the daily repeat: built on their first window once set
    daily_repeat_seconds: float = 0.0
    _daily: DailyRepeat | None = None
    daily_job_days: int = 0
    daily_job_seconds: float = 3600.0
    daily_job_margin: float = 0.0  # states saved before it: record_margin alone
    sustain_windows: int = 0  # what states saved before it did
    record_windows: int
    long_repeat_runs: int = 0  # states saved before it: off until the scorer sets it
    _peaks: RunPeaks | None = None  # built on the first window once set

    def _evidence(self, log_p: float, value: float,
                  t: float | None = None) -> tuple[float, float, float]:
        """(score with the long view, after the repeat cap, reported after the hold).

        The window's tail probability is first multiplied by ``report_share``, unless it
        is an anomaly by itself and the ``sustain_windows`` windows before it were too (by
        their own tail probability, as learning counts them): a change held that long is
        no marginal window. A value
        outside the range of the last ``record_windows`` (on an alerting side) has it
        divided by ``record_boost``. A window no more unusual than ``repeat_count`` others
        of the last ``repeat_windows``, in ``repeat_runs`` separate runs or more, one that
        the day before saw (:meth:`_daily_repeat`), one like the last bursts
        (:meth:`_burst_pattern`) or one no more unusual than ``long_repeat_runs`` alerts of
        the last ``record_windows`` (:meth:`_long_repeat`) does not open an alert (it reports
        just under the threshold) unless a user confirmed the episode. While an alert run
        is on, a window scoring ``hold_from`` or more keeps it on for up to ``hold``
        windows (one alert for a shift hovering about the threshold). A window that would
        open an alert with a score under ``confirm_below`` reports just under the threshold
        (``LONE_GAP`` under it) and the alert opens on the next window if that one scores
        ``hold_from`` or more: a lone marginal window alerts with the window after it, or
        not at all. Learning sees none of this: it follows the residual's own score."""
        if log_p < 0.0 and not (log_p_to_score(log_p) >= self.threshold
                                and self._sustained()):
            log_p = min(log_p + math.log(self.report_share), 0.0)
        if log_p < 0.0 and self._beyond_range(value):
            log_p -= math.log(self.record_boost)
        score = capped = log_p_to_score(log_p)
        repeats = self._repeats
        opens = score >= self.threshold and self._run_held < 0 and not self._hold
        # after a lone marginal window (judged no repeat itself) the run goes on: as if
        # it had opened the alert, the window after it is not judged again
        repeated = opens and not self._waiting and (
            (repeats is not None and repeats.as_high(score) >= self.repeat_count
             and (self.repeat_runs <= 1 or repeats.runs(score) >= self.repeat_runs))
            or self._daily_repeat(score, value, t) or self._burst_pattern(value)
            or self._long_repeat(score))
        if repeated:
            capped = self.threshold - 1e-4
        elif opens and score < self.confirm_below and not self._waiting:
            capped = self.threshold - LONE_GAP  # a lone marginal window: wait for the next
        reported = capped
        if self._follows_lone(capped):
            reported = self.threshold  # the window after a marginal one is still raised
        if (capped < self.threshold and 0 <= self._run_held < self.hold
                and capped >= self.hold_from):
            reported = self.threshold
        return score, capped, reported

    def _follows_lone(self, capped: float) -> bool:
        """Whether a window opens the alert that the lone marginal window before it held
        back: it scores at least ``hold_from`` and no alert is on."""
        return self._waiting and self._run_held < 0 and self.hold_from <= capped < self.threshold

    def _burst_pattern(self, value: float) -> bool:
        """Whether the last ``repeat_windows`` alerted in at least ``burst_runs`` separate
        runs and ``value`` is inside the range of the last ``record_windows`` (those bursts
        included): bursts that come that often are how the series behaves, however far
        out each one scores."""
        repeats, records = self._repeats, self._records
        if self.burst_runs <= 0 or repeats is None or records is None \
                or records.seen < records.min_history \
                or records.outside(value, self.record_margin) != 0:
            return False
        return repeats.alert_runs(ended=True) >= self.burst_runs

    def _long_repeat(self, score: float) -> bool:
        """Whether at least ``long_repeat_runs`` separate alerts of the last
        ``record_windows`` peaked at ``score`` or higher: about one a day for two weeks
        is how the series behaves."""
        peaks = self._peaks
        return (peaks is not None and self.long_repeat_runs > 0
                and peaks.as_high(score) >= self.long_repeat_runs)

    def _beyond_range(self, value: float) -> bool:
        """Whether ``value`` is outside the range of the last ``record_windows``, on a side
        that alerts (and the record boost is on)."""
        records = self._records
        if records is None or self.record_boost <= 1.0:
            return False
        side = records.outside(value, self.record_margin)
        return (side > 0 and self.side != "down") or (side < 0 and self.side != "up")

    def _sustained(self) -> bool:
        """Whether the last ``sustain_windows`` windows were all anomalous."""
        need = self.sustain_windows
        if need <= 0 or len(self._episode) < need:
            return False
        return all(bad for _, _, bad, _ in itertools.islice(
            reversed(self._episode), need))

    def _daily_repeat(self, score: float, value: float, t: float | None) -> bool:
        """A window no more unusual than the same time yesterday, or one that comes where
        each of the last ``daily_job_days`` days alerted within ``daily_job_seconds`` of
        this time of day (a daily job whose start moves; on the series' second day, the
        first day is all there is); neither when its value is beyond the range of the last
        ``record_windows``, the earlier days' included, by more than ``daily_job_margin``
        (or ``record_margin``, the larger) of the range's width: a job a few % higher than
        before is the job, one far higher is news.

        The second-day case is for the first day's daily steps: a level forecaster
        forecasts the series until a daily profile has seen two days, and the first
        day's step has left the calibration history (256 five-minute windows) by the
        second's. On NAB's series restarted at rows 0, 1,000, 2,000 and 3,000 (2,200
        rows each) it removed 33 of 241 false episodes and no detection; the series in
        full are unchanged (their second day is in NAB's probation)."""
        daily = self._daily
        records = self._records
        if daily is None or t is None or (
                records is not None and records.outside(
                    value, max(self.record_margin, self.daily_job_margin)) != 0):
            return False
        if daily.yesterday(t) >= score:
            return True
        if self.daily_job_days <= 0:
            return False
        days = 1 if self._second_day(t) else self.daily_job_days
        return daily.each_day(t, days, self.daily_job_seconds) >= self.threshold

    def _second_day(self, t: float) -> bool:
        """Whether ``t`` is on the series' second day, before a daily profile is warm (the
        detector knows the series' age)."""
        return False

    def _observe(self, value: float, evidence: tuple[float, float, float],
                 t: float | None = None) -> None:
        """Move the long view and the alert run past a window (every window, anomalies
        included)."""
        score, capped, reported = evidence
        self._waiting = capped == self.threshold - LONE_GAP and reported < self.threshold
        if self._hold:
            # a confirmed episode is no repeat, no daily habit and no past alert to hold
            # the next one like it back with: its windows leave 0 in those memories
            score = reported = 0.0
        if self._daily is None and self.daily_repeat_seconds > 0:
            self._daily = DailyRepeat(self.daily_repeat_seconds)
        if self._daily is not None and t is not None:
            self._daily.add(t, score)
        if self._records is not None:
            self._records.add(value)
        if self._repeats is not None:
            self._repeats.add(score)
        if self._peaks is None and self.long_repeat_runs > 0 and self.record_windows > 0:
            self._peaks = RunPeaks(self.record_windows)
        if self._peaks is not None:
            self._peaks.add(reported)
        if reported < self.threshold:
            self._run_held = -1
        elif capped < self.threshold:
            self._run_held += 1
        else:
            self._run_held = 0

    taper_from: float

    def _learning_weight(self, score: float) -> float:
        """1 up to ``taper_from``, then falling linearly to 0 at the threshold."""
        start = self.taper_from
        if score <= start or start >= self.threshold:
            return 1.0
        return max(0.0, (self.threshold - score) / (self.threshold - start))

    def _boundary(self, z: float) -> float:
        """The point's alert boundary on ``z``'s side, as the history of normal windows
        alone sets it (the bursts remembered by ``spike_memory`` left out: a boundary
        that they raised would let the next burst in higher, and so on)."""
        if z > 0.0:
            return self._up.unmarked_deviation_at(THRESHOLD_LOG_P)
        return -self._down.unmarked_deviation_at(THRESHOLD_LOG_P)

    def _calibrate(self, z: float, drift: bool = True, history: bool = True,
                   seasonal_z: float | None = None, remembered: bool = False) -> None:
        """Add ``z`` to the calibration history (``history``) and move the persistence EWMA
        (``drift``). A doubtful window (scoring above ``taper_from``) moves the EWMA, so a
        held change builds up there, but stays out of the history it is judged against."""
        if history and (remembered or self._takes_calibration()):
            self._up.add(max(z, 0.0), marked=remembered)
            self._down.add(max(-z, 0.0), marked=remembered)
        # the persistence EWMA follows normal windows only: an anomaly alerts by itself
        if drift and self.persistence > 0.0:
            ewma = self._drift(z if seasonal_z is None else seasonal_z)
            if history:
                self._drift_up.add(max(ewma, 0.0))
                self._drift_down.add(max(-ewma, 0.0))
            self._ewma = ewma

    def _takes_calibration(self) -> bool:
        """Whether this normal window enters the point calibration history: every one
        until the history is full, then every ``calibration_stride``-th (the deviations of
        an ended burst always enter). A young series fills it window by window: until it
        holds ``min_count`` values its tail is the cautious prior (a z of 15 scores 0.79),
        which a stride from the start would have kept several times as long."""
        stride = self.calibration_stride
        if stride <= 1 or len(self._up) < self._up.size:
            return True
        self._calibration_seen = seen = self._calibration_seen + 1
        return seen % stride == 0

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
        marks = (self._up._added, self._down._added)
        if self.spike_memory > 0.0 and not self._hold:  # a confirmed burst is no habit
            # a burst that came and went is part of how this series behaves: the next one
            # like it is less surprising (capped, so one huge burst does not mask the rest)
            for _, _, bad, z in points:
                if bad:
                    bound = self.spike_memory * self._boundary(z)
                    self._calibrate(max(min(z, bound), -bound) if z > 0 else
                                    max(z, bound), drift=False, remembered=True)
        if not self._hold:  # a confirmed episode left nothing to take back
            self._log_ended(points, marks, adopted=False)
        self._episode.clear()
        self._hold = False

    #: the last ``ENDED_KEPT`` episodes that ended or were adopted, for a verdict that
    #: comes after them: (first and last window start, index of the first window in the
    #: repeat count and in the past alerts' peaks (-1: none), windows, ordinals of the
    #: calibration histories (up, down) before the bursts remembered at its end, how many
    #: were, adopted?); empty in states saved before it
    _ended: tuple[tuple[Any, ...], ...] = ()
    #: the last adoption, for a ``confirmed`` verdict on its windows: (last window start,
    #: the move of each forecaster, their noise before); ``None`` for none
    _confirmable: tuple[Any, ...] | None = None

    def _log_ended(self, points: list[tuple[float | None, float, bool, float]],
                   marks: tuple[int, int], adopted: bool) -> None:
        """Keep where an episode's windows went in the memories, so that a verdict that
        comes after it can take them back (:meth:`_confirm_ended`)."""
        times = [t for t, *_ in points if t is not None]
        if not times:
            return  # a verdict names its windows by their start
        windows = len(points)
        repeats = max(self._repeats.seen - windows, 0) if self._repeats is not None else -1
        # (a memory built during the episode saw fewer windows: its part of it)
        peaks = max(self._peaks.seen - windows, 0) if self._peaks is not None else -1
        remembered = self._up._added - marks[0]
        entry = (min(times), max(times), repeats, peaks, windows, marks[0], marks[1],
                 remembered, adopted)
        self._ended = (*self._ended, entry)[-ENDED_KEPT:]
        confirmable = self._confirmable
        if confirmable is not None and not any(
                e[8] and e[1] == confirmable[0] for e in self._ended):
            self._confirmable = None  # its episode left the log

    def _confirm_ended(self, t: float) -> None:
        """A user confirmed a window of an episode that is over (its incident resolved, or
        the shift was adopted): take the episode's windows back out of the memories that
        hold a window like them back (the repeat count, the past alerts' peaks, the same
        time of day, the bursts remembered by the calibration), so the next one like it is
        news; and when the episode was adopted as the new normal (the last adoption),
        undo the adoption and hold the old normal: the series alerts until the level
        before it is back."""
        entry = next((e for e in self._ended if e[0] <= t <= e[1]), None)
        if entry is None:
            return
        first, last, repeats, peaks, windows, up_from, down_from, remembered, adopted = entry
        self._ended = tuple(e for e in self._ended if e is not entry)
        if self._repeats is not None and repeats != -1:
            self._repeats.forget_since(repeats, repeats + windows - 1)
        if self._peaks is not None and peaks != -1:  # -1: built after the episode
            self._peaks.forget_since(peaks, peaks + windows - 1)
        if self._daily is not None:
            daily = self._daily
            start = max(first, last - 3 * 86400.0)  # it keeps three days
            for k in range(int((last - start) // daily.bucket_seconds) + 1):
                daily.forget(start + k * daily.bucket_seconds)
            daily.forget(last)
        if remembered:
            self._up.forget_marked(up_from + 1, remembered)
            self._down.forget_marked(down_from + 1, remembered)
        confirmable = self._confirmable
        if not adopted or confirmable is None or confirmable[0] != last \
                or len(confirmable[1]) != len(self._forecasters):
            return
        # an older adoption's own undo record stays (this one moved by a difference)
        older = self._adopted if self._adopted is not None and self._adopted[0] != last \
            else None
        self._take_back(confirmable[1], confirmable[2])
        self._adopted = older
        self._confirmable = None
        self._hold = True  # the old normal, until 3 windows in a row are back at it
        self.verdict_undos += 1

    def _take_back(self, moves: list[tuple[bool, float]], noise: list[float]) -> None:
        """Move every forecaster back by exactly what an adoption moved it, restore the
        errors it had, and forget the adoption (no episode is on at the old level)."""
        for forecaster, (by_ratio, amount) in zip(self._forecasters, moves, strict=True):
            _move(forecaster, by_ratio, 1.0 / amount if by_ratio else -amount)
        self._noise[:] = noise
        self._episode.clear()
        self._adopted = None
        self._version += 1

    #: the last adoption while it may still be undone: [window start, windows since, the
    #: move of each forecaster (by ratio?, ratio or difference), its noise before, windows
    #: back at the old level in a row]; ``None`` for none (and in states saved before it)
    _adopted: list[Any] | None = None

    def _maybe_undo(self, value: float, t: float | None) -> bool:
        """Undo the last adoption that rescaled a profile when the level before it is back
        (whether it did).

        A day at half the traffic (a holiday) is held long enough to be adopted; the next
        morning the series is back at the old level. The time-of-day memory explains those
        windows, so they are no anomaly episode to adopt back, and the forecasters, moved
        by half, learned their way back at their season step (weeks for an hour-of-week
        profile) while their one-step errors grew to the size of the move: the series
        alerted on nothing for weeks. So for a day after an adoption (or ``2 x
        adopt_after`` windows without timestamps), ``UNDO_WINDOWS`` windows in a row at
        least twice as close to the forecast before it as to the forecast after it move
        every forecaster back by exactly what it moved and restore the errors it had.
        Adoptions that only shifted forecasters by a difference stay (a level that jumped
        and fell back is a new episode, as before)."""
        adopted = self._adopted
        if adopted is None:
            return False
        since, moves, noise, back = adopted[1] + 1, adopted[2], adopted[3], adopted[4]
        if ((t is not None and adopted[0] is not None and t - adopted[0] > UNDO_SECONDS)
                or (t is None and since > 2 * (self.adopt_after or 0))):
            self._adopted = None
            return False
        adopted[1] = since
        chosen = self._choose(t)
        if chosen is None:
            return False
        index, forecast = chosen
        forecast = self._clip(forecast)
        by_ratio, amount = moves[index]
        before = forecast / amount if by_ratio else forecast - amount
        back = back + 1 if 2.0 * abs(value - before) < abs(value - forecast) else 0
        adopted[4] = back
        if back < UNDO_WINDOWS:
            return False
        self._take_back(moves, noise)
        self.adoptions_undone += 1
        return True

    def _maybe_adopt(self) -> None:
        """Adopt a shift held for ``adopt_after`` windows (at least half of them anomalous):
        each forecaster moves to the held level, and its scale grows to the windows' spread
        around it.

        A forecaster moves by the median ratio of value to forecast when the series is
        positive (every value of the windows at least 0, every forecast above 0) and the
        windows spread clearly less around the ratio than around the median difference
        (``RATIO_BETTER``): a daily profile scaled keeps its shape. Moved by the
        difference instead, a day at half the traffic shifted the night hours of a daily
        profile below zero and blew its error up, and the series alerted on nothing for
        weeks. Otherwise (a level forecaster, a flat level that jumped, a series that goes
        negative, a ratio near silence) it moves by the median difference, as before. An
        adoption that rescaled a profile may be undone for a day (:meth:`_maybe_undo`)."""
        if self.adopt_after is None or self._hold:
            return
        recent = list(self._episode)[-self.adopt_after:]
        if len(recent) < self.adopt_after:
            return
        if sum(1 for _, _, bad, _ in recent if bad) * 2 < len(recent):
            return
        self._settle(recent)
        chosen: tuple[bool, float] | None = None  # (a ratio?, its ratio or difference)
        noise_before = list(self._noise)
        moves: list[tuple[bool, float]] = []
        # every forecaster's pairs before any moves: one that forecasts from another's
        # profile (a levelled weekly profile) moves with it, and its move is measured from
        # where it stood
        held = [[(value, self._clip(forecast)) for t, value, *_ in recent
                 if (forecast := forecaster.predict(t)) is not None]
                for forecaster in self._forecasters]
        for index, (forecaster, pairs) in enumerate(zip(self._forecasters, held, strict=True)):
            if not pairs:
                # a profile still warming up moves with the level that did forecast, so it
                # does not come alive with the old level in half of its buckets
                moves.append(chosen if chosen is not None else (False, 0.0))
                if chosen is not None:
                    _move(forecaster, *chosen)
                continue
            move, spread = _held_move(pairs)
            if chosen is None:
                chosen = move
            _move(forecaster, *move)
            moves.append(move)
            # the new spread as a mean absolute error (for Gaussian noise MAD ~ 0.85 of it)
            self._noise[index] = max(self._noise[index], spread * 1.18)
        for t, value, *_ in recent:
            for forecaster in self._forecasters:
                forecaster.learn(t, value)
        self._last_value = recent[-1][1]
        self._confirmable = (recent[-1][0], moves, noise_before)
        self._log_ended(list(self._episode), (self._up._added, self._down._added),
                        adopted=True)
        self._episode.clear()
        if any(by_ratio for by_ratio, _ in moves):
            self._adopted = [recent[-1][0], 0, moves, noise_before, 0]
        self._version += 1
        self.n_learned += len(recent)

    def _track_errors(self, value: float, t: float | None, scale: float, learned: bool,
                      weight: float = 1.0, shrink: float = 1.0) -> None:
        """Every forecaster's one-step error (its choice) and noise (the scale) learn the
        window; ``shrink`` > 1 divides its errors, ``scale`` included: a window whose own
        sampling error widened its scale by that factor teaches as a typical one."""
        if not learned:
            return  # anomalies are not learned, not even into the model choice (see _settle)
        if shrink != 1.0:
            scale /= shrink
        # one wild window moves the errors by at most a few scales
        cap = 6.0 * scale if scale > 0.0 else math.inf
        lower, upper = self.lower, self.upper
        select_alpha, error_alpha = self.select_alpha, self.error_alpha
        fit_count, fit_error = self._fit_count, self._fit_error
        noise_count, noise = self._noise_count, self._noise
        for index, forecast in enumerate(self._forecasts(t)):
            if forecast is None:
                continue
            # _clip, written out (five forecasters a window)
            if lower is not None and forecast < lower:
                forecast = lower
            if upper is not None and forecast > upper:
                forecast = upper
            error = abs(value - forecast) / shrink
            if error > cap:
                error = cap
            count = fit_count[index] = fit_count[index] + 1
            alpha = 1.0 / count if count * select_alpha < 1.0 else select_alpha
            fit_error[index] += alpha * (error - fit_error[index])
            count = noise_count[index] = noise_count[index] + 1
            alpha = 1.0 / count if count * error_alpha < 1.0 else error_alpha
            noise[index] += weight * alpha * (error - noise[index])

    # ---- the feedback path of the base class -----------------------------------------
    def feedback(self, x: Mapping[str, Any], verdict: Verdict) -> None:
        """False positive: learn ``x`` and lower the sensitivity; confirmed: raise it again
        and, when ``x`` belongs to the episode in progress, keep the current normal (the
        shift is not adopted while it lasts). A verdict on an episode that is over holds
        no later episode (held until the next episode ended, a permanent shift after it
        would never be adopted and would alert on every window): it takes that episode
        out of the repeat memories and, when it was the last adoption, undoes the adoption
        and holds the old normal from then on (:meth:`_confirm_ended`)."""
        self._mutations += 1  # the window's memo is stale
        t = finite(x.get("t"))
        if verdict == "confirmed" and in_episode(self._episode, t):
            if not self._hold:
                self._forget_episode()
            self._hold = True
        elif verdict == "confirmed" and t is not None:
            self._confirm_ended(t)
        super().feedback(x, verdict)  # type: ignore[misc]

    def _forget_episode(self) -> None:
        """Take the episode's windows so far out of the memories that hold a window like
        the recent ones back (the repeat count, the past alerts' peaks, the daily repeat):
        a user confirmed it, so the next one like it is news, not how the series behaves.
        Its later windows leave nothing there (:meth:`_observe`), and it does not enter the
        calibration history as a remembered burst when it ends (:meth:`_end_episode`)."""
        windows = len(self._episode)
        if self._repeats is not None:
            self._repeats.forget_since(self._repeats.seen - windows)
        if self._peaks is not None:
            self._peaks.forget_since(self._peaks.seen - windows)
        if self._daily is not None:
            for t, *_ in self._episode:
                if t is not None:
                    self._daily.forget(t)

    def _update(self, value: float, t: float | None) -> None:
        z, _, scale = self._z(value, t)
        self._learn(value, t, z, scale)
        self.n_learned -= 1  # the base class counts it

    def _forget(self, value: float, t: float | None) -> bool:
        return False  # exponentially weighted state: a learned window cannot be taken back



def _held_ratio(pairs: list[tuple[float, float]]) -> float | None:
    """The median ratio of value to forecast over (value, forecast) pairs of a positive
    series; ``None`` when a value is negative, a forecast not positive, or the ratio near
    silence (``SILENT_RATIO``, as the seasonal detector's) or beyond its inverse: a
    near-silent level has no shape to keep."""
    if not all(value >= 0.0 and forecast > 0.0 for value, forecast in pairs):
        return None
    ratio = math.exp(_median([math.log(max(value / forecast, SILENT_RATIO))
                              for value, forecast in pairs]))
    if ratio <= SILENT_RATIO * (1.0 + 1e-9) or ratio >= 1.0 / SILENT_RATIO:
        return None
    return ratio


def _spread(residuals: list[float]) -> float:
    """Median absolute deviation of ``residuals`` from their median."""
    centre = _median(residuals)
    return _median([abs(r - centre) for r in residuals])


def _held_move(pairs: list[tuple[float, float]]) -> tuple[tuple[bool, float], float]:
    """((by ratio?, ratio or difference), spread of the windows around it) of the move
    that explains held (value, forecast) pairs best: the median ratio when the series is
    positive and the windows spread less around it than around the median difference (a
    daily profile scaled, a holiday at half the traffic), else the median difference (a
    flat level that jumped: scaled, its small wiggles would grow with the ratio)."""
    delta = _median([value - forecast for value, forecast in pairs])
    by_difference = _spread([value - forecast - delta for value, forecast in pairs])
    ratio = _held_ratio(pairs)
    if ratio is not None:
        by_ratio = _spread([value - forecast * ratio for value, forecast in pairs])
        if by_ratio < RATIO_BETTER * by_difference:
            return (True, ratio), by_ratio
    return (False, delta), by_difference



def _move(forecaster: Forecaster, by_ratio: bool, amount: float) -> None:
    """Rescale ``forecaster`` by a ratio, or shift it by a difference."""
    if by_ratio:
        forecaster.rescale(amount)
    else:
        forecaster.shift(amount)
