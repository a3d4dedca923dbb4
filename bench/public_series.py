"""Detectors on public labelled series (NAB) and on the incident benchmark, side by side.

Runs ``series_eval.py`` (the shared scorer: recall of labelled windows, false alert episodes
per 10k rows, ties at 1.0, median delay, a threshold sweep) on a corpus of
``timestamp,value`` series for each detector configuration below, through the real CLI
(``dqpulse detect --csv``), and optionally the incident benchmark (``bench/incidents``).

    .venv/bin/python bench/public_series.py                         # NAB (visible part)
    .venv/bin/python bench/public_series.py --incidents --write-docs
    .venv/bin/python bench/public_series.py --resample 3600 --only "detect's"   # hourly means
    .venv/bin/python bench/public_series.py --nudge 5 --only "detect's"   # the noise floor
    .venv/bin/python bench/public_series.py --restarts 2200 --only "detect's"  # young series

``--resample`` scores a copy of the corpus with every series averaged over buckets of that
many seconds (the labels unchanged): the same days at a coarser step, a check that the
detectors do not depend on the corpus' 5-minute step (NAB's held-out categories include
30-minute and hourly series). ``--drop SHARE --jitter SECONDS`` scores a copy with a seeded
share of rows left out and timestamps moved (irregular sampling with gaps, as in NAB's
traffic series). ``--outages N`` leaves out N seeded stretches of 1 to 24 hours per series,
away from the labelled windows and the slack after them (a collector down for hours, as in
NAB's ad-exchange series): what changes is how the detector takes a gap, not which
anomalies are there to find. ``--head ROWS`` scores each series' first ROWS rows only,
with the labelled windows that end inside them (young series: NAB's held-out traffic,
ad-exchange and rogue-agent series have 1,100-2,500 rows, the visible ones 4,000-16,000).
``--restarts ROWS`` scores each series restarted at rows 0, 1,000, 2,000 and 3,000 for
ROWS rows each (the windows whose labelled point is inside, cut to the part), as one
corpus: more young series than ``--head``, with their windows, and the detector's first
days at different places of each series (NAB's probation covers the first 15 % of a
series, at most 750 rows: on the series in full a detector's first two or three days at
5-minute steps are never scored).
``--nudge N`` scores N copies that each differ from the corpus by one row per series,
repeated one second after itself at a seeded place past the probation, and prints the
spread: how far the figures move under a change that holds no information, the noise
floor under any difference between two configurations or corpora.

Configurations are per metric kind (the production defaults of ``--metric-kind``) or a
named detector with its own defaults: never tuned per series.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EVAL = SHARED / "tools" / "series_eval.py"
CORPUS = SHARED / "data" / "nab-visible"
# the checkout's own venv, else the dqpulse next to this interpreter (a shared venv running
# this checkout through PYTHONPATH)
DQPULSE = next((p for p in (ROOT / ".venv" / "bin" / "dqpulse",
                            Path(sys.executable).parent / "dqpulse") if p.exists()),
               ROOT / ".venv" / "bin" / "dqpulse")

CONFIGS = {
    "adaptive, distribution defaults (detect's default)": "--metric-kind distribution",
    "adaptive, volume.bytes defaults (count floor)": (
        "--detector adaptive --param lower=0 --param count_noise=1"),
    "seasonal, volume.records defaults": "--metric-kind volume",
    "seasonal, plain": "--detector seasonal",
    "robust, two-sided": "--detector robust",
}
DOC_BEGIN = "<!-- public-series:begin -->"
DOC_END = "<!-- public-series:end -->"


Rows = list[tuple[float, str]]  # (epoch seconds, value as written)


def _stamp(text: str) -> float:
    """Epoch seconds of a corpus timestamp (naive ISO-8601, read as UTC)."""
    return dt.datetime.fromisoformat(text.strip()).replace(tzinfo=dt.UTC).timestamp()


def _rewrite(corpus: Path, into: Path, transform: Callable[[str, Rows], Rows]) -> Path:
    """A copy of ``corpus`` (labels unchanged) with each series' rows passed through
    ``transform`` (with the series' key in labels.json); timestamps are written to the
    second."""
    shutil.copy(corpus / "labels.json", into / "labels.json")
    for path in sorted((corpus / "data").glob("*/*.csv")):
        with open(path, newline="") as handle:
            rows = [(_stamp(row[0]), row[1]) for row in list(csv.reader(handle))[1:] if row]
        (into / "data" / path.parent.name).mkdir(parents=True, exist_ok=True)
        with open(into / "data" / path.parent.name / path.name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["timestamp", "value"])
            for stamp, value in transform(f"{path.parent.name}/{path.name}", rows):
                writer.writerow([dt.datetime.fromtimestamp(int(stamp), dt.UTC)
                                 .strftime("%Y-%m-%d %H:%M:%S"), value])
    return into


def resample(corpus: Path, seconds: int, into: Path) -> Path:
    """A copy of ``corpus`` with each series' values averaged per bucket of ``seconds``
    (a bucket is stamped with its start; buckets without rows are left out)."""

    def means(_: str, rows: Rows) -> Rows:
        buckets: dict[int, list[float]] = {}
        for stamp, value in rows:
            buckets.setdefault(int(stamp) // seconds * seconds, []).append(float(value))
        return [(start, repr(sum(values) / len(values)))
                for start, values in sorted(buckets.items())]

    return _rewrite(corpus, into, means)


def thin(corpus: Path, drop: float, jitter: int, into: Path, seed: int = 11) -> Path:
    """A copy of ``corpus`` with a seeded share ``drop`` of each series' rows left out and
    every timestamp moved by up to ``jitter`` seconds either way (order kept): irregular
    sampling with gaps, as in NAB's traffic and ad-exchange series (labels unchanged)."""
    rng = random.Random(seed)

    def irregular(_: str, rows: Rows) -> Rows:
        kept: Rows = []
        last = -float("inf")
        for stamp, value in rows:
            if rng.random() < drop:
                continue
            last = max(stamp + rng.uniform(-jitter, jitter), last + 1)
            kept.append((last, value))
        return kept

    return _rewrite(corpus, into, irregular)


def outages(corpus: Path, count: int, into: Path, seed: int = 5,
            hours: tuple[float, float] = (1.0, 24.0)) -> Path:
    """A copy of ``corpus`` with ``count`` seeded stretches of ``hours`` left out of each
    series, after its first fifth (the probation and warm-up stay whole) and clear of every
    labelled window and the slack after it (one window length)."""
    rng = random.Random(seed)
    labels = json.loads((corpus / "labels.json").read_text())

    def gapped(key: str, rows: Rows) -> Rows:
        if not rows:
            return rows
        guarded = [(_stamp(a), _stamp(b) + (_stamp(b) - _stamp(a))) for a, b in labels.get(key, [])]
        first, last = rows[0][0], rows[-1][0]
        cuts: list[tuple[float, float]] = []
        for _ in range(1000):  # draws that hit a window are drawn again
            if len(cuts) == count:
                break
            start = rng.uniform(first + 0.2 * (last - first), last)
            end = start + rng.uniform(*hours) * 3600.0
            if all(end < a or start > b for a, b in guarded):
                cuts.append((start, end))
        return [(t, v) for t, v in rows if not any(a <= t <= b for a, b in cuts)]

    return _rewrite(corpus, into, gapped)


def head(corpus: Path, rows_kept: int, into: Path) -> Path:
    """A copy of ``corpus`` with each series cut to its first ``rows_kept`` rows, keeping
    the labelled windows that end by its last row."""
    ends: dict[str, float] = {}

    def first(key: str, rows: Rows) -> Rows:
        kept = rows[:rows_kept]
        if kept:
            ends[key] = kept[-1][0]
        return kept

    _rewrite(corpus, into, first)
    labels = json.loads((corpus / "labels.json").read_text())

    kept_labels = {key: [w for w in windows if key in ends and _stamp(w[1]) <= ends[key]]
                   for key, windows in labels.items()}
    (into / "labels.json").write_text(json.dumps(kept_labels, indent=1))
    return into


def restarts(corpus: Path, rows_kept: int, into: Path,
             starts: tuple[int, ...] = (0, 1000, 2000, 3000)) -> Path:
    """A corpus of young series: each series restarted at each of ``starts`` (its rows
    ``[start, start + rows_kept)``, as ``<name>@<start>.csv``; a part with fewer than half
    of ``rows_kept`` rows is left out), with the labelled windows whose centre (NAB's
    anomaly point) lies inside, cut to the part. Scored as one corpus: the detector starts
    on each part knowing nothing, at a different place of the same series."""
    labels = json.loads((corpus / "labels.json").read_text())
    kept_labels: dict[str, list[list[str]]] = {}
    for path in sorted((corpus / "data").glob("*/*.csv")):
        with open(path, newline="") as handle:
            header, *rows = [row for row in csv.reader(handle) if row]
        key = f"{path.parent.name}/{path.name}"
        for start in starts:
            part = rows[start:start + rows_kept]
            if len(part) < rows_kept / 2:
                continue
            name = f"{path.parent.name}/{path.stem}@{start}.csv"
            (into / "data" / path.parent.name).mkdir(parents=True, exist_ok=True)
            with open(into / "data" / name, "w", newline="") as handle:
                csv.writer(handle).writerows([header, *part])
            first, last = _stamp(part[0][0]), _stamp(part[-1][0])
            kept_labels[name] = [
                [a if _stamp(a) >= first else part[0][0], b if _stamp(b) <= last else part[-1][0]]
                for a, b in labels.get(key, []) if first <= (_stamp(a) + _stamp(b)) / 2 <= last]
    (into / "labels.json").write_text(json.dumps(kept_labels, indent=1))
    return into


def nudge(corpus: Path, into: Path, seed: int) -> Path:
    """A copy of ``corpus`` with one row of each series repeated one second after itself,
    at a seeded place past the scorer's probation (15 % of the rows, at most 750)."""
    rng = random.Random(seed)

    def repeated(_: str, rows: Rows) -> Rows:
        if len(rows) < 3:
            return rows
        start = min(int(0.15 * len(rows)), 750)
        at = rng.randrange(start, len(rows) - 1)
        stamp, value = rows[at]
        if rows[at + 1][0] - stamp <= 1.0:
            return rows
        return [*rows[:at + 1], (stamp + 1.0, value), *rows[at + 1:]]

    return _rewrite(corpus, into, repeated)


def spread(reports: list[dict[str, object]]) -> str:
    """min / median / max of recall and false alerts per 10k over ``reports``."""
    def overall(report: dict[str, object], field: str) -> float:
        block = report["overall"]
        assert isinstance(block, dict)
        return float(block[field])

    parts = []
    for field in ("recall", "false_alerts_per_10k"):
        values = sorted(overall(r, field) for r in reports)
        parts.append(f"{field} {values[0]:g} / {values[len(values) // 2]:g} / {values[-1]:g}")
    return "min / median / max over the nudged copies: " + ", ".join(parts)


def evaluate(name: str, flags: str, corpus: Path, jobs: int) -> dict[str, object]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, str(EVAL), "--corpus", str(corpus), "--jobs", str(jobs),
               "--json-out", out.name, "--cmd", f"{DQPULSE} detect --csv {{csv}} {flags}"]
        print(f"== {name}: {' '.join(cmd[-2:])}", flush=True)
        subprocess.run(cmd, check=True)
        report: dict[str, object] = json.loads(Path(out.name).read_text())
    return report


