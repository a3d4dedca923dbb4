"""The dataset autoencoder as a window hook step: one model per dataset over the vector
of the window's watched metrics.

Its per-feature reconstruction error (``explanation.features``) says which metrics drove
an unusual window; root cause reads it. Stored as the metric point
:data:`AUTOENCODER_METRIC`; it alerts only with ``DQPULSE_AUTOENCODER=alert``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from typing import Any

from dqpulse.detectors.base import Detector, create
from dqpulse.detectors.scoring import ScoredPoint
from dqpulse.finalize.watch import AUTOENCODER_METRIC
from dqpulse.spec import DatasetSpec

#: A change that the autoencoder scores as anomalous window after window becomes its new
#: normal after two hours of them, and at least 24 windows (as record counts adopt a level
#: shift): it learns them from then on. It never did (anomalies are not learned), so a
#: lasting change kept every later window anomalous: on bench/foreign_stream.py's device
#: uploads (a firmware rollout moving a category's share over the test days) 97-100 % of
#: the test days' windows at 5- and 1-minute windows (session 51).
ADOPT_SECONDS = 7200.0
ADOPT_WINDOWS = 24


def adopt_after(window_seconds: float) -> int:
    """Anomalous windows in a row after which the autoencoder learns them (its
    ``relearn_after``) for a data set of ``window_seconds`` windows.

    >>> adopt_after(300.0), adopt_after(60.0), adopt_after(3600.0)
    (24, 120, 24)
    """
    return max(ADOPT_WINDOWS, math.ceil(ADOPT_SECONDS / max(window_seconds, 1.0)))


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


class AutoencoderScorer:
    """One autoencoder per dataset, kept in memory between windows while the stored state
    is the one it wrote last (after another worker's write, a restart or a rolled-back
    transaction it is loaded again from the stored state): a window then pays for
    scoring, learning and saving the model, not for rebuilding it from bytes."""

    def __init__(self, device: str | None) -> None:
        self.device = device
        self._models: dict[str, tuple[bytes, Detector]] = {}

    def start_over(self, dataset: DatasetSpec) -> bytes:
        """The state of a new model for ``dataset`` (its model failed): saved in place of
        the old one, so that the next window does not meet the same failure."""
        model = create("autoencoder", device=self.device,
                       relearn_after=adopt_after(dataset.window))
        state = model.to_bytes()
        self._models[dataset.name] = (state, model)
        return state

    def score_window(self, dataset: DatasetSpec, *, window_start: float,
                     scored: Sequence[ScoredPoint], saved: bytes | None
                     ) -> tuple[ScoredPoint, bytes]:
        """Score (then learn) the window's vector of scored values; returns the
        :data:`AUTOENCODER_METRIC` point and the model's new state (the caller saves
        both in its transaction)."""
        vector: dict[str, Any] = {"t": window_start}
        for point in scored:
            if point.value is not None and math.isfinite(point.value):
                vector[f"{point.metric}|{point.field}"] = point.value
        cached = self._models.get(dataset.name)
        if saved is not None and cached is not None and cached[0] == saved:
            model = cached[1]
        else:
            model = Detector.from_bytes(saved) if saved else create("autoencoder",
                                                                    device=self.device)
        # a model saved before (or with another window width) takes the adoption up
        model.relearn_after = adopt_after(dataset.window)  # type: ignore[attr-defined]
        score = model.score_one(vector)
        explanation = model.explain(vector)
        model.learn_one(vector)
        state = model.to_bytes()
        self._models[dataset.name] = (state, model)
        return ScoredPoint(metric=AUTOENCODER_METRIC, field="", value=score, score=score,
                           anomalous=model.is_anomalous(score), detector="autoencoder",
                           explanation=explanation), state
