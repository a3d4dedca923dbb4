"""What finalizing one window costs Postgres, per series: the four writes of a window.

On a throwaway database at Alembic head (the local stack's Postgres), ``--windows``
windows of ``--series`` metric points each (event times today: a real day partition),
each in its own transaction, timed step by step:

- ``insert``: the points (``metrics.create_window`` without its rollups);
- ``rollup_add``: the window added to its hour and day buckets (``rollups.add_window``);
- ``update``: the scores set on the points (``metrics.update_scores`` without rollups);
- ``rollup_scores``: the buckets' highest score and band (``rollups.add_scores``);

and, on alternate windows, the score update written out as one ``UPDATE ... FROM
unnest(...)`` statement (``update_unnest``). Before issue 16, ``update_scores`` and
``add_scores`` ran one UPDATE per point (an executemany), so on an older tree the pair
compares the two; since then ``update`` is that statement too. Medians after the first
``--warmup`` windows, in ms per window and us per series.

Usage: ``eval "$(deploy/local/stack env)"; .venv/bin/python bench/finalize_writes.py
--series 150,300,600``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import workload as wl  # noqa: E402

UNNEST_UPDATE = """
UPDATE metric_points AS m SET score = u.score, anomalous = u.anomalous,
       explanation = u.explanation
FROM unnest(CAST(:metrics AS text[]), CAST(:fields AS text[]), CAST(:scores AS float8[]),
            CAST(:anomalous AS bool[]), CAST(:explanations AS jsonb[]))
     AS u(metric, field, score, anomalous, explanation)
WHERE m.dataset = :dataset AND m.window_start = :window_start
  AND m.metric = u.metric AND m.field = u.field
"""


def measure(url: str, series: int, windows: int, warmup: int) -> dict[str, Any]:
    from sqlalchemy import text

    from dqpulse.records import MetricPoint
    from dqpulse.store import metrics as metric_store
    from dqpulse.store import rollups
    from dqpulse.store.db import make_engine

    engine = make_engine(url, pool_size=1)
    steps: dict[str, list[float]] = {"insert": [], "rollup_add": [], "update": [],
                                     "update_unnest": [], "rollup_scores": []}
    base = time.time() // 86400 * 86400 + 3600 * (series % 20)  # today, apart per size
    add_window, add_scores = rollups.add_window, rollups.add_scores
    try:
        for w in range(windows):
            start = base + 10 * w
            points = [MetricPoint(metric=f"m{i % 15:02d}", field=f"f{i // 15:03d}",
                                  value=float(i)) for i in range(series)]
            scores = [(p.metric, p.field, 0.1, False,
                       {"expected_low": 1.0, "expected_high": 2.0}) for p in points]
            marks = [time.perf_counter()]
            with engine.begin() as conn:
                rollups.add_window = lambda *a, **k: None
                metric_store.create_window(conn, dataset="d", window_start=start,
                                           window_end=start + 10, points=points)
                rollups.add_window = add_window
                marks.append(time.perf_counter())
                rollups.add_window(conn, dataset="d", window_start=start, points=points)
                marks.append(time.perf_counter())
                if w % 2 == 0:
                    rollups.add_scores = lambda *a, **k: None
                    metric_store.update_scores(conn, dataset="d", window_start=start,
                                               scores=scores)
                    rollups.add_scores = add_scores
                else:
                    conn.execute(text(UNNEST_UPDATE), {
                        "metrics": [s[0] for s in scores], "fields": [s[1] for s in scores],
                        "scores": [s[2] for s in scores], "anomalous": [s[3] for s in scores],
                        "explanations": [json.dumps(s[4]) for s in scores],
                        "dataset": "d", "window_start": start})
                marks.append(time.perf_counter())
                rollups.add_scores(conn, dataset="d", window_start=start, scores=scores)
                marks.append(time.perf_counter())
            if w >= warmup:
                update = "update" if w % 2 == 0 else "update_unnest"
                for name, (a, b) in zip(("insert", "rollup_add", update, "rollup_scores"),
                                        zip(marks, marks[1:]), strict=True):
                    steps[name].append(1000 * (b - a))
    finally:
        rollups.add_window, rollups.add_scores = add_window, add_scores
        engine.dispose()
    ms = {k: round(statistics.median(v), 1) for k, v in steps.items() if v}
    per_window = ms["insert"] + ms["rollup_add"] + ms["update"] + ms["rollup_scores"]
    return {"series": series, "ms_per_window": ms,
            "ms_per_window_total": round(per_window, 1),
            "us_per_series": round(1000 * per_window / series, 1),
            "rows_written_per_window": 6 * series}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", default="150,300,600")
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=6)
    args = parser.parse_args()
    admin = os.environ.get("DQPULSE_DATABASE_URL", wl.DEFAULT_PG)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "load_before": load, "runs": []}
    for series in (int(x) for x in args.series.split(",")):
        url = wl.create_database(admin, "dqpulse_fwrites")
        try:
            report["runs"].append(measure(url, series, args.windows, args.warmup))
        finally:
            wl.drop_database(admin, url)
        print(json.dumps(report["runs"][-1]), file=sys.stderr)
    report["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
