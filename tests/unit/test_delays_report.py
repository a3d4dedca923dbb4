"""bench/delays.py: where first detections fall inside labelled windows, and what catching
the late ones earlier would cost in normal rows flagged."""

from __future__ import annotations

import pytest

from tests.unit.conftest import load_bench


@pytest.fixture(scope="module")
def delays():
    return load_bench("delays")


def _series(delays, key: str, n: int, window: tuple[int, int], detect_at: int | None,
            early_score: float, noise: float = 0.1):
    times = [float(i) for i in range(n)]
    scores = [noise] * n
    a, b = window
    scores[a] = early_score  # the highest score in the window's first rows
    if detect_at is not None:
        scores[detect_at] = 0.95
    return delays.Series(key, times, scores, [(float(a), float(b))])


def test_positions_and_the_early_peaks_of_late_windows(delays) -> None:
    corpus = [
        _series(delays, "early", 200, (100, 120), 102, 0.2),   # caught at 0.1
        _series(delays, "point", 200, (100, 120), 110, 0.7),   # at the labelled point
        _series(delays, "late", 200, (100, 120), 116, 0.6),    # after it
        _series(delays, "missed", 200, (100, 120), None, 0.5),
    ]
    report = delays.analyse(corpus, 0.9, 0.3)
    assert sorted(round(p, 2) for p in report.caught) == [0.1, 0.5, 0.8]
    assert report.missed == 1
    assert report.late_peaks == [(0.7, "point"), (0.6, "late")]
    # probation 30 rows; window 100-120 and its slack to 140 are not normal rows
    assert len(report.normal) == 4 * (200 - 30 - 41)
    assert all(score == 0.1 for score in report.normal)


def test_summary_names_the_threshold_an_earlier_median_would_need(delays) -> None:
    corpus = [_series(delays, f"s{i}", 200, (100, 120), 110, 0.3 + 0.1 * i) for i in range(4)]
    # normal rows: 3 in 100 reach 0.5 in every series
    for series in corpus:
        for t in (40, 60, 80):
            series.scores[t] = 0.5
    text = delays.summary(delays.analyse(corpus, 0.9, 0.3), 0.9, 0.3)
    assert "windows caught at 0.9: 4 of 4; median delay 0.500" in text
    assert "at the labelled point (0.49-0.51): 4" in text
    # two more windows by 0.3 make the median: the second-highest early peak, 0.5
    assert "needs 2 more windows caught by 0.3: a threshold of 0.500" in text
    assert "reached by 2.33% of normal rows" in text  # 3 of the 129 normal rows per series


def test_first_detection_and_the_share_of_rows_at_a_threshold(delays) -> None:
    assert delays.first_detection([0, 5, 10], [0.95, 0.0, 1.0], (5.0, 10.0), 0.9) == 1.0
    assert delays.first_detection([0, 5, 10], [0.0, 0.0, 0.0], (5.0, 10.0), 0.9) is None
    assert delays.share_at_or_above([], 0.9) == 0.0
    assert delays.share_at_or_above([0.1, 0.2, 0.9], 0.2) == pytest.approx(2 / 3)


def test_a_stretch_change_is_its_mean_shift_and_spread_change_against_the_rows_before(
        delays) -> None:
    times = list(range(26))
    values = [0.0, 1.0] * 10 + [5.0, 6.0] * 3  # the rows before: mean 0.5, sd 0.5
    shift, spread = delays.stretch_change(times, values, 20.0, 10.0, 0.6)
    assert (round(shift, 6), round(spread, 6)) == (10.0, 0.0)
    # fewer than 5 rows on either side: nothing to compare
    assert delays.stretch_change(times, values, 20.0, 10.0, 0.3) is None
    assert delays.percentile_of(2.0, [1.0, 2.0, 3.0, 4.0]) == 37.5


def test_early_rows_like_the_ordinary_ones_rank_as_ordinary_and_a_precursor_does_not(
        delays) -> None:
    import random

    rng = random.Random(3)
    n = 4000
    times = [float(i) for i in range(n)]
    values = [rng.gauss(0.0, 1.0) for _ in range(n)]
    quiet = delays.Series("quiet", times, [0.0] * n, [(3000.0, 3100.0)], values[:])
    loud_values = values[:]
    for i in range(3000, 3030):  # the window's first 0.3 already moved by 3 sd
        loud_values[i] += 3.0
    loud = delays.Series("loud", times, [0.0] * n, [(3000.0, 3100.0)], loud_values)
    for series, at in ((quiet, 3050), (loud, 3010)):
        series.scores[at] = 0.95
    report = delays.analyse([quiet, loud], 0.9, 0.3)
    by_position = {round(p[0], 1): p for p in report.precursors}
    late, early = by_position[0.5], by_position[0.1]
    assert late[1] < 90.0 and early[1] >= 99.0  # mean-shift percentile
    # about 100 rows per window length, and a tenth to a fifth of ordinary stretches beyond
    # 9 in 10 on one of two statistics
    assert 0.1 <= late[3] <= 0.25 and late[4] == 101
    text = "\n".join(delays.precursor_lines(report.precursors, 0.3))
    assert "1 windows caught by 0.3" in text and "1 windows caught after 0.3" in text
    assert "false episodes per 10k rows" in text
