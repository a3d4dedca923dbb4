from __future__ import annotations

from dqpulse.metrics.ml_data import MlDataState
from dqpulse.spec import DatasetSpec


def test_boolean_label_window_without_positives_is_maximally_imbalanced():
    state = MlDataState(DatasetSpec(name="d", topic="t", label="is_fraud"))
    state.classes = {"false": 120}
    got = {p.metric: p.value for p in state.points()}
    assert got["ml_data.minority_ratio"] == 0.0
    state.classes = {"false": 90, "true": 10}
    got = {p.metric: p.value for p in state.points()}
    assert got["ml_data.minority_ratio"] == 10 / 90
