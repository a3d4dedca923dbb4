"""The altered corpus copies of bench/public_series.py: a young copy keeps only the windows
inside its rows, a nudged copy differs by exactly one repeated row per series."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.unit.conftest import load_bench


@pytest.fixture(scope="module")
def public_series():
    return load_bench("public_series")


def _corpus(root: Path, rows: int = 40) -> Path:
    (root / "data" / "cat").mkdir(parents=True)
    with open(root / "data" / "cat" / "a.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        for i in range(rows):
            writer.writerow([f"2014-04-01 {i // 12:02d}:{i % 12 * 5:02d}:00", str(i)])
    labels = {"cat/a.csv": [["2014-04-01 00:30:00", "2014-04-01 00:50:00"],
                            ["2014-04-01 02:00:00", "2014-04-01 02:30:00"]]}
    (root / "labels.json").write_text(json.dumps(labels))
    return root


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))[1:]


def test_head_keeps_the_first_rows_and_the_windows_that_end_in_them(public_series, tmp_path):
    corpus = _corpus(tmp_path / "in")
    (tmp_path / "out").mkdir()
    out = public_series.head(corpus, 20, tmp_path / "out")
    rows = _rows(out / "data" / "cat" / "a.csv")
    assert [r[1] for r in rows] == [str(i) for i in range(20)]
    # 20 rows end at 01:35: the first window (to 00:50) is in, the second (02:00-02:30) out
    assert json.loads((out / "labels.json").read_text()) == {
        "cat/a.csv": [["2014-04-01 00:30:00", "2014-04-01 00:50:00"]]}


def test_nudge_repeats_one_row_one_second_later_past_the_probation(public_series, tmp_path):
    corpus = _corpus(tmp_path / "in")
    original = _rows(corpus / "data" / "cat" / "a.csv")
    for seed in range(5):
        (tmp_path / f"out{seed}").mkdir()
        out = public_series.nudge(corpus, tmp_path / f"out{seed}", seed)
        rows = _rows(out / "data" / "cat" / "a.csv")
        assert len(rows) == len(original) + 1
        extra = next(i for i, (a, b) in enumerate(zip(rows, original, strict=False)) if a != b)
        assert extra >= 6  # 15 % of 40 rows: the scorer's probation
        assert rows[extra][1] == rows[extra - 1][1]
        assert rows[extra][0].endswith(":01") and rows[extra - 1][0].endswith(":00")
        assert rows[:extra] + rows[extra + 1:] == original
        assert (out / "labels.json").read_text() == (corpus / "labels.json").read_text()


def test_restarts_cut_each_series_and_keep_the_windows_centred_inside(public_series, tmp_path):
    corpus = _corpus(tmp_path / "in")
    (tmp_path / "out").mkdir()
    out = public_series.restarts(corpus, 16, tmp_path / "out", starts=(0, 20, 33))
    # rows 33-39 are fewer than half of 16: that part is left out
    assert sorted(p.name for p in (out / "data" / "cat").iterdir()) == ["a@0.csv", "a@20.csv"]
    assert [r[1] for r in _rows(out / "data" / "cat" / "a@20.csv")] == [
        str(i) for i in range(20, 36)]
    # part 0 ends at 01:15: the first window (centre 00:40) is in, whole; part 20 runs
    # 01:40-02:55: the second window (centre 02:15) is in, whole
    assert json.loads((out / "labels.json").read_text()) == {
        "cat/a@0.csv": [["2014-04-01 00:30:00", "2014-04-01 00:50:00"]],
        "cat/a@20.csv": [["2014-04-01 02:00:00", "2014-04-01 02:30:00"]]}
    (tmp_path / "cut").mkdir()
    cut = public_series.restarts(corpus, 30, tmp_path / "cut", starts=(8,))
    # rows 8-37 run 00:40-03:05: the first window's centre (00:40) is in, its start cut
    assert json.loads((cut / "labels.json").read_text())["cat/a@8.csv"] == [
        ["2014-04-01 00:40:00", "2014-04-01 00:50:00"],
        ["2014-04-01 02:00:00", "2014-04-01 02:30:00"]]
