"""Record counts of the incident benchmark replayed through their detector alone, fast.

The full bench (``run.py``) pushes 1.1 M records through the pipeline (about 10 minutes on
a quiet 2-core box, hours on a loaded one). This replay draws the same stream's record
count per 5-minute window straight from its rate (the same daily and weekly cycle,
per-second noise, slow log-AR(1) level and Poisson counts, summed per minute) with the
same seeded incident plan (``plan_injections``), and scores it with the production
detector of ``volume.records`` (``default_detector_for``/``default_params_for``), beside
the same detector without regime adoption. It checks the volume side only: the incidents
that change counts (drops, spikes, silences, the moved daily pattern, the 3-window 80 %
drop, the permanent level shift), and false alert windows and episodes on record counts,
counted as ``run.py`` counts them. Not a substitute for the full run.

    .venv/bin/python bench/incidents/volume_replay.py --seed 29 --seed 31
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from run import (  # noqa: E402
    PROFILE,
    START,
    WINDOW,
    Config,
    plan_injections,
    span_of,
    window_of,
)

from dqpulse.detectors import create  # noqa: E402
from dqpulse.detectors.scoring import default_detector_for, default_params_for  # noqa: E402
from dqpulse.sources.embedded import EmbeddedSource, Injection, poisson  # noqa: E402

VOLUME_KINDS = ("volume_drop", "volume_spike", "silence", "seasonal_shift", "short_drop",
                "level_shift")


def counts(cfg: Config, injections: list[Injection]) -> list[tuple[float, float]]:
    """(window start, record count) over warm-up and test, drawn per minute."""
    rng = random.Random(cfg.seed * 7919 + 1)
    source = EmbeddedSource([PROFILE], START, lambda: START, injections=injections,
                            seed=cfg.seed)
    phi = math.exp(-1.0 / PROFILE.level_noise_minutes)
    level = 0.0
    windows: list[tuple[float, float]] = []
    end = START + (cfg.warmup_days + cfg.test_days) * 86400.0
    t = START
    while t < end:
        total = 0
        for minute in range(int(WINDOW // 60)):
            at = t + 60.0 * minute
            active = {i.kind for i in source.active(PROFILE.topic, at)}
            level = phi * level + math.sqrt(1 - phi * phi) * rng.gauss(0, PROFILE.level_noise)
            if "silence" in active:
                continue
            rate = source.rate(PROFILE, at, 6.0 if "seasonal_shift" in active else 0.0)
            rate *= (0.2 if active & {"volume_drop", "short_drop"} else 1.0) * (
                0.5 if "level_shift" in active else 1.0) * (
                4.0 if "volume_spike" in active else 1.0)
            # 60 seconds of independent per-second noise, then Poisson counts
            mean = 60.0 * rate * max(0.0, 1 + rng.gauss(0, PROFILE.noise / math.sqrt(60)))
            total += poisson(rng, mean * math.exp(level))
        windows.append((t, float(total)))
        t += WINDOW
    return windows


def replay(cfg: Config, params: dict[str, Any]) -> dict[str, Any]:
    injections = plan_injections(cfg)
    detector = create(default_detector_for("volume.records"), **params)
    test_start = window_of(START + cfg.warmup_days * 86400.0)
    alerts = []
    for t, value in counts(cfg, injections):
        x = {"value": value, "t": t}
        if detector.score_one(x) >= detector.threshold and window_of(t) >= test_start:
            alerts.append(window_of(t))
        detector.learn_one(x)
    alert_set = set(alerts)
    found, delays = [], []
    for injection in (i for i in injections if i.kind in VOLUME_KINDS):
        first, last = span_of(injection)
        hit = next((w for w in range(first, last + 1) if w in alert_set), None)
        found.append((injection.kind, hit is not None))
        if hit is not None:
            delays.append(hit - first)
    protected = set()
    for injection in injections:
        first, last = span_of(injection)
        protected.update(range(first - 1, last + 2))
    false = sorted(w for w in alerts if w not in protected)
    episodes: list[list[int]] = []
    for window in alerts:  # windows at most 2 apart are one episode
        if episodes and window - episodes[-1][-1] <= 2:
            episodes[-1].append(window)
        else:
            episodes.append([window])
    true_episodes = sum(1 for episode in episodes if any(w in protected for w in episode))
    return {"recall": sum(hit for _, hit in found) / len(found),
            "missed": [kind for kind, hit in found if not hit],
            "delay": statistics.median(delays) if delays else None,
            "false_windows": len(false), "true_windows": len(alerts) - len(false),
            "episodes": len(episodes),
            "true_episodes": true_episodes,
            "adoptions": getattr(detector, "adoptions", 0), "alerts": alerts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=int, action="append", default=[])
    parser.add_argument("--per-kind", type=int, default=4)
    parser.add_argument("--adopt-after", type=int, action="append", default=[],
                        help="also run with this adopt_after (a sweep)")
    args = parser.parse_args()
    production = default_params_for("volume.records")
    variants = {"production": production,
                "no adoption": {**production, "adopt_after": None}}
    for adopt_after in args.adopt_after:
        variants[f"adopt_after={adopt_after}"] = {**production, "adopt_after": adopt_after}
    print("| seed | volume.records detector | recall (volume kinds) | missed | median delay | "
          "alert windows (false) | alert episodes (false) | adoptions |\n"
          "|---|---|---|---|---|---|---|---|")
    for seed in args.seed or [23, 29, 31]:
        cfg = Config(warmup_days=8.0, test_days=6.0, per_kind=args.per_kind, seed=seed,
                     baseline_windows=24)
        for name, params in variants.items():
            r = replay(cfg, params)
            print(f"| {seed} | {name} | {r['recall']:.2f} | {', '.join(r['missed']) or '-'} | "
                  f"{r['delay']} | {len(r['alerts'])} ({r['false_windows']}) | "
                  f"{r['episodes']} ({r['episodes'] - r['true_episodes']}) | "
                  f"{r['adoptions']} |", flush=True)


if __name__ == "__main__":
    main()
