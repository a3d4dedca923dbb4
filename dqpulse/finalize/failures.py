"""Windows whose finalization fails the same way on every try.

A window's finalization (merge the partials, compute the points, write them, score them,
alert) runs in one transaction with the windows before it. When it raises something that
does not pass by itself (:func:`~dqpulse.store.db.is_transient` is false: a bug, a value a
column cannot hold), retrying for ever would stop that data set's monitoring for good,
and every window after it would wait. So each process keeps, per data set, the window that
failed and how often:

1. the next pass commits the windows before it, then tries it alone, up to
   ``max_attempts`` times in all (a fluke passes);
2. then it is finalized **without alerting**: its points are written and scored (the
   detectors learn it, its anomalies are flagged in the metric history) but open no
   incident (``dqpulse_windows_degraded_total{outcome="unalerted"}``);
3. if that fails too, **without its hooks**: its metric points are written, unscored
   (no detectors, no incidents; ``outcome="unscored"``);
4. if that fails too, it is **skipped**: its partials stay in ``window_partials`` for
   inspection, the data set's windows go on after it (``outcome="skipped"``).

Each failed try is logged with its traceback and counted in
``dqpulse_finalize_failures_total{dataset}``. A transient failure (the database went
away, a deadlock) is retried as before and not counted here: it says nothing about the
window. Running out of memory is the process's state, not the window's: retried too.

**A try that never ends.** A window whose finalization kills the process (the kernel's
out-of-memory killer, a crash in native code) raises nothing: counted in the process
only, it would be tried again after every restart, a crash loop. So before a pass, the
number of passes begun at the data set's first ready window without committing past it
is committed in ``dataset_partitions`` (``finalize_try_window``, ``finalize_tries``;
:meth:`WindowFailures.begin_try`), under a session-scoped advisory lock held across that
note and the pass. A try that the process saw end (a commit, an error, a stop) is
accounted for there; one that it did not see end counts as a failed try of that window:
it is logged, counted like the others, and moves the window along the same ladder
(alone, unalerted, unscored, skipped). Since the pass that died may have died at any of
its windows, the process then finalizes the windows it covered one per pass (each
committed, so each noted) until the failing one is found. A failure raised in Python is
counted in the process only: after a restart its ladder starts again (it does not loop:
each try ends).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import Enum

from dqpulse.telemetry import Telemetry
from dqpulse.utc import iso

log = logging.getLogger(__name__)


class Mode(Enum):
    """How a window is finalized."""

    FULL = "full"  # points, then the hooks (scoring, alerting)
    UNALERTED = "unalerted"  # points and the hooks, but no alerting (incidents)
    UNSCORED = "unscored"  # points only
    SKIPPED = "skipped"  # nothing: its partials stay where they are


class WindowFailed(Exception):
    """Finalizing ``window_start`` of ``dataset`` raised something that is not transient
    (its cause); the windows before it in that pass were rolled back with it."""

    def __init__(self, dataset: str, window_start: float, mode: Mode) -> None:
        super().__init__(f"finalizing the window at {iso(window_start)} of {dataset} "
                         f"({mode.value}) failed")
        self.dataset = dataset
        self.window_start = window_start
        self.mode = mode


@dataclass(slots=True)
class _Failing:
    window_start: float
    attempts: int = 0  # failed tries, all modes (the mode follows: WindowFailures._ladder)


class WindowFailures:
    """The failing window of each data set, in one process (see the module's doc)."""

    def __init__(self, *, max_attempts: int = 3, telemetry: Telemetry | None = None) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.max_attempts = max_attempts
        self.telemetry = telemetry
        self._failing: dict[str, _Failing] = {}
        #: per data set, (window, stored tries) that this process has accounted for
        self._noted: dict[str, tuple[float, int]] = {}
        #: per data set, windows before this are finalized one per pass (see careful)
        self._careful: dict[str, float] = {}

    def failing(self, dataset: str) -> float | None:
        """The start of ``dataset``'s failing window, if one is known."""
        found = self._failing.get(dataset)
        return None if found is None else found.window_start

    def mode(self, dataset: str, window_start: float) -> Mode:
        """How to finalize this window now."""
        found = self._failing.get(dataset)
        if found is None or found.window_start != window_start:
            return Mode.FULL
        return self._ladder(found.attempts)

    def careful(self, dataset: str, window_start: float) -> bool:
        """Whether this window is finalized alone in its pass: it lies in the span of a
        pass that never ended (see :meth:`begin_try`)."""
        return window_start < self._careful.get(dataset, -math.inf)

    def begin_try(self, dataset: str, window_start: float, stored: tuple[float | None, int],
                  span: float) -> int:
        """Before a pass that begins at ``window_start``: ``stored`` is the data set's
        stored (window, passes begun there without committing past it), ``span`` how far
        one pass reaches (seconds). The passes that this process did not account for never
        ended: each counts as a failed try of the window (logged, counted), and the windows
        in ``span`` are finalized one per pass from now on. Returns the count to store
        before the pass (this one included)."""
        stored_window, stored_tries = stored
        tries = stored_tries if stored_window == window_start else 0
        noted = self._noted.get(dataset)
        seen = noted[1] if noted is not None and noted[0] == window_start else 0
        if tries > seen:
            self._unfinished(dataset, window_start, tries - seen, span)
        self._noted[dataset] = (window_start, tries + 1)
        return tries + 1

    def end_untried(self, dataset: str, window_start: float, tries: int) -> None:
        """The pass noted as try ``tries`` at ``window_start`` finalized nothing (it was
        stopped): the count stored back is ``tries - 1``."""
        self._noted[dataset] = (window_start, tries - 1)

    def _count(self, dataset: str, window_start: float, tries: int) -> _Failing:
        """Add ``tries`` failed tries to the window's record (a new window starts anew)."""
        found = self._failing.get(dataset)
        if found is None or found.window_start != window_start:
            found = self._failing[dataset] = _Failing(window_start)
        found.attempts += tries
        return found

    def _unfinished(self, dataset: str, window_start: float, count: int, span: float) -> None:
        found = self._count(dataset, window_start, count)
        mode = self._ladder(found.attempts)
        self._careful[dataset] = max(self._careful.get(dataset, -math.inf),
                                     window_start + span)
        # one pass whose worker was killed (kill -9 of a pod) is no bug yet: a warning
        level = logging.WARNING if mode is Mode.FULL else logging.ERROR
        log.log(level, "%d finalize %s of %s beginning at the window at %s never ended (the "
                "process died: killed, out of memory, or a crash in native code); the "
                "windows of such a pass are now finalized one by one, and this one "
                "%s (%d failed tries)", count, "pass" if count == 1 else "passes",
                dataset, iso(window_start), _next(mode), found.attempts,
                extra={"dataset": dataset})
        if self.telemetry is not None:
            self.telemetry.finalize_failures.labels(dataset).inc(count)

    def _ladder(self, attempts: int) -> Mode:
        """The mode after ``attempts`` failed tries of one window."""
        beyond = attempts - self.max_attempts
        return (Mode.FULL if beyond < 0 else Mode.UNALERTED if beyond == 0
                else Mode.UNSCORED if beyond == 1 else Mode.SKIPPED)

    def failed(self, error: WindowFailed) -> None:
        """Count a failed try and decide the next one (the caller logs nothing more)."""
        found = self._count(error.dataset, error.window_start, 1)
        mode = self._ladder(found.attempts)
        if mode is Mode.FULL:
            then = f"try {found.attempts} of {self.max_attempts}; the next pass tries again"
        elif mode is Mode.UNALERTED:
            then = "it will be finalized and scored without alerting"
        elif mode is Mode.UNSCORED:
            then = "it will be finalized without scoring or alerting"
        else:
            then = ("it will be skipped: its partials stay in window_partials and the "
                    "data set's later windows go on")
        log.error("%s (%s); %s", error, _cause(error), then, exc_info=error.__cause__,
                  extra={"dataset": error.dataset})
        if self.telemetry is not None:
            self.telemetry.finalize_failures.labels(error.dataset).inc()

    def finalized(self, dataset: str, window_start: float, mode: Mode) -> None:
        """The window went through in ``mode`` (any window: forgets a failing one)."""
        found = self._failing.get(dataset)
        if found is not None and found.window_start <= window_start:
            del self._failing[dataset]
        if mode is not Mode.FULL:
            log.error("the window at %s of %s was %s after %d failed tries",
                      iso(window_start), dataset, mode.value,
                      found.attempts if found is not None else 0,
                      extra={"dataset": dataset})
            if self.telemetry is not None:
                self.telemetry.windows_degraded.labels(dataset, mode.value).inc()


def _next(mode: Mode) -> str:
    return {Mode.FULL: "is tried alone", Mode.UNALERTED: "is finalized without alerting",
            Mode.UNSCORED: "is finalized without scoring or alerting",
            Mode.SKIPPED: "is skipped (its partials stay in window_partials)"}[mode]


def _cause(error: BaseException) -> str:
    cause = error.__cause__
    return "unknown" if cause is None else f"{type(cause).__name__}: {cause}"[:300]