def table(results: dict[str, dict[str, object]]) -> str:
    lines = ["| configuration | recall | false alerts / 10k rows | median delay | ties at 1.0 |"
             " sweep (threshold: recall / false per 10k) |",
             "|---|---|---|---|---|---|"]
    for name, report in results.items():
        overall = report["overall"]
        assert isinstance(overall, dict)
        sweep = report["sweep"]
        assert isinstance(sweep, dict)
        swept = ", ".join(f"{t}: {v['recall']} / {v['false_alerts_per_10k']}"
                          for t, v in sweep.items() if t in ("0.7", "0.8", "0.9", "0.95", "0.99"))
        lines.append(f"| {name} | {overall['recall']} | {overall['false_alerts_per_10k']} | "
                     f"{overall['median_delay']} | {100 * overall['ties_at_1']:.2f}% | {swept} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", action="append", default=[],
                        help="run only configurations whose name contains this")
    parser.add_argument("--incidents", action="store_true",
                        help="also run bench/incidents/run.py (about 5 minutes)")
    parser.add_argument("--resample", type=int, default=0, metavar="SECONDS",
                        help="score the corpus averaged over buckets of this many seconds")
    parser.add_argument("--drop", type=float, default=0.0, metavar="SHARE",
                        help="score the corpus with this share of rows left out at random")
    parser.add_argument("--jitter", type=int, default=0, metavar="SECONDS",
                        help="... and every timestamp moved by up to this many seconds")
    parser.add_argument("--outages", type=int, default=0, metavar="N",
                        help="score the corpus with N stretches of 1-24 hours left out per "
                             "series, away from the labelled windows")
    parser.add_argument("--head", type=int, default=0, metavar="ROWS",
                        help="score each series' first ROWS rows (and the windows in them)")
    parser.add_argument("--restarts", type=int, default=0, metavar="ROWS",
                        help="score each series restarted at rows 0, 1000, 2000 and 3000 "
                             "for ROWS rows each (young series, pooled)")
    parser.add_argument("--nudge", type=int, default=0, metavar="N",
                        help="score N copies, each with one row per series repeated one "
                             "second later, and print the spread of the figures")
    parser.add_argument("--write-docs", action="store_true",
                        help="replace the public-series section of docs/benchmarks.md")
    args = parser.parse_args()
    if not EVAL.exists():
        sys.exit(f"{EVAL} not found: the shared evaluation tool sits beside the checkout")
    altered = (args.resample or args.drop or args.jitter or args.outages or args.head
               or args.restarts or args.nudge)
    if altered and args.write_docs:
        sys.exit("--write-docs writes the corpus' own figures: not with --resample, --drop, "
                 "--jitter, --outages, --head, --restarts or --nudge")
    if args.nudge < 0 or args.head < 0 or args.restarts < 0:
        sys.exit("--nudge (copies), --head and --restarts (rows) are numbers >= 1")
    others = (args.resample, args.drop, args.jitter, args.outages, args.head, args.restarts)
    if args.nudge and (args.incidents or any(others)):
        sys.exit("--nudge scores nudged copies of the corpus itself: not with --incidents or "
                 "another alteration")
    if args.nudge:
        for name, flags in CONFIGS.items():
            if args.only and not any(o in name for o in args.only):
                continue
            reports = []
            for seed in range(args.nudge):
                with tempfile.TemporaryDirectory() as scratch:
                    reports.append(evaluate(f"{name}, nudged copy {seed}", flags,
                                            nudge(args.corpus, Path(scratch), seed),
                                            args.jobs))
            print(table({f"{name}, nudged copy {i}": r for i, r in enumerate(reports)}))
            print(f"{name}: {spread(reports)}")
        return
    with tempfile.TemporaryDirectory() as scratch:
        corpus = args.corpus
        if args.resample:
            corpus = resample(corpus, args.resample, Path(scratch))
        elif args.drop or args.jitter:
            corpus = thin(corpus, args.drop, args.jitter, Path(scratch))
        elif args.outages:
            corpus = outages(corpus, args.outages, Path(scratch))
        elif args.head:
            corpus = head(corpus, args.head, Path(scratch))
        elif args.restarts:
            corpus = restarts(corpus, args.restarts, Path(scratch))
        results = {name: evaluate(name, flags, corpus, args.jobs)
                   for name, flags in CONFIGS.items()
                   if not args.only or any(o in name for o in args.only)}
    md = table(results)
    print(md)
    if args.incidents:
        subprocess.run([sys.executable, str(ROOT / "bench" / "incidents" / "run.py")],
                       check=True, env={**os.environ})
    if args.write_docs:
        doc = ROOT / "docs" / "benchmarks.md"
        text = doc.read_text()
        stamp = (f"Measured {dt.date.today()} on {platform.machine()} "
                 f"({os.cpu_count()} CPUs), threshold 0.9, corpus `{args.corpus.name}` "
                 "(NAB, MIT licence; 38 series, 69 labelled windows).")
        section = f"{DOC_BEGIN}\n{stamp}\n\n{md}\n{DOC_END}"
        if DOC_BEGIN in text:
            text = re.sub(re.escape(DOC_BEGIN) + ".*?" + re.escape(DOC_END), section, text,
                          flags=re.S)
        else:
            text += f"\n## Detectors on public labelled series\n\n{section}\n"
        doc.write_text(text)


if __name__ == "__main__":
    main()
