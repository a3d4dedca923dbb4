from __future__ import annotations

import subprocess
import sys

from dqpulse.detectors.offline import DEFAULT_KIND, KIND_METRICS
from workers.cli import METRIC_KINDS, build_parser


def test_the_cli_names_the_same_metric_kinds_and_default_as_the_detectors() -> None:
    assert METRIC_KINDS == tuple(sorted(KIND_METRICS))
    assert build_parser().parse_args(["detect", "--csv", "x.csv"]).metric_kind == DEFAULT_KIND


def test_building_the_parser_does_not_load_the_detectors() -> None:
    code = ("import sys; from workers.cli import build_parser; build_parser(); "
            "print('river' in sys.modules, 'dqpulse.detectors' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]


def test_detect_prints_scores_below_one_as_below_one() -> None:
    from workers.cli import _score_text

    assert _score_text(0.9) == "0.900000"
    assert _score_text(0.8999) == "0.899900"  # the repeat cap stays under the threshold
    near = [0.9999996, 0.99999974, 0.9999999985]
    printed = [_score_text(score) for score in near]
    assert all(float(text) < 1.0 for text in printed)
    assert [float(text) for text in printed] == sorted(float(text) for text in printed)
    assert len(set(printed)) == len(near)
    assert _score_text(1.0) == "1.000000"
