"""Autoencoder cost: windows scored per second and training time per 1,000 windows.

Run by hand: ``.venv/bin/python bench/autoencoder_cost.py [--device cpu|cuda]``. For 10 and
1,000 datasets (vector dim 32) it measures, in one run:

* scoring, ``score_one`` per dataset and window (what the finalize step does);
* learning (replay buffer + a mini-batch Adam step every ``train_every`` windows), as
  seconds per 1,000 learned windows, and the cost of one training step.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import random
import time

import numpy as np
import torch

from dqpulse.detectors.autoencoder import AutoencoderDetector

DIM = 32


def vector(rng: random.Random) -> dict[str, float]:
    level = rng.gauss(100, 5)
    return {f"metric_{i:02d}": level * (1 + i % 5) + rng.gauss(0, 2) for i in range(DIM)}


def bench(n_datasets: int, device: str, rounds: int) -> dict[str, float]:
    rng = random.Random(0)
    names = [f"ds{i}" for i in range(n_datasets)]
    detectors = {name: AutoencoderDetector(device=device, warm_up=64) for name in names}
    warm_rounds = 80
    start = time.perf_counter()
    for _ in range(warm_rounds):
        for name in names:
            detectors[name].learn_one(vector(rng))
    learn_s = time.perf_counter() - start
    steps = sum(detector.train_steps for detector in detectors.values())

    batches = [[(name, vector(rng)) for name in names] for _ in range(rounds)]
    start = time.perf_counter()
    for items in batches:
        for name, x in items:
            detectors[name]._cache = None
            detectors[name].score_one(x)
    single_s = time.perf_counter() - start

    windows_learned = warm_rounds * n_datasets
    return {
        "datasets": n_datasets,
        "single_windows_per_s": rounds * n_datasets / single_s,
        "learn_s_per_1000_windows": learn_s / windows_learned * 1000,
        "train_step_ms": learn_s / max(steps, 1) * 1000,  # upper bound: includes buffer work
        "round_latency_ms": single_s / rounds * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {datetime.date.today()} {platform.processor() or platform.machine()} "
          f"torch {torch.__version__} numpy {np.__version__} device={args.device} "
          f"threads={args.threads} dim={DIM}")
    header = ("datasets", "single_windows_per_s",
              "learn_s_per_1000_windows", "train_step_ms", "round_latency_ms")
    print(" | ".join(header))
    for n, rounds in ((10, 200), (1000, 10)):
        row = bench(n, args.device, rounds)
        print(" | ".join(f"{row[k]:,.3f}" if isinstance(row[k], float) else str(row[k])
                         for k in header))


if __name__ == "__main__":
    main()
