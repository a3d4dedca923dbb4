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
