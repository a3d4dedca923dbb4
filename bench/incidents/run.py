"""Labeled incident benchmark: dqpulse's detectors vs a mean +- 3 sigma baseline.

Runs the real pipeline (EmbeddedSource -> IngestWorker -> PartitionAggregator -> checkpoint
-> finalize_ready -> metric points -> ScoringHook: detectors, rules, incidents) on SQLite,
on a manual simulated clock, over a seasonal stream with realistic noise. After a warm-up
the stream gets the twelve incident kinds of ``INJECTION_KINDS`` plus an 80% volume drop of
exactly three windows (``short_drop``), each several times at seeded random, non-overlapping
moments, and finally one permanent level shift (``level_shift``: the rate halves for the
rest of the run, at least ``SHIFT_QUIET_DAYS`` of it). The injections are the ground truth.
A level shift counts as detected when an alert falls within its first ``SHIFT_SPAN_WINDOWS``
windows; alerts after that are false (the new level should have become the normal).

Both detectors are read from the same database and counted the same way:

* dqpulse: ``metric_points.anomalous`` as the ScoringHook stored it.
* baseline: per series of the same watched metrics (``finalize.watch.is_watched_metric``), a
  point is flagged when it leaves mean +- 3 sigma of the previous ``--baseline-windows``
  values of that series (at least half of them present).

A window *alerts* when any detected series of the dataset is anomalous in it. See
``README.md`` for how recall, delay and precision are counted.

Usage: ``.venv/bin/python bench/incidents/run.py [--quick] [--seed N] [--write-docs]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import event, select  # noqa: E402

from dqpulse.config import Settings  # noqa: E402
from dqpulse.finalize.scoring import default_hooks  # noqa: E402
from dqpulse.finalize.watch import is_watched  # noqa: E402
from dqpulse.ingest import IngestWorker  # noqa: E402
from dqpulse.sources.embedded import (  # noqa: E402
    EXTRA_INJECTION_KINDS,
    INJECTION_KINDS,
    EmbeddedSource,
    Injection,
    StreamProfile,
)
from dqpulse.spec import parse_spec  # noqa: E402
from dqpulse.store import datasets as dataset_store  # noqa: E402
from dqpulse.store.db import make_engine, upgrade_to_head  # noqa: E402
from dqpulse.store.tables import metric_points  # noqa: E402
from dqpulse.telemetry import Telemetry  # noqa: E402

DATASET = "orders"
WINDOW = 300.0           # 5-minute windows (--window sets another width)
STEP = 300.0             # the simulated clock advances one window per poll
START = 1_736_121_600.0  # Monday 2025-01-06 00:00:00Z
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Incident detection"

SPEC_TEMPLATE = """
datasets:
  - name: orders
    topic: orders
    format: json
    event_time: ts
    window: {window}s
    lateness: 30s
    owner: payments
    freshness_sla: 3m
    key: order_id
    label: is_fraud
    fields:
      amount:  {{type: number, min: 0}}
      country: {{type: string, allowed: [DE, FR, US, GB, NL, ES]}}
      email:   {{type: string, pattern: '^[^@]+@[^@]+$'}}
