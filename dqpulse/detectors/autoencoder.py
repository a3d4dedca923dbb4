"""A PyTorch autoencoder per dataset over the window's vector of normalised metrics.

Follows deep-river's ``anomaly.Autoencoder`` design (a small torch module behind River's
``learn_one`` / ``score_one``, a ``device`` argument, state = params + ``state_dict``) with
three changes that an always-on service needs:

* it trains in mini-batches drawn from a replay buffer of recent *normal* windows instead
  of one optimiser step per window, which is cheaper and forgets incidents;
* inputs are standardised with running (Welford) mean/std, floored, and clipped;
* the score is calibrated: ``score = 1 - 0.1 ** (error / (margin * q))`` where ``error``
  is the window's mean squared reconstruction error and ``q`` the ``quantile`` of the
  errors of recently learned windows, so a window at ``margin`` times that quantile scores
  exactly 0.9 (the anomaly threshold).

Importing this module imports torch; :mod:`dqpulse.detectors` registers it lazily.
"""

from __future__ import annotations

import io
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from dqpulse.detectors.base import (
    VALUE_LIMIT,
    DetectorStateError,
    Explanation,
    MultivariateDetector,
    Verdict,
    empty_explanation,
    z_to_score,
)

__all__ = ["AutoencoderDetector", "default_device"]

#: The decayed share of anomalous windows from which the autoencoder learns them (with
#: ``relearn_after``): what ``relearn_after`` anomalous windows in a row reach, 1 - 1/e.
ADOPT_SHARE = 1.0 - 1.0 / math.e


