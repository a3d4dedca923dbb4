"""Score a kept foreign-stream run's watched series again, with other detector params.

``foreign_stream.py`` takes 3-15 minutes a run; the detectors see only the finalized
metric series, which ``foreign_stream.py --database sqlite:////tmp/run.db`` keeps. This
replays every watched series of the run through the production detector and rules
(``detector_for`` / ``rules_for`` of the stream's data set, score before learn, the
window's record count as ``n``, or the count of values a share is of where its stored
explanation names one, as ``SeriesScorer`` does) with the given params over the
defaults, and counts recall and false alert episodes with ``foreign_stream.py``'s own
code: seconds per variant.

    .venv/bin/python bench/foreign_stream.py --stream clicks --seed 6 --window 60 \\
        --database sqlite:////tmp/c6.db
    .venv/bin/python bench/foreign_replay.py sqlite:////tmp/c6.db --stream clicks \\
        --seed 6 --window 60
    .venv/bin/python bench/foreign_replay.py sqlite:////tmp/c6.db --stream clicks \\
        --seed 6 --window 60 --param distribution.mean:repeat_windows=1440

``--param PREFIX:NAME=VALUE`` as in ``bench/incidents/replay.py``. Without ``--param``
the replay must reproduce the stored flags ("changed flags 0") when run by the code that
made the run: that is the check that the replay is faithful (runs kept before session 52
stored no count of values for ``distribution.unseen_share``: its replay counts it on the
records and is not faithful there; ``--leave-out distribution.unseen_share``; runs kept
before session 54 stored no count of values for a field's mean and quantiles either: their
replay counts them from the window's records and the field's null ratio, which is the
count the run would have stored). ``--seed``,
``--window`` and the plan's days must be the run's own.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "incidents"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import foreign_stream as foreign  # noqa: E402
from replay import Replayed, parse_param  # noqa: E402

from dqpulse.detectors.scoring import _OF_VALUES as OF_VALUES  # noqa: E402
from dqpulse.finalize.watch import is_watched  # noqa: E402
from dqpulse.records import SHARE_OF  # noqa: E402
from dqpulse.spec import DatasetSpec, parse_spec  # noqa: E402
from dqpulse.store.db import make_engine  # noqa: E402
from dqpulse.store.tables import metric_points  # noqa: E402

#: (window start, value, stored flag, the count of values a share is of, or None)
Point = tuple[float, float | None, bool, float | None]


def load(database: str, stream: foreign.Stream, spec: DatasetSpec
         ) -> tuple[dict[tuple[str, str], list[Point]], dict[float, float]]:
    """The run's watched series in window order, and its record count per window."""
    series: dict[tuple[str, str], list[Point]] = defaultdict(list)
    records: dict[float, float] = {}
    nulls: dict[tuple[str, float], float] = {}
    engine = make_engine(database)
    with engine.connect() as conn:
        rows = conn.execute(
            select(metric_points.c.metric, metric_points.c.field,
                   metric_points.c.window_start, metric_points.c.value,
                   metric_points.c.anomalous, metric_points.c.explanation)
            .where(metric_points.c.dataset == stream.dataset)
            .order_by(metric_points.c.window_start))
        for metric, field, start, value, anomalous, explanation in rows:
            if metric == "volume.records" and not field and value is not None:
                records[start] = value
            if metric == "completeness.null_ratio" and value is not None:
                nulls[(field, start)] = value
            if not is_watched(spec, metric, field):
                continue
            if isinstance(explanation, str | bytes):
                explanation = orjson.loads(explanation)
            of = explanation.get(SHARE_OF) if isinstance(explanation, dict) else None
            series[(metric, field)].append(
                (start, value, bool(anomalous), of if isinstance(of, int | float) else None))
    engine.dispose()
    for (metric, field), points in series.items():
        if metric in OF_VALUES:  # a run kept before its points stored their count
            series[(metric, field)] = [
                (t, value, flag, of if of is not None or (field, t) not in nulls
                 else float(round(records.get(t, 0.0) * (1.0 - nulls[(field, t)]))))
                for t, value, flag, of in points]
    return series, records


def replay(spec: DatasetSpec, series: dict[tuple[str, str], list[Point]],
           records: dict[float, float], overrides: Sequence[tuple[str, str, Any]]
           ) -> tuple[dict[float, set[str]], Counter[str]]:
    """Every series scored again: the alert windows (window start -> series), and how
    many flags of each series differ from the stored ones."""
    alerts: dict[float, set[str]] = defaultdict(set)
    changed: Counter[str] = Counter()
    for (metric, field), points in series.items():
        replayed = Replayed(spec, metric, field, overrides)
        for t, value, stored, of in points:
            flag = replayed.flag(
                {"value": value, "t": t, "n": of if of is not None else records.get(t)})
            changed[f"{metric}|{field}"] += flag != stored
            if flag:
                alerts[t].add(f"{metric}|{field}")
    return alerts, changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("database", help="SQLite URL of a foreign_stream.py --database run")
    parser.add_argument("--stream", choices=sorted(foreign.STREAMS), required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--window", type=float, default=300.0)
    parser.add_argument("--warmup-days", type=float, default=4.0)
    parser.add_argument("--test-days", type=float, default=3.0)
    parser.add_argument("--per-kind", type=int, default=2)
    parser.add_argument("--param", type=parse_param, action="append", default=[],
                        metavar="PREFIX:NAME=VALUE")
    parser.add_argument("--leave-out", action="append", default=[], metavar="METRIC",
                        help="leave this metric's series out (e.g. one the kept run cannot "
                             "replay faithfully)")
    args = parser.parse_args(argv)
    stream = foreign.STREAMS[args.stream]
    spec = parse_spec(stream.spec.format(window=int(args.window)),
                      source="foreign.yaml").datasets[0]
    test_start = foreign.START + args.warmup_days * 86400.0
    injections = foreign.plan(args.seed, test_start, args.test_days, args.per_kind,
                              args.window, False, stream.topic)
    series, records = load(args.database, stream, spec)
    series = {key: points for key, points in series.items() if key[0] not in args.leave_out}
    if not series:
        sys.exit(f"no watched series of {stream.dataset!r} in {args.database}")
    alerts, changed = replay(spec, series, records, args.param)
    tested = {t: names for t, names in alerts.items() if t >= test_start}
    result = foreign.count_alerts(tested, injections, args.window)
    delays: dict[str, list[int]] = result["caught"]  # type: ignore[assignment]
    caught = sum(len(windows) for windows in delays.values())
    print(f"changed flags {changed.total()}; caught {caught}/{len(injections)}; missed "
          f"{result['missed'] or 'none'}; false alert episodes {result['false_episodes']} "
          f"in {args.test_days:g} days")
    print(f"  delays (windows) {delays}")
    print(f"  by series {result['by_series']}")
    if changed.total():
        print(f"  changed flags by series {(+changed).most_common(8)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
