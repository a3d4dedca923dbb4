"""Score a kept incident-benchmark run's metric series again, with other detector params.

A full ``run.py`` takes minutes; the detectors see only the finalized metric series, which
``run.py --database sqlite:////tmp/run.db`` keeps. This replays every watched series through
the production detector and rules (``detector_for`` / ``rules_for`` of the bench's data set,
score before learn, the window's record count as ``n``, as ``SeriesScorer`` does) with the
given params over the defaults, and counts recall and precision with ``run.py``'s own code:
seconds per variant.

    .venv/bin/python bench/incidents/run.py --seed 23 --database sqlite:////tmp/run23.db
    .venv/bin/python bench/incidents/replay.py sqlite:////tmp/run23.db --seed 23
    .venv/bin/python bench/incidents/replay.py sqlite:////tmp/run23.db --seed 23 \\
        --param distribution.:repeat_runs=1 --param '*:spike_memory=2'

``--param PREFIX:NAME=VALUE`` sets a param of the series whose metric starts with PREFIX
(whatever its detector: ``volume.records:count_run=1`` reaches the seasonal one); ``*``
means every adaptive series, except where the metric's own defaults set that param
(``volume.late_records`` keeps its rules off). Without ``--param`` the replay must reproduce
the stored flags exactly ("changed flags 0") when run by the code that made the run: that
is the check that the replay is faithful. ``--seed``, ``--rate``, ``--window`` and the
plan's days must be the run's own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson  # noqa: E402
import run as bench  # noqa: E402
from sqlalchemy import select  # noqa: E402

from dqpulse.detectors.base import create  # noqa: E402
from dqpulse.detectors.scoring import detector_for, rules_for  # noqa: E402
from dqpulse.records import SHARE_OF  # noqa: E402
from dqpulse.spec import DatasetSpec, parse_spec  # noqa: E402
from dqpulse.store.db import make_engine  # noqa: E402
from dqpulse.store.tables import metric_points  # noqa: E402


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(text.lower(), text)


def parse_param(text: str) -> tuple[str, str, Any]:
    prefix, sep, assignment = text.partition(":")
    name, eq, value = assignment.partition("=")
    if not sep or not eq or not name:
        raise argparse.ArgumentTypeError(f"--param wants PREFIX:NAME=VALUE, got {text!r}")
    return prefix, name, _value(value)


class Replayed:
    """One series' production detector and rules (``detector_for`` / ``rules_for`` of
    ``spec``) with ``overrides`` over the defaults; :meth:`flag` scores a window before
    learning it, as ``SeriesScorer`` does. ``*`` overrides every adaptive series' param
    unless the metric's own defaults set it."""

    def __init__(self, spec: DatasetSpec, metric: str, field: str,
                 overrides: Sequence[tuple[str, str, Any]]) -> None:
        name, params = detector_for(spec, metric, field)
        params = {**params, **{key: value for prefix, key, value in overrides
                               if (prefix == "*" and name == "adaptive" and key not in params)
                               or (prefix != "*" and metric.startswith(prefix))}}
        self.model = create(name, **params)
        self.rules = rules_for(spec, metric, field)

    def flag(self, x: dict[str, Any]) -> bool:
        results = [(self.model, self.model.score_one(x))] + [
            (rule, rule.score_one(x)) for rule in self.rules]
        self.model.learn_one(x)
        return any(detector.is_anomalous(score) for detector, score in results)


def load_counts(database: str) -> dict[tuple[str, str, float], float]:
    """The count of values each point is a share or a statistic of, where its stored
    explanation names one (``SHARE_OF``; runs kept before session 54 stored none for a
    field's mean and median: those replay on the window's record count)."""
    counts: dict[tuple[str, str, float], float] = {}
    engine = make_engine(database)
    with engine.connect() as conn:
        rows = conn.execute(
            select(metric_points.c.metric, metric_points.c.field, metric_points.c.window_start,
                   metric_points.c.explanation)
            .where(metric_points.c.dataset == bench.DATASET))
        for metric, field, start, explanation in rows:
            if isinstance(explanation, str | bytes):
                explanation = orjson.loads(explanation)
            of = explanation.get(SHARE_OF) if isinstance(explanation, dict) else None
            if isinstance(of, int | float):
                counts[(metric, field, start)] = float(of)
    engine.dispose()
    return counts


def replay(series: bench.Series, overrides: Sequence[tuple[str, str, Any]],
           counts: dict[tuple[str, str, float], float] | None = None
           ) -> tuple[bench.Series, int]:
    """Every series scored again (score before learn); returns them and how many flags
    differ from the stored ones."""
    spec = parse_spec(bench.SPEC, source="bench-incidents.yaml").datasets[0]
    records = {t: v for t, v, _ in series.get(("volume.records", ""), [])}
    scored: bench.Series = {}
    changed = 0
    for (metric, field), points in series.items():
        replayed = Replayed(spec, metric, field, overrides)
        out = []
        for t, value, stored in points:
            n = (counts or {}).get((metric, field, t), records.get(t))
            flag = replayed.flag({"value": value, "t": t, "n": n})
            changed += flag != stored
            out.append((t, value, flag))
        scored[(metric, field)] = out
    return scored, changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("database", help="SQLite URL of a run.py --database run")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--warmup-days", type=float, default=8.0)
    parser.add_argument("--test-days", type=float, default=6.0)
    parser.add_argument("--per-kind", type=int, default=4)
    parser.add_argument("--window", type=float, default=300.0,
                        help="the run's window width in seconds (run.py --window)")
    parser.add_argument("--param", type=parse_param, action="append", default=[],
                        metavar="PREFIX:NAME=VALUE")
    args = parser.parse_args(argv)
    try:
        bench.set_window(args.window)
    except ValueError as exc:
        parser.error(str(exc))
    cfg = bench.Config(warmup_days=args.warmup_days, test_days=args.test_days,
                       per_kind=args.per_kind, seed=args.seed, baseline_windows=24,
                       rate=args.rate)
    injections = bench.plan_injections(cfg)
    series = bench.load_series(args.database)
    if not series:
        sys.exit(f"no watched series of {bench.DATASET!r} in {args.database}")
    scored, changed = replay(series, args.param, load_counts(args.database))
    test_start = bench.START + cfg.warmup_days * 86400.0
    test_end = test_start + cfg.test_days * 86400.0
    scores = bench.evaluate(bench.dqpulse_alerts(scored), injections, test_start, test_end)
    delays = scores.delays()
    found = len(delays)
    total = found + sum(scores.missed.values())
    median = f"{statistics.median(delays):.1f}" if delays else "-"
    print(f"changed flags {changed}; recall {found}/{total} = {found / total:.3f}; "
          f"precision by episode {scores.true_episodes}/{scores.episodes} = "
          f"{scores.precision:.3f}; by window {scores.true_alert_windows}/"
          f"{scores.alert_windows} = {scores.window_precision:.3f}; median delay "
          f"{median} windows (mean {sum(delays) / max(found, 1):.2f})")
    print(f"missed: {scores.missed or 'none'}")
    for key, count in sorted(scores.false_series.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  false windows {count:4d}  {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
