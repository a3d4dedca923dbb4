"""Which series the detectors watch: the one place that decides what can raise alerts.

Every other metric is kept as history (and scored by nothing): watching fewer,
well-chosen series is how dqpulse keeps false alarms down.
"""

from __future__ import annotations

from dqpulse.spec import DatasetSpec

#: Metrics whose series the detectors watch (exact metric names).
WATCHED_METRICS = frozenset({
    "volume.records",
    "freshness.seconds_since_last_record",
    "freshness.event_lag_p95_seconds",
    "volume.late_records",
    "completeness.null_ratio",
    "completeness.required_violations",
    "distribution.mean",
    "distribution.p50",
    "distribution.distinct_count",
    "distribution.unseen_share",
    "schema.new_fields",
    "schema.removed_fields",
    "schema.type_changes",
    "schema.contract_violations",
    "validity.violation_ratio",
    "uniqueness.duplicate_ratio",
    "ml_data.parity_difference",
    # not "distribution.psi" (nor the other drift scores): on windows of a few hundred
    # values PSI is mostly sampling noise, its expected value ~ (bins - 1) * (1/n + 1/m)
    # moves with the volume and its tail is long; mean and p50 catch the shifts it would,
    # and it stays in the history for root cause.
    # not "ml_data.minority_ratio": a window where one class is absent reports 1.0
    # (perfect balance) instead of 0, so quiet night windows without a rare class alert.
})
#: The dataset autoencoder's point (scored by :mod:`dqpulse.finalize.autoencoder` over the
#: window's watched series; not a watched series itself) and its detector-state key.
AUTOENCODER_METRIC = "anomaly.autoencoder"
AUTOENCODER_SERIES = f"{AUTOENCODER_METRIC}|"

# Metrics describing a field's value distribution; meaningless on the dataset's key (an
# identifier: its mean and drift are noise, its duplicates are uniqueness' business).
_VALUE_DISTRIBUTION = ("distribution.",)


def is_watched_metric(metric: str) -> bool:
    """Whether some series of ``metric`` may be watched (see :data:`WATCHED_METRICS`)."""
    return metric in WATCHED_METRICS


def is_watched(spec: DatasetSpec, metric: str, field: str = "") -> bool:
    """Whether the detectors watch the series (metric, field) of ``spec``."""
    if not is_watched_metric(metric):
        return False
    return not (field and field == spec.key and metric.startswith(_VALUE_DISTRIBUTION))