"""
SPEC = SPEC_TEMPLATE.format(window=300)


def set_window(seconds: float) -> None:
    """Run the bench (and its replays) with windows of ``seconds`` instead of 5 minutes.

    Durations stay counted in windows (an incident lasts 3-6 windows, a short drop exactly
    3, the level shift must alert within its first ``SHIFT_SPAN_WINDOWS``), so narrower
    windows make shorter incidents over fewer records each: the harder case. The simulated
    clock steps one window per poll as before.
    """
    global WINDOW, STEP, SPEC
    if not 60.0 <= seconds <= 3600.0 or 86400.0 % seconds:
        raise ValueError(f"--window must divide a day and lie in 60..3600 s, got {seconds:g}")
    WINDOW = STEP = float(seconds)
    SPEC = SPEC_TEMPLATE.format(window=int(seconds))

PROFILE = StreamProfile(DATASET, base_rate=1.0, partitions=2, daily_amplitude=0.6,
                        weekly_weekend_factor=0.7, noise=0.08, kind="orders",
                        level_noise=0.04, level_noise_minutes=30.0)

# (windows it lasts: low, high) per kind; a seasonal shift only shows over hours
SCHEDULED_KINDS = (*INJECTION_KINDS, "short_drop")
ALL_KINDS = (*INJECTION_KINDS, *EXTRA_INJECTION_KINDS)
DURATION_WINDOWS: dict[str, tuple[int, int]] = {kind: (3, 6) for kind in SCHEDULED_KINDS}
DURATION_WINDOWS["seasonal_shift"] = (36, 48)
DURATION_WINDOWS["short_drop"] = (3, 3)  # exactly three whole windows (start aligned)
# the permanent level shift: quiet test time after it, and the windows in which its alert
# must come, and the one alert run it may raise before it is adopted (record counts'
# seasonal detector adopts a held shift after 24 windows by default, the adaptive one after
# 12): alerting until adoption is the designed single incident, not a false alarm
SHIFT_QUIET_DAYS = 0.75
SHIFT_SPAN_WINDOWS = 26
# which field an injection hits (None: the source's default)
FIELDS: dict[str, Sequence[str | None]] = {
    "null_spike": ("amount", "country", "status", "email"),
    "distribution_shift": ("amount",),
    "category_explosion": ("country", "status"),
    "new_field": ("coupon_code", "referrer", "device"),
    "removed_field": ("email", "status", "country"),
    "type_change": ("amount",),
}
GAP_WINDOWS = 12  # clean windows at least between two incidents (1 hour)


@dataclass(frozen=True)
class Config:
    warmup_days: float
    test_days: float
    per_kind: int
    seed: int
    baseline_windows: int
    rate: float = 1.0  # the stream's mean records per second (the profile's base rate)
    # other StreamProfile fields over PROFILE's (--profile): traffic of another shape
    profile: dict[str, float] = dataclasses.field(default_factory=dict)


def plan_injections(cfg: Config) -> list[Injection]:
    """Seeded random, non-overlapping incidents over the test period."""
    rng = random.Random(cfg.seed)
    test_start = START + cfg.warmup_days * 86400.0
    shift_start = test_start + (cfg.test_days - SHIFT_QUIET_DAYS) * 86400.0
    test_end = shift_start - GAP_WINDOWS * WINDOW  # the others end before the shift
    kinds = [kind for kind in SCHEDULED_KINDS for _ in range(cfg.per_kind)]
    rng.shuffle(kinds)
    total = sum(sum(DURATION_WINDOWS[k]) / 2 + GAP_WINDOWS for k in kinds) * WINDOW
    span = test_end - test_start - 2 * GAP_WINDOWS * WINDOW
    if total > span:
        raise SystemExit(f"{len(kinds)} incidents do not fit into {cfg.test_days} test days")
    # random slack between incidents: a random partition of the free time
    slack = span - total
    cuts = sorted(rng.random() * slack for _ in kinds)
    injections = []
    cursor = test_start + GAP_WINDOWS * WINDOW
    previous_cut = 0.0
    for kind, cut in zip(kinds, cuts, strict=True):
        cursor += cut - previous_cut
        previous_cut = cut
        low, high = DURATION_WINDOWS[kind]
        length = rng.uniform(low, high) * WINDOW
        start = cursor
        if kind == "short_drop":
            start = math.ceil(cursor / WINDOW) * WINDOW
        field = rng.choice(FIELDS[kind]) if kind in FIELDS else None
        injections.append(Injection(kind, DATASET, start, start + length, field))
        cursor = start + (sum(DURATION_WINDOWS[kind]) / 2 + GAP_WINDOWS) * WINDOW
    # one permanent level shift, window-aligned, lasting past the end of the run
    shift_start = math.floor(shift_start / WINDOW) * WINDOW
    injections.append(Injection("level_shift", DATASET, shift_start, shift_start + 365 * 86400.0,
                                None))
    return injections


def span_of(injection: Injection) -> tuple[int, int]:
    """First and last window in which an alert counts for ``injection`` (recall), the last
    one included; a level shift only counts in its first ``SHIFT_SPAN_WINDOWS``."""
    first = window_of(injection.start)
    if injection.kind == "level_shift":
        return first, first + SHIFT_SPAN_WINDOWS - 1
    return first, window_of(injection.end - 1e-6) + 1


def simulate(cfg: Config, injections: Sequence[Injection], database: str) -> dict[str, float]:
    """Run the pipeline over warm-up + test; returns timings."""
    settings = Settings(database_url=database, checkpoint_interval_s=1e9, poll_timeout_s=0.01,
                        poll_max_records=100_000, idle_partition_timeout_s=STEP,
                        worker_metrics_port=0)
    upgrade_to_head(database)
    engine = make_engine(database)

    @event.listens_for(engine, "connect")
    def _no_fsync(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # a throwaway benchmark database: durability costs a third of the run
        dbapi_conn.execute("PRAGMA synchronous=OFF")

    spec = parse_spec(SPEC, source="bench-incidents.yaml")
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=spec)
    now = [START]
    profile = dataclasses.replace(PROFILE, base_rate=cfg.rate, **cfg.profile)
    source = EmbeddedSource([profile], start=START, clock=lambda: now[0],
                            injections=injections, seed=cfg.seed)
    telemetry = Telemetry()
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, telemetry=telemetry, clock=lambda: now[0],
                          hooks=default_hooks(spec, settings, telemetry))
    worker.start()
    end = START + (cfg.warmup_days + cfg.test_days) * 86400.0 + 3 * WINDOW
    started = time.perf_counter()
    steps = 0
    while now[0] < end:
        now[0] += STEP
        worker.run_once()
        steps += 1
        if steps % int(WINDOW / STEP) == 0:
            worker.checkpoint(commit=True)
            worker.finalize_ready()
        if steps % (int(86400 / STEP)) == 0:
            day = (now[0] - START) / 86400.0
            print(f"  simulated day {day:4.1f}: {worker.stats.windows} windows, "
                  f"{worker.stats.accepted} records, {time.perf_counter() - started:6.1f}s",
                  file=sys.stderr, flush=True)
    worker.checkpoint(commit=True)
    worker.finalize_ready()
    engine.dispose()
    return {"seconds": time.perf_counter() - started, "records": float(worker.stats.accepted),
            "windows": float(worker.stats.windows)}


# -- evaluation ---------------------------------------------------------------------------
Series = dict[tuple[str, str], list[tuple[float, float | None, bool]]]


def load_series(database: str) -> Series:
    """Every series the detectors watch, as (window_start, value, anomalous) in time order."""
    spec = parse_spec(SPEC, source="bench-incidents.yaml").datasets[0]
    engine = make_engine(database)
    series: Series = defaultdict(list)
    with engine.connect() as conn:
        rows = conn.execute(
            select(metric_points.c.metric, metric_points.c.field, metric_points.c.window_start,
                   metric_points.c.value, metric_points.c.anomalous)
            .where(metric_points.c.dataset == DATASET)
            .order_by(metric_points.c.window_start))
        for metric, field, window_start, value, anomalous in rows:
            if is_watched(spec, metric, field):
                series[(metric, field)].append((window_start, value, bool(anomalous)))
    engine.dispose()
    return series


def dqpulse_alerts(series: Series) -> dict[float, set[str]]:
    alerts: dict[float, set[str]] = defaultdict(set)
    for (metric, field), points in series.items():
        for window_start, _value, anomalous in points:
            if anomalous:
                alerts[window_start].add(f"{metric}|{field}")
    return alerts


def baseline_alerts(series: Series, trailing: int) -> dict[float, set[str]]:
    """Static threshold: outside mean +- 3 sigma of the previous ``trailing`` values."""
    alerts: dict[float, set[str]] = defaultdict(set)
    for (metric, field), points in series.items():
        history: list[float | None] = []
        for window_start, value, _ in points:
            recent = [v for v in history[-trailing:] if v is not None]
            if value is not None and math.isfinite(value) and len(recent) >= trailing // 2:
                mean = statistics.fmean(recent)
                sigma = statistics.pstdev(recent)
                if abs(value - mean) > 3.0 * sigma + 1e-9 * max(1.0, abs(mean)):
                    alerts[window_start].add(f"{metric}|{field}")
            history.append(value if value is None or math.isfinite(value) else None)
    return alerts


@dataclass
class Scores:
    detected: dict[str, list[int]]          # kind -> delays (windows) of detected incidents
    chance_recall: float                    # recall of the same spans at incident-free times
    missed: dict[str, int]
    episodes: int
    true_episodes: int
    alert_windows: int
    true_alert_windows: int
    false_series: dict[str, int]            # series -> false alert windows

    def recall(self, kind: str | None = None) -> float:
        kinds = [kind] if kind else list(self.detected.keys() | self.missed.keys())
        found = sum(len(self.detected.get(k, [])) for k in kinds)
        total = found + sum(self.missed.get(k, 0) for k in kinds)
        return found / total if total else math.nan

    def delays(self, kind: str | None = None) -> list[int]:
        if kind:
            return self.detected.get(kind, [])
        return [d for values in self.detected.values() for d in values]

    @property
    def precision(self) -> float:
        return self.true_episodes / self.episodes if self.episodes else math.nan

    @property
    def window_precision(self) -> float:
        return self.true_alert_windows / self.alert_windows if self.alert_windows else math.nan


def window_of(t: float) -> int:
    return math.floor(t / WINDOW)


def evaluate(alerts: dict[float, set[str]], injections: Sequence[Injection],
             test_start: float, test_end: float) -> Scores:
    alert_windows = sorted(window_of(t) for t in alerts if test_start <= t < test_end)
    # each injection covers [start window - 1, end window + 1] for precision,
    # [start window, end window + 1] for recall
    spans = [(*span_of(i), i) for i in injections]
    detected: dict[str, list[int]] = defaultdict(list)
    missed: dict[str, int] = defaultdict(int)
    alert_set = set(alert_windows)
    for first, last, injection in spans:
        hits = [w for w in range(first, last + 1) if w in alert_set]
        if hits:
            detected[injection.kind].append(hits[0] - first)
        else:
            missed[injection.kind] += 1

    def explained(w: int) -> bool:
        return any(first - 1 <= w <= last for first, last, _ in spans)

    # how often the same spans would be "detected" by chance: slide each over the
    # incident-free test windows and count the positions holding an alert
    test_windows = range(window_of(test_start), window_of(test_end))
    quiet = [w for w in test_windows if not explained(w)]
    quiet_set = set(quiet)
    chances = []
    for first, last, _ in spans:
        length = last - first + 1
        positions = [w for w in quiet if all(v in quiet_set for v in range(w, w + length))]
        if positions:
            hits = sum(1 for w in positions
                       if any(v in alert_set for v in range(w, w + length)))
            chances.append(hits / len(positions))
    chance_recall = statistics.fmean(chances) if chances else math.nan

    # episodes: alert windows at most 2 apart (one quiet window between) belong together
    episodes: list[list[int]] = []
    for w in alert_windows:
        if episodes and w - episodes[-1][-1] <= 2:
            episodes[-1].append(w)
        else:
            episodes.append([w])
    true_episodes = sum(1 for e in episodes if any(explained(w) for w in e))
    false_series: dict[str, int] = defaultdict(int)
    for t, keys in alerts.items():
        if test_start <= t < test_end and not explained(window_of(t)):
            for key in keys:
                false_series[key] += 1
    return Scores(detected=dict(detected), chance_recall=chance_recall, missed=dict(missed),
                  episodes=len(episodes),
                  true_episodes=true_episodes, alert_windows=len(alert_windows),
                  true_alert_windows=sum(1 for w in alert_windows if explained(w)),
                  false_series=dict(false_series))


# -- report -------------------------------------------------------------------------------
def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def _median(values: list[int]) -> float:
    return float(statistics.median(values)) if values else math.nan


def report(ours: Scores, base: Scores, injections: Sequence[Injection], cfg: Config,
           timings: dict[str, float], baseline_windows: int) -> str:
    counts: dict[str, int] = defaultdict(int)
    for injection in injections:
        counts[injection.kind] += 1
    lines = [
        "| incident type | n | dqpulse recall | dqpulse median delay | baseline recall "
        "| baseline median delay |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in ALL_KINDS:
        lines.append(
            f"| {kind} | {counts[kind]} | {_fmt(ours.recall(kind))} "
            f"| {_fmt(_median(ours.delays(kind)), 1)} | {_fmt(base.recall(kind))} "
            f"| {_fmt(_median(base.delays(kind)), 1)} |")
    lines += [
        "",
        "| overall | dqpulse | baseline |",
        "|---|---:|---:|",
        f"| recall | {_fmt(ours.recall())} | {_fmt(base.recall())} |",
        f"| recall by chance (same spans, incident-free times) | {_fmt(ours.chance_recall)} "
        f"| {_fmt(base.chance_recall)} |",
        f"| precision (alert episodes) | {_fmt(ours.precision)} ({ours.true_episodes}/"
        f"{ours.episodes}) | {_fmt(base.precision)} ({base.true_episodes}/{base.episodes}) |",
        f"| precision (alert windows) | {_fmt(ours.window_precision)} "
        f"({ours.true_alert_windows}/{ours.alert_windows}) | {_fmt(base.window_precision)} "
        f"({base.true_alert_windows}/{base.alert_windows}) |",
        f"| median delay (windows) | {_fmt(_median(ours.delays()), 1)} "
        f"| {_fmt(_median(base.delays()), 1)} |",
        f"| false alert windows | {ours.alert_windows - ours.true_alert_windows} "
        f"| {base.alert_windows - base.true_alert_windows} |",
    ]
    setup = (
        f"{len(injections)} incidents ({cfg.per_kind} per type, one level shift) over "
        f"{cfg.test_days:g} test days after {cfg.warmup_days:g} warm-up days; "
        f"{WINDOW / 60:g}-minute windows ({int(cfg.test_days * 86400 / WINDOW)} test windows), "
        f"seed {cfg.seed}"
        + "".join(f", {key} {value:g}" for key, value in sorted(cfg.profile.items())) + "; "
        f"{timings['records']:.0f} records, {timings['windows']:.0f} windows through the "
        f"pipeline in {timings['seconds']:.0f} s; baseline: mean +- 3 sigma over the "
        f"previous {baseline_windows} windows of each series.")
    return setup + "\n\n" + "\n".join(lines)


def write_docs(table: str, command: str) -> None:
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}, " \
              f"Python {platform.python_version()}"
    try:
        import os
        machine += f", {os.cpu_count()} cores"
    except Exception:  # noqa: BLE001, S110
        pass
    body = (
        f"{SECTION}\n\n"
        f"`{command}` on {machine}, {datetime.now(UTC):%Y-%m-%d}. "
        "Labeled incidents injected into the embedded source, run through the real pipeline "
        "(ingest -> metric engine -> detectors) on SQLite with a simulated clock; how recall, "
        "delay and precision are counted: `bench/incidents/README.md`.\n\n"
        f"{table}\n"
    )
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        following = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + ("" if following == -1 else "\n" + text[following + 1:])
    DOCS.write_text(text)


_PROFILE_FIELDS = ("daily_amplitude", "weekly_weekend_factor", "noise", "level_noise",
                   "level_noise_minutes")


def _profile_field(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if name not in _PROFILE_FIELDS:
        raise argparse.ArgumentTypeError(
            f"--profile wants one of {', '.join(_PROFILE_FIELDS)}=VALUE, got {text!r}")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--profile {name}: {value!r} is not a number") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="shorter run: 2 incidents per type over 2 test days")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--warmup-days", type=float, default=None)
    parser.add_argument("--test-days", type=float, default=None)
    parser.add_argument("--per-kind", type=int, default=None)
    parser.add_argument("--rate", type=float, default=1.0,
                        help="mean records per second of the stream (1.0: ~300 a window)")
    parser.add_argument("--profile", type=_profile_field, action="append", default=[],
                        metavar="FIELD=VALUE",
                        help="traffic of another shape: a numeric StreamProfile field "
                             "(daily_amplitude, weekly_weekend_factor, noise, level_noise, "
                             "level_noise_minutes) over the default")
    parser.add_argument("--baseline-windows", type=int, default=24)
    parser.add_argument("--window", type=float, default=300.0,
                        help="window width in seconds (default 300; durations stay counted "
                             "in windows)")
    parser.add_argument("--database", default=None, help="SQLite URL (default: a temp file)")
    parser.add_argument("--write-docs", action="store_true",
                        help="write the table into docs/benchmarks.md")
    parser.add_argument("--details", action="store_true",
                        help="print the series behind false alerts and missed incidents")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        set_window(args.window)
    except ValueError as exc:
        parser.error(str(exc))
    cfg = Config(
        warmup_days=args.warmup_days or (8.0 if not args.quick else 3.0),
        test_days=args.test_days or (6.0 if not args.quick else 2.0),
        per_kind=args.per_kind or (4 if not args.quick else 1),
        seed=args.seed, baseline_windows=args.baseline_windows, rate=args.rate,
        profile=dict(args.profile))
    injections = plan_injections(cfg)
    with tempfile.TemporaryDirectory(prefix="dqpulse-bench-") as tmp:
        database = args.database or f"sqlite:///{tmp}/bench.db"
        timings = simulate(cfg, injections, database)
        series = load_series(database)
    test_start = START + cfg.warmup_days * 86400.0
    test_end = test_start + cfg.test_days * 86400.0
    ours = evaluate(dqpulse_alerts(series), injections, test_start, test_end)
    base = evaluate(baseline_alerts(series, cfg.baseline_windows), injections, test_start,
                    test_end)
    table = report(ours, base, injections, cfg, timings, cfg.baseline_windows)
    print(table)
    if args.details:
        print("\nfalse alert windows by series (dqpulse):")
        for key, count in sorted(ours.false_series.items(), key=lambda kv: -kv[1])[:20]:
            print(f"  {count:4d}  {key}")
        print("missed by dqpulse:")
        alerts = dqpulse_alerts(series)
        for injection in injections:
            first, last = span_of(injection)
            hit = any(window_of(t) in range(first, last + 1) for t in alerts)
            if not hit:
                print(f"  {injection.kind} field={injection.field} "
                      f"{datetime.fromtimestamp(injection.start, UTC):%a %H:%M} "
                      f"{(injection.end - injection.start) / WINDOW:.1f} windows")
    if args.write_docs:
        command = "python bench/incidents/run.py" + (" --quick" if args.quick else "")
        write_docs(table, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
