"""How detect's default moves when one parameter moves, on NAB and on altered copies of it.

A default earns its place when it holds on series it was not measured on. Nothing here can
score NAB's held-out series, but the alterations of ``bench/public_series.py`` stand in for
what makes them different (shorter series, coarser steps, irregular sampling, gaps), and
the nudged copies show how far the figures move under a change that holds no information.
This scores the production defaults of a metric kind, and each ``--vary NAME=V1,V2``
setting one at a time on top of them, on every such copy at once, and prints recall /
false alert episodes per 10k rows per copy (scored as ``series_eval.py`` scores them, at
the product threshold 0.9), then per setting the windows caught and the false episodes
against the defaults, summed over the copies.

    .venv/bin/python bench/sensitivity.py --vary spike_memory=3,8 --vary report_share=2.5,4
    .venv/bin/python bench/sensitivity.py --copies base,head1600,hourly --vary rel_scale=0.02
    .venv/bin/python bench/sensitivity.py --categories realAWSCloudwatch,realTweets

``--categories`` scores a subset of the corpus' folders: NAB's held-out categories are all
real series, and the artificial ones dilute the false alert rate (their rows rarely alert).

Runs in-process (the CLI's own ``detect_csv``), about 40 s per setting on a 2-vCPU box for
the twelve copies. Needs ``../shared/tools/series_eval.py`` and the corpus beside the checkout.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import public_series as ps  # noqa: E402

from dqpulse.detectors.offline import detect_csv  # noqa: E402

#: name -> how the copy is made from the corpus (into an empty folder)
COPIES: dict[str, Callable[[Path, Path], Path] | None] = {
    "base": None,
    "nudge1": lambda c, into: ps.nudge(c, into, 1),
    "nudge2": lambda c, into: ps.nudge(c, into, 2),
    "restarts2200": lambda c, into: ps.restarts(c, 2200, into),
    "head1600": lambda c, into: ps.head(c, 1600, into),
    "head2500": lambda c, into: ps.head(c, 2500, into),
    "outages3": lambda c, into: ps.outages(c, 3, into),
    "jitter120": lambda c, into: ps.thin(c, 0.0, 120, into),
    "drop20jitter120": lambda c, into: ps.thin(c, 0.2, 120, into),
    "drop20": lambda c, into: ps.thin(c, 0.2, 0, into),
    "30min": lambda c, into: ps.resample(c, 1800, into),
    "hourly": lambda c, into: ps.resample(c, 3600, into),
}


@functools.cache
def load_evaluator() -> Any:
    """``series_eval.py``, loaded once per process."""
    spec = importlib.util.spec_from_file_location("series_eval", ps.EVAL)
    if spec is None or spec.loader is None:
        sys.exit(f"{ps.EVAL} not found: the shared evaluation tool sits beside the checkout")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def load_labels(corpus: str) -> dict[str, list[list[str]]]:
    """A corpus' labelled windows, read once per process."""
    labels: dict[str, list[list[str]]] = json.loads((Path(corpus) / "labels.json").read_text())
    return labels


