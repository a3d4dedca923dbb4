"""Metric families as mergeable window states, and window finalization.

Importing this package registers every family. Public entry points:
``WindowState``, ``merge_partials``, ``FinalizeContext``, ``WindowResult``,
``finalize_window``, ``diff_schema`` (see ``dqpulse.metrics.window_state``), and
``METRIC_NAMES`` (every metric name this package emits).

Series identity is (metric, field). Per-rule validity series use
``field="<path>:<rule>"``; per-class label shares use ``field="<label>=<class>"``.
"""

from __future__ import annotations

from dqpulse.metrics import (  # noqa: F401  (registration order = FAMILIES order)
    completeness,
    distribution,
    freshness,
    ml_data,
    samples,  # noqa: F401  (after validity: reads its batch cache)
    schema,
    segments,
    uniqueness,
    validity,
    volume,
)
from dqpulse.metrics.base import FAMILIES, FamilyState, register_family
from dqpulse.metrics.window_state import (
    FinalizeContext,
    WindowResult,
    WindowState,
    diff_schema,
    finalize_window,
    merge_partials,
)

_DRIFT = ("psi", "ks", "js", "wasserstein", "linf", "chi2")
METRIC_NAMES: tuple[str, ...] = (
    "volume.records", "volume.bytes", "volume.late_records",
    "freshness.event_lag_p50_seconds", "freshness.event_lag_p95_seconds",
    "freshness.event_lag_max_seconds", "freshness.seconds_since_last_record",
    "freshness.consumer_lag_records",
    "completeness.null_ratio", "completeness.empty_ratio", "completeness.required_violations",
    "distribution.min", "distribution.max", "distribution.mean", "distribution.std",
    "distribution.p01", "distribution.p05", "distribution.p25", "distribution.p50",
    "distribution.p75", "distribution.p95", "distribution.p99",
    "distribution.distinct_count", "distribution.top_k_share", "distribution.length_mean",
    "distribution.unseen_share",
    *(f"distribution.{name}" for name in _DRIFT),
    *(f"distribution.{name}_baseline" for name in _DRIFT),
    "schema.observed_fields", "schema.untracked_fields", "schema.new_fields",
    "schema.removed_fields", "schema.type_changes", "schema.contract_violations",
    "validity.violation_ratio", "uniqueness.duplicate_ratio",
    "ml_data.class_share", "ml_data.minority_ratio", "ml_data.label_entropy",
    "ml_data.parity_difference", "ml_data.disparate_impact",
    "quality.completeness", "quality.validity", "quality.uniqueness", "quality.timeliness",
    "quality.consistency",
)

__all__ = [
    "FAMILIES", "METRIC_NAMES", "FamilyState", "FinalizeContext", "WindowResult",
    "WindowState", "diff_schema", "finalize_window", "merge_partials", "register_family",
]
