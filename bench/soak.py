"""Soak: ingest workers for an hour at a steady rate with a rebalance every 5 minutes.

On a throwaway database and fresh topics of the local stack (``deploy/local/stack up``):
``--datasets`` data sets x ``--partitions`` partitions x ``--fields`` number fields,
``--rate`` records/s produced live (event time = produce time). Worker A runs the whole
time; worker B joins and leaves the consumer group every ``--rebalance-min`` minutes (a
rebalance each time). Each ``--sample-s`` seconds it records each worker's RSS, the
Postgres table sizes, the database's connections, and the bytes of checkpoint and detector
state; at the end it checks that every closed window's volume equals what was produced, and
writes the samples (JSON) and a picture of them (SVG, drawn here: no plotting library).

Usage: ``eval "$(deploy/local/stack env)"; .venv/bin/python bench/soak.py --minutes 60``;
``bench/soak.py --plot docs/img/soak.json`` redraws the SVG from saved samples.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import workload as wl  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1500.0)
    parser.add_argument("--datasets", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--fields", type=int, default=8)
    parser.add_argument("--window-s", type=int, default=10)
    parser.add_argument("--rebalance-min", type=float, default=5.0)
    parser.add_argument("--sample-s", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "img" / "soak.json")
    parser.add_argument("--plot", type=Path, help="only redraw the SVG of saved samples")
    args = parser.parse_args()
    if args.plot:
        data = json.loads(args.plot.read_text())
        write_svg(data, args.plot.with_suffix(".svg"))
        return 0
    data = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    write_svg(data, args.out.with_suffix(".svg"))
    print(json.dumps(data["summary"], indent=1))
    return 0 if data["summary"]["volumes_exact"] else 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dqpulse.store.db import make_engine

    admin = os.environ.get("DQPULSE_DATABASE_URL", wl.DEFAULT_PG)
    bootstrap = os.environ.get("DQPULSE_KAFKA_BOOTSTRAP", wl.DEFAULT_KAFKA)
    fleet = wl.Fleet(args.datasets, args.partitions, args.fields, args.window_s,
                     prefix=f"soak{int(time.time()) % 100000}")
    workdir = Path(tempfile.mkdtemp(prefix="dqpulse-soak-"))
    url = wl.create_database(admin, "dqpulse_soak")
    database = url.rsplit("/", 1)[1]
    wl.create_topics(bootstrap, fleet.names(), fleet.partitions)
    env = wl.worker_env(url, bootstrap, f"soak-{fleet.prefix}",
                        DQPULSE_IDLE_PARTITION_TIMEOUT_S="5")
    wl.apply_model(env, fleet.yaml(), workdir)
    engine = make_engine(url, pool_size=1)
    print(f"soak: database {database}, topics {fleet.prefix}_*, logs in {workdir}",
          file=sys.stderr)
    a = wl.start_worker(env, workdir / "worker-a.log")
    b: Any = None
    producer = wl.SteadyProducer(bootstrap, fleet, args.rate)
    producer.start()
    samples: list[dict[str, Any]] = []
    rebalances: list[float] = []
    started = time.monotonic()
    next_rebalance = args.rebalance_min * 60
    next_sample = 0.0
    try:
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            if elapsed >= next_rebalance:
                if b is None:
                    b = wl.start_worker(env, workdir / "worker-b.log")
                else:
                    wl.stop_worker(b)
                    b = None
                rebalances.append(round(elapsed / 60, 2))
                next_rebalance += args.rebalance_min * 60
            if elapsed >= next_sample:
                sample = {"minute": round(elapsed / 60, 2), "produced": producer.sent,
                          "rss_a_mib": wl.rss_mib(a.pid),
                          "rss_b_mib": wl.rss_mib(b.pid) if b is not None else None,
                          "cpu_a_s": wl.cpu_seconds(a.pid), **wl.pg_readings(engine, database)}
                samples.append(sample)
                print(json.dumps({k: sample[k] for k in ("minute", "rss_a_mib", "connections",
                                                         "detector_state_bytes")}),
                      file=sys.stderr)
                next_sample += args.sample_s
            if a.poll() is not None:
                raise RuntimeError(f"worker A exited with {a.returncode}; see {workdir}")
            time.sleep(1.0)
        producer.stop_event.set()
        producer.join(120)
        # idle partitions close the last windows after DQPULSE_IDLE_PARTITION_TIMEOUT_S
        deadline = time.monotonic() + 180
        while True:
            volumes = wl.volume_by_window(engine)
            if sum(volumes.values()) >= producer.sent or time.monotonic() > deadline:
                break
            time.sleep(2.0)
    finally:
        producer.stop_event.set()
        for process in (a, b):
            if process is not None:
                wl.stop_worker(process)
        engine.dispose()
    counted = sum(volumes.values())
    summary = summarize(samples, rebalances, args, producer.sent, counted, volumes)
    try:
        wl.drop_database(admin, url)
        wl.delete_topics(bootstrap, fleet.names())
    except Exception as exc:  # noqa: BLE001 - leftovers are reported, not fatal
        print(f"soak: clean-up failed: {exc}", file=sys.stderr)
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} vCPU, shared with the broker, Postgres and others",
            "args": {k: (_portable(v) if isinstance(v, Path) else v)
                     for k, v in vars(args).items()},
            "rebalances_min": rebalances, "samples": samples, "summary": summary}


def _portable(path: Path) -> str:
    """A path as the repository sees it (no machine paths in saved results)."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return path.name