def parse_value(text: str) -> Any:
    """A parameter value as JSON when it parses (numbers, true, null), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def settings(varies: list[str], combos: Sequence[str] = ()) -> list[tuple[str, dict[str, Any]]]:
    """("defaults", {}) then one (label, params) per ``NAME=V1,V2`` value, then one per
    combination ``NAME=V+NAME=V`` (several parameters moved together).

    >>> settings(["spike_memory=3,8"])[1:]
    [('spike_memory=3', {'spike_memory': 3}), ('spike_memory=8', {'spike_memory': 8})]
    >>> settings([], ["a=1+b=x"])[1:]
    [('a=1+b=x', {'a': 1, 'b': 'x'})]
    """
    out: list[tuple[str, dict[str, Any]]] = [("defaults", {})]
    for vary in varies:
        name, _, values = vary.partition("=")
        if not name or not values:
            sys.exit(f"--vary wants NAME=V1[,V2...], got {vary!r}")
        out += [(f"{name}={v}", {name: parse_value(v)}) for v in values.split(",")]
    for combo in combos:
        params: dict[str, Any] = {}
        for part in combo.split("+"):
            name, _, value = part.partition("=")
            if not name or not value:
                sys.exit(f"--combo wants NAME=V+NAME=V..., got {combo!r}")
            params[name] = parse_value(value)
        out.append((combo, params))
    return out


Job = tuple[str, str, str, str, dict[str, Any], str, float]


def score_file(job: Job) -> tuple[str, str, dict[str, Any]]:
    """(setting, copy, ``series_eval``'s report) of one series scored with one setting."""
    label, copy, corpus, path, params, kind, threshold = job
    evaluator = load_evaluator()
    labels = load_labels(corpus)
    times, scores = [], []
    for stamp, _, score in detect_csv(path, None, kind, **params):
        times.append(evaluator.stamp(stamp))
        scores.append(score)
    file = Path(path)
    key = f"{file.parent.name}/{file.name}"
    windows = [(evaluator.stamp(a), evaluator.stamp(b)) for a, b in labels.get(key, [])]
    return label, copy, evaluator.evaluate(times, scores, windows, threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--corpus", type=Path, default=ps.CORPUS)
    parser.add_argument("--metric-kind", default="distribution")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--vary", action="append", default=[], metavar="NAME=V1,V2",
                        help="score each value of this parameter on top of the defaults")
    parser.add_argument("--combo", action="append", default=[], metavar="NAME=V+NAME=V",
                        help="score these parameters moved together on top of the defaults")
    parser.add_argument("--copies", default=",".join(COPIES),
                        help=f"comma-separated, of: {', '.join(COPIES)}")
    parser.add_argument("--categories", default="",
                        help="comma-separated corpus categories to score (default: all); "
                             "realAWSCloudwatch,realTweets scores the real series alone")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    categories = {c.strip() for c in args.categories.split(",") if c.strip()}
    load_evaluator()
    copies = [c.strip() for c in args.copies.split(",") if c.strip()]
    unknown = [c for c in copies if c not in COPIES]
    if unknown:
        sys.exit(f"unknown copies {unknown}; known: {', '.join(COPIES)}")
    runs = settings(args.vary, args.combo)
    with tempfile.TemporaryDirectory() as scratch:
        folders: dict[str, Path] = {}
        for copy in copies:
            make = COPIES[copy]
            if make is None:
                folders[copy] = args.corpus
            else:
                into = Path(scratch) / copy
                (into / "data").mkdir(parents=True)
                folders[copy] = make(args.corpus, into)
        jobs: list[Job] = [
            (label, copy, str(folders[copy]), str(path), params, args.metric_kind,
             args.threshold)
                for label, params in runs for copy in copies
                for path in sorted((folders[copy] / "data").glob("*/*.csv"))
                if not categories or path.parent.name in categories]
        if not jobs:
            sys.exit(f"no series in categories {sorted(categories)}")
        jobs.sort(key=lambda job: -Path(job[3]).stat().st_size)  # longest first
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(score_file, jobs, chunksize=1))
    totals: dict[tuple[str, str], list[int]] = {}
    for label, copy, report in results:
        total = totals.setdefault((label, copy), [0, 0, 0, 0])
        total[0] += report["hits"]
        total[1] += report["windows"]
        total[2] += report["false_alerts"]
        total[3] += report["scored_rows"]
    print(f"metric kind {args.metric_kind}, threshold {args.threshold}: "
          "recall / false alert episodes per 10k rows")
    print("| setting | " + " | ".join(copies) + " | windows caught, false episodes vs defaults |")
    print("|---" * (len(copies) + 2) + "|")
    for label, _ in runs:
        cells, caught, false = [], 0, 0
        for copy in copies:
            hits, windows, alerts, rows = totals[(label, copy)]
            base = totals[("defaults", copy)]
            caught += hits - base[0]
            false += alerts - base[2]
            cells.append(f"{hits / max(windows, 1):.3f} / {1e4 * alerts / max(rows, 1):.1f}")
        delta = "" if label == "defaults" else f"{caught:+d}, {false:+d}"
        print(f"| {label} | " + " | ".join(cells) + f" | {delta} |")


if __name__ == "__main__":
    main()
