"""River's HalfSpaceTrees over a dataset's window vector, with input scaling and calibration."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from river import anomaly

from dqpulse.detectors.base import (
    MAD_TO_SIGMA,
    Explanation,
    MultivariateDetector,
    Verdict,
    empty_explanation,
    register,
    z_to_score,
)

__all__ = ["HalfSpaceTreesDetector"]


class _FeatureScaler:
    """Running mean/std per feature (Welford) with a floor, squashed into (0, 1)."""

    def __init__(self, min_scale: float) -> None:
        self.min_scale = min_scale
        self.count: dict[str, int] = {}
        self.mean: dict[str, float] = {}
        self.m2: dict[str, float] = {}

    def std(self, name: str) -> float:
        count = self.count.get(name, 0)
        variance = self.m2[name] / (count - 1) if count > 1 else 0.0
        return max(math.sqrt(variance), self.min_scale, 0.01 * abs(self.mean.get(name, 0.0)))

    def z(self, name: str, value: float) -> float:
        if name not in self.count:
            return 0.0
        return (value - self.mean[name]) / self.std(name)

    def squash(self, features: Mapping[str, float], names: list[str]) -> dict[str, float]:
        # logistic of z/2: +-6 sigma stays distinguishable from +-12 sigma inside (0, 1)
        return {
            name: 1.0 / (1.0 + math.exp(-max(min(self.z(name, features[name]), 40.0), -40.0)
                                        / 2.0))
            for name in names if name in features
        }

    def update(self, features: Mapping[str, float]) -> None:
        for name, value in features.items():
            count = self.count.get(name, 0) + 1
            mean = self.mean.get(name, 0.0)
            delta = value - mean
            mean += delta / count
            self.count[name], self.mean[name] = count, mean
            self.m2[name] = self.m2.get(name, 0.0) + delta * (value - mean)


@register("hst")
class HalfSpaceTreesDetector(MultivariateDetector):
    """River's HalfSpaceTrees over a dataset's window vector, with input scaling and calibration.

    Each feature is standardised with its running mean/std (floored) and squashed into
    ``(0, 1)`` for the trees. HalfSpaceTrees' raw score has no fixed meaning, so it is
    calibrated against the raw scores of recently learned windows: the robust z of
    ``-log(1 - raw)`` above their median maps to ``[0, 1]`` as for the univariate detectors
    (``z_threshold`` 8: on Gaussian data the largest of 2,000 normal windows reached z 6.3).
    ``explain`` names the features that deviate most.

    Parameters
    ----------
    n_trees, height, window_size, seed
        Passed to :class:`river.anomaly.HalfSpaceTrees`.
    z_threshold
        Robust z of the raw score at which the score reaches 0.9.
    warm_up
        Learned windows before any non-zero score (at least one HST window plus calibration).
    calibration_size
        Raw scores of learned windows kept for calibration.
    min_scale
        Floor on each feature's standard deviation.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> detector = HalfSpaceTreesDetector(window_size=50, warm_up=100)
    >>> for _ in range(300):
    ...     x = {"volume.records": rng.gauss(100, 5), "completeness.null_ratio": 0.0}
    ...     detector.learn_one(x)
    >>> broken = {"volume.records": 100.0, "completeness.null_ratio": 0.6}
    >>> 0.0 <= detector.score_one(broken) <= 1.0, detector.explain(broken)["top_feature"]
    (True, 'completeness.null_ratio')

    HalfSpaceTrees separates a single shifted feature poorly: on three Gaussian features
    a 12-sigma shift of one of them lands near the 99th percentile of normal raw scores.
    The autoencoder is the stronger multivariate detector; this one is cheap and has no
    dependency beyond River.
    """

    state_version = 1
    multivariate = True

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 42,
        z_threshold: float = 8.0,
        warm_up: int = 300,
        calibration_size: int = 256,
        min_scale: float = 0.01,
        learn_anomalies: bool = False,
        relearn_after: int | None = None,
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.z_threshold = z_threshold
        self.warm_up = max(warm_up, window_size + 1)
        self.calibration_size = calibration_size
        self.min_scale = min_scale
        self.learn_anomalies = learn_anomalies
        self.relearn_after = relearn_after
        self._init_learner()
        self.features: list[str] | None = None
        self._scaler = _FeatureScaler(min_scale)
        self._trees = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed)
        self._raw_scores: deque[float] = deque(maxlen=calibration_size)

    @property
    def is_warm(self) -> bool:
        return self.n_learned >= self.warm_up and len(self._raw_scores) >= 30

    def _raw(self, features: Mapping[str, float]) -> float:
        """``-log(1 - HST score)``: HST saturates near 1, the log spreads its upper end."""
        if self.features is None:
            return 0.0
        raw = float(self._trees.score_one(  # type: ignore[no-untyped-call]
            self._scaler.squash(features, self.features)))
        return -math.log(max(1.0 - raw, 1e-9))

    def _calibrated(self, raw: float) -> float:
        if not self._raw_scores:
            return 0.0
        values = np.fromiter(self._raw_scores, dtype=float, count=len(self._raw_scores))
        median = float(np.median(values))
        mad = float(np.median(np.abs(values - median)))
        scale = max(MAD_TO_SIGMA * mad, 0.05)
        return z_to_score(max(raw - median, 0.0) / scale, self.effective_z_threshold,
                          self.threshold)

    def score_one(self, x: Mapping[str, Any]) -> float:
        features = self._features(x)
        if features is None or not self.is_warm:
            return 0.0
        return self._calibrated(self._raw(features))

    def _learn(self, features: dict[str, float]) -> None:
        if self.features is None:
            self.features = sorted(features)
        raw = self._raw(features)
        self._trees.learn_one(  # type: ignore[no-untyped-call]
            self._scaler.squash(features, self.features))
        self._scaler.update({k: v for k, v in features.items() if k in self.features})
        if not self._trees._first_window:
            self._raw_scores.append(raw)
        self.n_learned += 1

    def learn_one(self, x: Mapping[str, Any]) -> None:
        features = self._features(x)
        if features is None:
            return
        if self._should_learn(self.score_one(x)):
            self._learn(features)

    def explain(self, x: Mapping[str, Any]) -> Explanation:
        features = self._features(x)
        if features is None or self.features is None:
            return empty_explanation()
        ranked = sorted(
            ((name, self._scaler.z(name, features[name])) for name in self.features
             if name in features),
            key=lambda item: -abs(item[1]),
        )
        if not ranked:
            return empty_explanation()
        top, z = ranked[0]
        mean, width = self._scaler.mean.get(top, 0.0), 3.0 * self._scaler.std(top)
        return {
            # the typical range (mean +- 3 sigma) of the feature that deviates most
            "expected_low": mean - width,
            "expected_high": mean + width,
            "observed": features[top],
            "direction": "up" if z > 0 else "down" if z < 0 else None,
            "top_feature": top,
            "features": [
                {"feature": name, "z": score, "observed": features[name],
                 "expected": self._scaler.mean.get(name, 0.0)}
                for name, score in ranked[:5]
            ],
        }

    def feedback(self, x: Mapping[str, Any], verdict: Verdict) -> None:
        """False positive: learn ``x`` and widen; confirmed: narrow again.

        HalfSpaceTrees cannot take a learned window back out of its mass profile, so a
        confirmed window that was learned (during warm-up, or with ``learn_anomalies``)
        stays in the current tree window until it rotates out (``window_size`` windows).
        """
        super().feedback(x, verdict)
        features = self._features(x)
        if verdict == "false_positive":
            self._widen()
            if features is not None:
                self._learn(features)
        else:
            self._narrow()