def summarize(samples: list[dict[str, Any]], rebalances: list[float], args: argparse.Namespace,
              sent: int, counted: int, volumes: dict[Any, int]) -> dict[str, Any]:
    after = [s for s in samples if s["minute"] >= 10] or samples
    rss = [s["rss_a_mib"] for s in after if s["rss_a_mib"]]
    conns = [s["connections"] for s in after]
    state = [s["checkpoint_state_bytes"] + s["detector_state_bytes"] for s in after]
    return {
        "minutes": args.minutes, "rate": args.rate, "records_produced": sent,
        "records_counted": counted, "volumes_exact": counted == sent,
        "windows": len(volumes),
        "rebalances": len(rebalances),
        "rss_a_mib_at_10min": rss[0] if rss else None, "rss_a_mib_end": rss[-1] if rss else None,
        "rss_a_growth_pct_after_10min": round(100 * (rss[-1] - rss[0]) / rss[0], 2)
        if rss else None,
        "rss_a_max_mib": max(rss) if rss else None,
        "connections_min_max_after_10min": [min(conns), max(conns)] if conns else None,
        "state_bytes_min_max_after_10min": [min(state), max(state)] if state else None,
    }


# -- the picture ----------------------------------------------------------------------------
PANELS = [
    ("RSS per worker (MiB)", [("worker A (whole run)", lambda s: s["rss_a_mib"]),
                              ("worker B (joins/leaves)", lambda s: s["rss_b_mib"])]),
    ("Postgres table size (MiB)",
     [("metric_points", lambda s: s["table_bytes"]["metric_points"] / 2**20),
      ("metric_rollups", lambda s: s["table_bytes"]["metric_rollups"] / 2**20),
      ("state tables", lambda s: sum(s["table_bytes"][t] for t in wl.STATE_TABLES) / 2**20)]),
    ("Connections to the database", [("pg_stat_activity", lambda s: s["connections"])]),
    ("State (KiB)", [("checkpoints", lambda s: s["checkpoint_state_bytes"] / 1024),
                     ("detector states", lambda s: s["detector_state_bytes"] / 1024)]),
]
COLOURS = ["#1f77b4", "#d62728", "#2ca02c"]


def write_svg(data: dict[str, Any], path: Path) -> None:
    samples = data["samples"]
    width, panel_h, left, top_pad = 900, 210, 70, 40
    inner_w, inner_h = width - left - 200, panel_h - 60
    x_max = max([s["minute"] for s in samples] + [1.0])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{top_pad + panel_h * len(PANELS)}" font-family="sans-serif" '
             'font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="22" font-size="15">dqpulse soak: '
             f'{data["args"]["minutes"]:.0f} min at {data["args"]["rate"]:.0f} records/s, '
             f'rebalance every {data["args"]["rebalance_min"]:.0f} min ({data["date"]})</text>']
    for index, (title, series) in enumerate(PANELS):
        y0 = top_pad + index * panel_h + 20
        values = [v for s in samples for _, fn in series if (v := _safe(fn, s)) is not None]
        y_max = max(values + [1e-9]) * 1.15

        def px(minute: float, value: float, y0: int = y0, y_max: float = y_max) -> str:
            return (f"{left + inner_w * minute / x_max:.1f},"
                    f"{y0 + inner_h - inner_h * value / y_max:.1f}")

        parts.append(f'<text x="{left}" y="{y0 - 6}" font-weight="bold">{title}</text>')
        parts.append(f'<rect x="{left}" y="{y0}" width="{inner_w}" height="{inner_h}" '
                     'fill="none" stroke="#888"/>')
        for tick in range(5):
            value = y_max * tick / 4
            y = y0 + inner_h - inner_h * tick / 4
            parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                         f'{_tick(value)}</text>')
        for minute in range(0, int(x_max) + 1, max(1, int(x_max) // 12 or 1)):
            x = left + inner_w * minute / x_max
            parts.append(f'<text x="{x:.1f}" y="{y0 + inner_h + 14}" '
                         f'text-anchor="middle">{minute}</text>')
        for minute in data["rebalances_min"]:
            x = left + inner_w * minute / x_max
            parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + inner_h}" '
                         'stroke="#bbb" stroke-dasharray="3,3"/>')
        # a series that read zero throughout was not measured (metric_rollups before the
        # reading was fixed): left out rather than drawn as a flat zero
        series = [(label, fn) for label, fn in series
                  if any(_safe(fn, s) for s in samples[1:])]
        for k, (label, fn) in enumerate(series):
            # one line per stretch of samples: a worker that is away leaves a gap
            runs: list[list[str]] = [[]]
            for s in samples:
                v = _safe(fn, s)
                if v is None or v <= 0.0 and label.startswith("worker B"):
                    runs.append([])
                else:
                    runs[-1].append(px(s["minute"], v))
            for points in runs:
                if len(points) > 1:
                    parts.append(f'<polyline fill="none" stroke="{COLOURS[k]}" '
                                 f'stroke-width="1.8" points="{" ".join(points)}"/>')
            parts.append(f'<text x="{left + inner_w + 12}" y="{y0 + 16 + 16 * k}" '
                         f'fill="{COLOURS[k]}">{label}</text>')
    parts.append(f'<text x="{left + inner_w / 2}" y="{top_pad + panel_h * len(PANELS) - 8}" '
                 'text-anchor="middle">minutes (dashed: a worker joins or leaves)</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def _tick(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def _safe(fn: Any, sample: dict[str, Any]) -> float | None:
    try:
        value = fn(sample)
    except (KeyError, TypeError):
        return None
    return None if value is None else float(value)


if __name__ == "__main__":
    sys.exit(main())