def default_device() -> str:
    """``"cuda"`` when a GPU is usable, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _build(n_features: int, hidden: int, latent: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_features, hidden), nn.Tanh(),
        nn.Linear(hidden, latent), nn.Tanh(),
        nn.Linear(latent, hidden), nn.Tanh(),
        nn.Linear(hidden, n_features),
    )


def _linears(model: nn.Sequential) -> list[nn.Linear]:
    return [layer for layer in model if isinstance(layer, nn.Linear)]


class AutoencoderDetector(MultivariateDetector):
    """Reconstruction-error detector over one dataset's window vector.

    ``x = {metric_or_metric|field: value, ...}``. The feature list is fixed by the first
    learned window (sorted keys); later windows may omit features (imputed with the running
    mean) and new keys are ignored until the detector is rebuilt.

    Parameters
    ----------
    hidden, latent
        Widths of the hidden and bottleneck layers (``d -> hidden -> latent -> hidden -> d``).
    lr
        Adam learning rate.
    batch_size
        Mini-batch size drawn from the replay buffer.
    buffer_size
        Recent normal windows kept for training.
    train_every, steps
        Run ``steps`` optimiser steps after every ``train_every`` learned windows.
    warm_up
        Learned windows before any non-zero score.
    quantile, margin
        Calibration: ``margin * quantile(recent normal errors)`` scores 0.9.
    error_window
        Recent normal errors kept for the calibration quantile.
    clip, min_scale
        Standardised inputs are clipped to ``[-clip, clip]``; standard deviations are
        floored at ``max(min_scale, 1% of |mean|)``.
    device
        ``"cuda"``, ``"cpu"`` or ``None`` (CUDA when available).
    seed
        Seeds weight initialisation and mini-batch sampling (deterministic on the CPU).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(0)
    >>> detector = AutoencoderDetector(warm_up=100, device="cpu")
    >>> def window(null_ratio=0.0):
    ...     base = rng.gauss(100, 5)
    ...     return {"volume.records": base, "volume.bytes": 200 * base + rng.gauss(0, 50),
    ...             "completeness.null_ratio": null_ratio}
    >>> for _ in range(400):
    ...     detector.learn_one(window())
    >>> detector.score_one(window()) < 0.9
    True
    >>> broken = window(null_ratio=0.5)
    >>> detector.score_one(broken) >= 0.9, detector.explain(broken)["top_feature"]
    (True, 'completeness.null_ratio')
    """

    name = "autoencoder"
    multivariate = True
    state_version = 1

    def __init__(
        self,
        hidden: int = 16,
        latent: int = 4,
        lr: float = 0.01,
        batch_size: int = 64,
        buffer_size: int = 512,
        train_every: int = 4,
        steps: int = 1,
        warm_up: int = 64,
        quantile: float = 0.99,
        margin: float = 2.0,
        error_window: int = 256,
        clip: float = 8.0,
        min_scale: float = 0.01,
        device: str | None = None,
        seed: int = 0,
        learn_anomalies: bool = False,
        relearn_after: int | None = None,
    ) -> None:
        self.hidden = hidden
        self.latent = latent
        self.lr = lr
        self.batch_size = batch_size
        self.buffer_size = buffer_size
        self.train_every = train_every
        self.steps = steps
        self.warm_up = warm_up
        self.quantile = quantile
        self.margin = margin
        self.error_window = error_window
        self.clip = clip
        self.min_scale = min_scale
        self.device = device
        self.seed = seed
        self.learn_anomalies = learn_anomalies
        self.relearn_after = relearn_after
        self.z_threshold = 1.0  # the sensitivity multiplier scales ``margin`` instead
        self._init_learner()
        self._anomaly_share = 0.0  # decayed share of anomalous windows (see _should_learn)
        self._device = torch.device(device or default_device())
        self.features: list[str] | None = None
        self._model: nn.Sequential | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._generator = torch.Generator().manual_seed(seed)
        self._count = 0
        self._mean = np.zeros(0)
        self._m2 = np.zeros(0)
        self._buffer = np.zeros((0, 0))
        self._buffer_len = 0
        self._buffer_pos = 0
        self._errors: deque[float] = deque(maxlen=error_window)
        self._since_train = 0
        self.train_steps = 0
        self.version = 0  # bumped on every weight update; caches key on it
        self._cache: tuple[bytes, int, float, np.ndarray] | None = None

    # ---- inputs -------------------------------------------------------------------------
    def _init_features(self, features: Mapping[str, float]) -> None:
        self.features = sorted(features)
        d = len(self.features)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)  # deterministic init without a global side effect
        self._model = _build(d, self.hidden, self.latent).to(self._device)
        torch.random.set_rng_state(generator_state)
        self._optimizer = torch.optim.Adam(self._model.parameters(), lr=self.lr)
        self._mean = np.zeros(d)
        self._m2 = np.zeros(d)
        self._buffer = np.zeros((self.buffer_size, d))

    def _row(self, x: Mapping[str, Any]) -> np.ndarray | None:
        """Raw feature row (NaN where missing), or None when nothing usable is in ``x``."""
        features = self._features(x)
        if features is None or self.features is None:
            return None
        row = np.array([features.get(name, np.nan) for name in self.features])
        if np.isnan(row).all():
            return None
        # as the streaming detectors read them: squares of learned values stay finite
        return np.asarray(np.clip(row, -VALUE_LIMIT, VALUE_LIMIT))

    def _std(self) -> np.ndarray:
        variance = self._m2 / (self._count - 1) if self._count > 1 else np.zeros_like(self._m2)
        floor = np.maximum(self.min_scale, 0.01 * np.abs(self._mean))
        return np.asarray(np.maximum(np.sqrt(variance), floor))

    def _standardise(self, rows: np.ndarray) -> np.ndarray:
        rows = np.where(np.isnan(rows), self._mean, rows)
        scaled = np.clip((rows - self._mean) / self._std(), -self.clip, self.clip)
        return np.asarray(scaled, dtype=np.float32)

    # ---- scoring ------------------------------------------------------------------------
    @property
    def is_warm(self) -> bool:
        return self.n_learned >= self.warm_up and self.train_steps > 0 and len(self._errors) >= 16

    def _threshold_error(self) -> float:
        q = float(np.quantile(np.fromiter(self._errors, dtype=float), self.quantile))
        return max(q, 1e-6) * self.margin * self.sensitivity

    def score_from_error(self, error: float) -> float:
        """Calibrated score of a mean squared reconstruction error."""
        if not self.is_warm:
            return 0.0
        return z_to_score(error / self._threshold_error(), 1.0, self.threshold)

    def _feature_errors(self, row: np.ndarray) -> np.ndarray:
        key = row.tobytes()
        if self._cache is not None and self._cache[0] == key and self._cache[1] == self.version:
            return np.asarray(self._cache[3])
        assert self._model is not None
        standardised = torch.from_numpy(self._standardise(row[None, :])).to(self._device)
        with torch.no_grad():
            reconstruction = self._model(standardised)
        errors = np.asarray(((reconstruction - standardised) ** 2)[0].cpu().numpy(), dtype=float)
        self._remember(row, errors)
        return errors

    def _remember(self, row: np.ndarray, errors: np.ndarray) -> None:
        self._cache = (row.tobytes(), self.version, float(errors.mean()), errors)

    def score_one(self, x: Mapping[str, Any]) -> float:
        row = self._row(x)
        if row is None or not self.is_warm:
            return 0.0
        return self.score_from_error(float(self._feature_errors(row).mean()))

    # ---- learning -----------------------------------------------------------------------
    def learn_one(self, x: Mapping[str, Any]) -> None:
        features = self._features(x)
        if features is None:
            return
        if self.features is None:
            self._init_features(features)
        if self._should_learn(self.score_one(x)):
            self._learn(x)

    def _should_learn(self, score: float) -> bool:
        """Anomalies are not learned, unless they are most of the recent windows: with
        ``relearn_after`` set, an anomalous window is learned while the decayed share of
        anomalous windows (a memory of about ``relearn_after`` windows) is at least that of
        ``relearn_after`` anomalous windows in a row (1 - 1/e). A change the model keeps
        scoring as unusual becomes its new normal even when a window now and then scores
        under the threshold (a run counted window by window started over at each such
        window: on bench/foreign_stream.py's devices at 1-minute windows, a firmware
        rollout kept 73-96 % of the windows of 18 hours anomalous); a short incident
        (a few windows) stays far from it."""
        if self.relearn_after is None or self.relearn_after <= 0:
            return super()._should_learn(score)
        if self.learn_anomalies or not self.is_warm:
            return True
        anomalous = score >= self.threshold
        self._anomaly_share += (float(anomalous) - self._anomaly_share) / self.relearn_after
        return not anomalous or self._anomaly_share >= ADOPT_SHARE

    def _learn(self, x: Mapping[str, Any]) -> None:
        row = self._row(x)
        if row is None:
            return
        if self.train_steps > 0:
            self._errors.append(float(self._feature_errors(row).mean()))
        observed = ~np.isnan(row)
        self._count += 1
        delta = np.where(observed, row - self._mean, 0.0)
        self._mean = self._mean + delta / self._count
        self._m2 = self._m2 + delta * np.where(observed, row - self._mean, 0.0)
        self._buffer[self._buffer_pos] = np.where(observed, row, np.nan)
        self._buffer_pos = (self._buffer_pos + 1) % self.buffer_size
        self._buffer_len = min(self._buffer_len + 1, self.buffer_size)
        self.n_learned += 1
        self._since_train += 1
        if self._since_train >= self.train_every and self._buffer_len >= 8:
            self._since_train = 0
            for _ in range(self.steps):
                self._train_step()

    def _train_step(self) -> None:
        assert self._model is not None and self._optimizer is not None
        size = min(self.batch_size, self._buffer_len)
        index = torch.randint(self._buffer_len, (size,), generator=self._generator).numpy()
        batch = torch.from_numpy(self._standardise(self._buffer[index])).to(self._device)
        self._optimizer.zero_grad()
        loss = ((self._model(batch) - batch) ** 2).mean()
        loss.backward()
        self._optimizer.step()
        self.train_steps += 1
        self.version += 1

    # ---- explanation and feedback --------------------------------------------------------
    def explain(self, x: Mapping[str, Any]) -> Explanation:
        """Top features by reconstruction error; ``expected`` is the reconstruction."""
        row = self._row(x)
        if row is None or self._model is None or self.features is None:
            return empty_explanation()
        errors = self._feature_errors(row)
        standardised = torch.from_numpy(self._standardise(row[None, :])).to(self._device)
        with torch.no_grad():
            reconstruction = self._model(standardised)[0].cpu().numpy().astype(float)
        std = self._std()
        expected = self._mean + reconstruction * std
        order = np.argsort(-errors, kind="stable")
        total = float(errors.sum()) or 1.0
        ranked = [
            {"feature": self.features[i], "observed": float(row[i]),
             "expected": float(expected[i]), "error_share": float(errors[i]) / total}
            for i in order[:5]
        ]
        top = int(order[0])
        observed = float(row[top])
        direction = None
        if not np.isnan(observed) and observed != expected[top]:
            direction = "up" if observed > expected[top] else "down"
        width = 3.0 * float(std[top])
        return {
            "expected_low": float(expected[top]) - width,
            "expected_high": float(expected[top]) + width,
            "observed": None if np.isnan(observed) else observed,
            "direction": direction,
            "top_feature": self.features[top],
            "error": float(errors.mean()),
            "features": ranked,
        }

    def feedback(self, x: Mapping[str, Any], verdict: Verdict) -> None:
        """False positive: learn ``x`` and raise the margin (bounded); confirmed: take ``x``
        out of the replay buffer (weights already trained on it are not reverted)."""
        super().feedback(x, verdict)
        features = self._features(x)
        if verdict == "false_positive":
            self._widen()
            if features is not None:
                if self.features is None:
                    self._init_features(features)
                self._learn(x)
            return
        self._narrow()
        row = self._row(x)
        if row is None:
            return
        stored = self._buffer[: self._buffer_len]
        same = np.all((stored == row) | (np.isnan(stored) & np.isnan(row)), axis=1)
        keep = stored[~same]
        if len(keep) < self._buffer_len:
            self._buffer[: len(keep)] = keep
            self._buffer_len = len(keep)
            self._buffer_pos = self._buffer_len % self.buffer_size

    # ---- state --------------------------------------------------------------------------
    def _dump_state(self) -> bytes:
        state = {
            "params": self._get_params(),
            "features": self.features,
            "count": self._count,
            "mean": torch.from_numpy(self._mean),
            "m2": torch.from_numpy(self._m2),
            "buffer": torch.from_numpy(self._buffer[: self._buffer_len].copy()),
            "buffer_pos": self._buffer_pos,
            "errors": torch.tensor(list(self._errors), dtype=torch.float64),
            "since_train": self._since_train,
            "train_steps": self.train_steps,
            "n_learned": self.n_learned,
            "sensitivity": self.sensitivity,
            "anomaly_run": self._anomaly_run,
            "anomaly_share": self._anomaly_share,
            "generator": self._generator.get_state(),
            "model": None if self._model is None else {
                k: v.cpu() for k, v in self._model.state_dict().items()},
            "optimizer": None if self._optimizer is None else self._optimizer.state_dict(),
        }
        out = io.BytesIO()
        torch.save(state, out)
        return out.getvalue()

    @classmethod
    def _load_state(cls, payload: bytes) -> AutoencoderDetector:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        params = dict(state["params"])
        if params.get("device") == "cuda" and not torch.cuda.is_available():
            params["device"] = None
        detector = cls(**params)
        if state["features"] is not None:
            detector._init_features(dict.fromkeys(state["features"], 0.0))
            assert detector._model is not None and detector._optimizer is not None
            detector._model.load_state_dict(state["model"])
            detector._optimizer.load_state_dict(state["optimizer"])
            detector._mean = state["mean"].numpy().copy()
            detector._m2 = state["m2"].numpy().copy()
            buffer = state["buffer"].numpy()
            detector._buffer[: len(buffer)] = buffer
            detector._buffer_len = len(buffer)
        if state["features"] is None and state["n_learned"]:
            raise DetectorStateError("autoencoder state has learned windows but no features")
        detector._count = int(state["count"])
        detector._buffer_pos = int(state["buffer_pos"])
        detector._errors.extend(float(e) for e in state["errors"].tolist())
        detector._since_train = int(state["since_train"])
        detector.train_steps = int(state["train_steps"])
        detector.n_learned = int(state["n_learned"])
        detector.sensitivity = float(state["sensitivity"])
        detector._anomaly_run = int(state["anomaly_run"])
        detector._anomaly_share = float(state.get("anomaly_share", 0.0))  # 0: saved before it
        detector._generator.set_state(state["generator"])
        return detector

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("pickle an AutoencoderDetector with to_bytes(), not pickle")
