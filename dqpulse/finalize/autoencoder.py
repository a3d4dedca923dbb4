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

from sqlalchemy import Connection

from dqpulse.detectors.base import Detector, create
from dqpulse.detectors.scoring import ScoredPoint
from dqpulse.finalize.watch import AUTOENCODER_METRIC, AUTOENCODER_SERIES
from dqpulse.records import MetricPoint
from dqpulse.spec import DatasetSpec
from dqpulse.store import detector_states
from dqpulse.store import metrics as metric_store


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def score_window(conn: Connection, dataset: DatasetSpec, *, window_start: float,
                 window_end: float, scored: Sequence[ScoredPoint], saved: bytes | None,
                 device: str | None) -> ScoredPoint:
    """Score (then learn) the window's vector of scored values; saves the model's state
    and the :data:`AUTOENCODER_METRIC` point in the caller's transaction."""
    vector: dict[str, Any] = {"t": window_start}
    for point in scored:
        if point.value is not None and math.isfinite(point.value):
            vector[f"{point.metric}|{point.field}"] = point.value
    model = Detector.from_bytes(saved) if saved else create("autoencoder", device=device)
    score = model.score_one(vector)
    explanation = model.explain(vector)
    model.learn_one(vector)
    detector_states.save_all(conn, dataset=dataset.name,
                             states={AUTOENCODER_SERIES: model.to_bytes()},
                             known={AUTOENCODER_SERIES} if saved else set())
    metric_store.create_window(conn, dataset=dataset.name, window_start=window_start,
                               window_end=window_end,
                               points=[MetricPoint(AUTOENCODER_METRIC, score)])
    return ScoredPoint(metric=AUTOENCODER_METRIC, field="", value=score, score=score,
                       anomalous=model.is_anomalous(score), detector="autoencoder",
                       explanation=explanation)
