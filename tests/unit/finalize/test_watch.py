from __future__ import annotations

import pytest

from dqpulse.finalize.watch import WATCHED_METRICS, is_watched, is_watched_metric
from dqpulse.spec import DatasetSpec

SPEC = DatasetSpec(name="orders", topic="orders", key="order_id")

# Written out by hand, not derived from WATCHED_METRICS: a series added to or dropped from
# the watch list (so alerting more, or going blind) must be a deliberate change here too.
EXPECTED_WATCHED = {
    "volume.records", "freshness.seconds_since_last_record",
    "freshness.event_lag_p95_seconds", "volume.late_records", "completeness.null_ratio",
    "completeness.required_violations", "distribution.mean", "distribution.p50",
    "distribution.distinct_count", "distribution.unseen_share",
    "schema.new_fields", "schema.removed_fields",
    "schema.type_changes", "schema.contract_violations", "validity.violation_ratio",
    "uniqueness.duplicate_ratio", "ml_data.parity_difference",
}


def test_the_key_field_has_no_value_distribution_alerts() -> None:
    assert not is_watched(SPEC, "distribution.mean", "order_id")
    assert not is_watched(SPEC, "distribution.p50", "order_id")
    assert is_watched(SPEC, "distribution.mean", "amount")
    assert is_watched(SPEC, "uniqueness.duplicate_ratio", "order_id")
    assert is_watched(SPEC, "completeness.null_ratio", "order_id")


def test_only_the_listed_metrics_are_watched() -> None:
    assert is_watched(SPEC, "volume.records")
    assert not is_watched(SPEC, "volume.bytes")
    assert set(WATCHED_METRICS) == EXPECTED_WATCHED


@pytest.mark.parametrize("metric", sorted(EXPECTED_WATCHED))
def test_each_listed_metric_is_watched_on_an_ordinary_field(metric: str) -> None:
    assert is_watched_metric(metric)
    assert is_watched(SPEC, metric, "amount")


def test_noisy_series_do_not_alert() -> None:
    # sampling-noise-dominated drift scores and a label balance that reads 1.0 when a
    # class is absent would page someone every quiet night
    assert not is_watched_metric("distribution.psi")
    assert not is_watched_metric("distribution.linf")
    assert not is_watched_metric("ml_data.minority_ratio")
    # an exact name, not a prefix: a new metric of a watched family is not watched by itself
    assert not is_watched_metric("volume.records_total")
