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
