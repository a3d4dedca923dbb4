"""Where the first detection falls inside each labelled window, and what an earlier one costs.

Issue 10 asks for a median delay of at most 0.3 of a window's length on NAB's labelled
windows. NAB centres each window on its labelled point, so a detector that flags the
anomaly where the labeller saw it start scores 0.5. This reports, for the default detector
of a metric kind run on a corpus (scores before learning, as ``dqpulse detect --csv``
prints them), how the first detections fall: by ``--early`` (0.3), between, at the
labelled point (0.49-0.51) and after it. For each window caught later than ``--early`` it
takes the highest score in the window's first ``--early`` share (what a detector would have
had to flag to catch it that early) and counts the normal rows that score as high: rows
after the probation, outside every window and the slack after it (one window length), as
``series_eval.py`` counts false alerts. That share, against the share of normal rows at the
alert threshold, is what catching those windows early would cost in false alerts.

A second check needs no detector: is there anything in the data of a window's first
``--early`` share to catch? For each caught window it compares that stretch with the two
window lengths before it (the shift of its mean, in standard deviations of the stretch
before, and the ratio of the two standard deviations), and ranks both among the same
statistics of ordinary stretches of the same series (after the probation, clear of every
window and its slack, one per window length). A window whose early rows rank like an
ordinary stretch (a percentile near 50) has no precursor that any causal detector could
flag without flagging ordinary stretches as often.

    .venv/bin/python bench/delays.py                      # nab-visible, detect's default
    .venv/bin/python bench/delays.py --corpus DIR --metric-kind volume --early 0.3

Standard library and dqpulse only; runs in-process (the CLI's own ``detect_csv``).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dqpulse.detectors.offline import detect_csv, parse_timestamp  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "nab-visible"
Window = tuple[float, float]


@dataclass
class Series:
    key: str
    times: list[float]
    scores: list[float]
    windows: list[Window]
    values: list[float] = field(default_factory=list)


@dataclass
class Report:
    caught: list[float] = field(default_factory=list)  # first detection's position
    missed: int = 0
    # (highest score in the first `early` share, its window's key) of windows caught later
    late_peaks: list[tuple[float, str]] = field(default_factory=list)
    normal: list[float] = field(default_factory=list)  # scores of normal rows, sorted
    # (position of the first detection, percentile of the early stretch's mean shift, of
    # its spread ratio, share of the ordinary stretches themselves beyond 9 in 10 on
    # either, rows in the window) per caught window with enough rows
    precursors: list[tuple[float, float, float, float, int]] = field(default_factory=list)


def first_detection(times: Sequence[float], scores: Sequence[float], window: Window,
                    threshold: float) -> float | None:
    """Position (0 at the window's start, 1 at its end) of the first score at or above
    ``threshold`` inside ``window``; None when there is none.

    >>> first_detection([0, 1, 2, 3, 4], [0, 0, 0.95, 1, 0], (0.0, 4.0), 0.9)
    0.5
    """
    start, end = window
    for t, score in zip(times, scores, strict=True):
        if start <= t <= end and score >= threshold:
            return (t - start) / (end - start) if end > start else 0.0
    return None


def early_peak(times: Sequence[float], scores: Sequence[float], window: Window,
               early: float) -> float:
    """The highest score in the first ``early`` share of ``window`` (0 when no row is).

    >>> early_peak([0, 1, 2, 3, 4], [0.2, 0.6, 0.95, 1, 0], (0.0, 4.0), 0.3)
    0.6
    """
    start, end = window
    last = start + early * (end - start)
    return max((s for t, s in zip(times, scores, strict=True) if start <= t <= last),
               default=0.0)


def probation(rows: int) -> int:
    """Rows ``series_eval.py`` never scores: 15 % of a series, at most 750."""
    return min(int(0.15 * rows), 750)


def protected_spans(windows: Sequence[Window]) -> list[Window]:
    """Each labelled window with the slack after it (one window length), sorted: where
    ``series_eval.py`` counts no false alert."""
    return sorted((a, b + (b - a)) for a, b in windows)


def normal_scores(series: Series) -> list[float]:
    """Scores of the rows ``series_eval.py`` could count as false alerts: after the
    probation, outside every window and the slack after it."""
    n = len(series.times)
    skipped = probation(n)
    protected = protected_spans(series.windows)
    starts = [a for a, _ in protected]

    def inside(t: float) -> bool:
        i = bisect.bisect_right(starts, t) - 1
        return any(a <= t <= b for a, b in protected[max(0, i - 2):i + 1])

    return [s for t, s in zip(series.times[skipped:], series.scores[skipped:], strict=True)
            if not inside(t)]


def stretch_change(times: Sequence[float], values: Sequence[float], start: float,
                   length: float, early: float) -> tuple[float, float] | None:
    """(|shift of the mean|, |log of the spread ratio|) of the rows in
    ``[start, start + early * length)`` against those in ``[start - 2 * length, start)``;
    the shift in standard deviations of the rows before. None when either has under 5 rows
    (or the rows before are constant and the stretch is too).

    >>> before = [0.0, 1.0] * 10
    >>> shift, spread = stretch_change(range(26), before + [5.0, 6.0] * 3, 20.0, 10.0, 0.6)
    >>> round(shift, 2), round(spread, 2)
    (10.0, 0.0)
    """
    prior = [v for t, v in zip(times, values, strict=True)
             if start - 2 * length <= t < start and math.isfinite(v)]
    part = [v for t, v in zip(times, values, strict=True)
            if start <= t < start + early * length and math.isfinite(v)]
    if len(prior) < 5 or len(part) < 5:
        return None
    sd_prior, sd_part = statistics.pstdev(prior), statistics.pstdev(part)
    shift = abs(statistics.fmean(part) - statistics.fmean(prior))
    if sd_prior == 0.0:
        return (0.0, 0.0) if sd_part == 0.0 and shift == 0.0 else (math.inf, math.inf)
    spread = abs(math.log(sd_part / sd_prior)) if sd_part > 0.0 else math.inf
    return shift / sd_prior, spread


def ordinary_changes(series: Series, length: float,
                     early: float) -> list[tuple[float, float]]:
    """``stretch_change`` of ordinary stretches: one per ``length`` after the probation,
    stretch and the rows before it clear of every window and the slack after it."""
    n = len(series.times)
    if n < 2 or length <= 0.0:
        return []
    first = series.times[min(probation(n), n - 1)]
    protected = protected_spans(series.windows)
    out = []
    start = first + 2 * length
    while start + early * length <= series.times[-1]:
        lo, hi = start - 2 * length, start + early * length
        if not any(a <= hi and lo <= b for a, b in protected):
            change = stretch_change(series.times, series.values, start, length, early)
            if change is not None:
                out.append(change)
        start += length
    return out


def percentile_of(value: float, ordinary: Sequence[float]) -> float:
    """Share of ``ordinary`` below ``value`` (ties count half), in percent.

    >>> percentile_of(2.0, [1.0, 2.0, 3.0, 4.0])
    37.5
    """
    below = sum(o < value for o in ordinary)
    ties = sum(o == value for o in ordinary)
    return 100.0 * (below + 0.5 * ties) / len(ordinary) if ordinary else math.nan


def analyse(corpus: Sequence[Series], threshold: float, early: float) -> Report:
    report = Report()
    normal: list[float] = []
    for series in corpus:
        normal.extend(normal_scores(series))
        for window in series.windows:
            position = first_detection(series.times, series.scores, window, threshold)
            if position is None:
                report.missed += 1
                continue
            report.caught.append(position)
            if series.values:
                length = window[1] - window[0]
                change = stretch_change(series.times, series.values, window[0], length, early)
                ordinary = ordinary_changes(series, length, early)
                if change is not None and len(ordinary) >= 10:
                    shifts, spreads = [o[0] for o in ordinary], [o[1] for o in ordinary]
                    beyond = sum(max(percentile_of(a, shifts), percentile_of(b, spreads)) >= 90.0
                                 for a, b in ordinary) / len(ordinary)
                    rows = sum(window[0] <= t <= window[1] for t in series.times)
                    report.precursors.append(
                        (position, percentile_of(change[0], shifts),
                         percentile_of(change[1], spreads), beyond, rows))
            if position > early:
                report.late_peaks.append(
                    (early_peak(series.times, series.scores, window, early), series.key))
    report.normal = sorted(normal)
    report.late_peaks.sort(reverse=True)
    return report


def share_at_or_above(sorted_scores: Sequence[float], threshold: float) -> float:
    """Share of ``sorted_scores`` (ascending) at or above ``threshold``.

    >>> share_at_or_above([0.1, 0.5, 0.9, 0.95], 0.9)
    0.5
    """
    if not sorted_scores:
        return 0.0
    return (len(sorted_scores) - bisect.bisect_left(sorted_scores, threshold)) / len(
        sorted_scores)


def summary(report: Report, threshold: float, early: float) -> str:
    caught = report.caught
    if not caught:
        return f"no window caught at {threshold} ({report.missed} missed)"
    by_early = sum(p <= early for p in caught)
    at_point = sum(0.49 <= p <= 0.51 for p in caught)
    between = sum(early < p < 0.49 for p in caught)
    after = sum(p > 0.51 for p in caught)
    lines = [
        f"windows caught at {threshold}: {len(caught)} of {len(caught) + report.missed}; "
        f"median delay {statistics.median(caught):.3f}",
        f"  first detection <= {early}: {by_early}; between {early} and 0.49: {between}; "
        f"at the labelled point (0.49-0.51): {at_point}; after it: {after}",
    ]
    # a median at `early` needs half the caught windows by then
    needed = max(0, (len(caught) + 1) // 2 - by_early)
    at_threshold = share_at_or_above(report.normal, threshold)
    lines.append(f"  normal rows (outside windows and their slack, after the probation): "
                 f"{len(report.normal)}; share at or above {threshold}: {at_threshold:.2%}")
    peaks = [peak for peak, _ in report.late_peaks]
    if peaks:
        lines.append(f"  the {len(peaks)} windows caught later than {early}: highest score "
                     f"in their first {early:g} of the window, median "
                     f"{statistics.median(peaks):.3f} (normal rows as high: "
                     f"{share_at_or_above(report.normal, statistics.median(peaks)):.2%})")
    if needed and len(peaks) >= needed:
        bar = peaks[needed - 1]
        share = share_at_or_above(report.normal, bar)
        ratio = share / at_threshold if at_threshold else float("inf")
        lines.append(
            f"  a median delay of {early} needs {needed} more windows caught by {early}: "
            f"a threshold of {bar:.3f} on their early rows, reached by {share:.2%} of normal "
            f"rows ({ratio:.1f}x the rows at {threshold})")
    lines += precursor_lines(report.precursors, early)
    return "\n".join(lines)


def precursor_lines(precursors: Sequence[tuple[float, float, float, float, int]],
                    early: float) -> list[str]:
    """The detector-free check: how the early stretches of windows caught by ``early`` and
    of those caught later rank among ordinary stretches of their series."""
    lines = [f"  no detector: the first {early:g} of each caught window against the two window "
             f"lengths before it, ranked among ordinary stretches of its series "
             f"(percentile; 50 is an ordinary stretch)"]
    for name, group in (("caught by", [p for p in precursors if p[0] <= early]),
                        ("caught after", [p for p in precursors if p[0] > early])):
        if not group:
            continue
        shifts = [g[1] for g in group]
        spreads = [g[2] for g in group]
        unusual = sum(max(a, b) >= 90.0 for _, a, b, _, _ in group)
        lines.append(
            f"    {len(group)} windows {name} {early:g}: mean shift percentile median "
            f"{statistics.median(shifts):.0f}, spread change {statistics.median(spreads):.0f}; "
            f"{unusual} ({unusual / len(group):.0%}) with either beyond 9 in 10 ordinary "
            f"stretches")
    if precursors:
        # one ordinary stretch per window length: a flagged one is at least one false episode
        per_10k = statistics.fmean(1e4 * p[3] / max(p[4], 1) for p in precursors)
        lines.append(f"    ordinary stretches with either beyond 9 in 10 of their series': "
                     f"{statistics.fmean(p[3] for p in precursors):.0%}: flagging at that level "
                     f"flags them too, at least {per_10k:.0f} false episodes per 10k rows")
    return lines


def read_corpus_files(corpus: Path) -> tuple[list[Path], dict[str, list[list[str]]]]:
    labels = json.loads((corpus / "labels.json").read_text())
    return sorted((corpus / "data").glob("*/*.csv")), labels


def _score(job: tuple[str, str]) -> tuple[str, list[float], list[float], list[float]]:
    path, kind = job
    times, scores, values = [], [], []
    for stamp, value, score in detect_csv(path, kind=kind):
        times.append(parse_timestamp(stamp))
        scores.append(score)
        values.append(value)
    return path, times, scores, values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--metric-kind", default="distribution",
                        help="production defaults of this kind (default: detect's own)")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--early", type=float, default=0.3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    files, labels = read_corpus_files(args.corpus)
    if not files:
        parser.error(f"no data/*/*.csv under {args.corpus}")
    with ProcessPoolExecutor(args.jobs) as pool:
        scored = list(pool.map(_score, [(str(p), args.metric_kind) for p in files]))
    corpus = []
    for path, times, scores, values in scored:
        key = f"{Path(path).parent.name}/{Path(path).name}"
        windows = [(parse_timestamp(a), parse_timestamp(b)) for a, b in labels.get(key, [])]
        corpus.append(Series(key, times, scores, windows, values))
    print(summary(analyse(corpus, args.threshold, args.early), args.threshold, args.early))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
