"""Prometheus names of dqpulse's data-quality metrics: one row per metric name it emits.

A family is dataset-level (labels ``dataset`` plus its fixed labels) or per field
(``dataset``, ``field`` plus its fixed labels; the field series budget applies).
docs/metrics.md lists the same table; a unit test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    per_field: bool
    help: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Mapping:
    family: Family
    label_values: tuple[str, ...] = ()


def _family(name: str, per_field: bool, help_text: str, *labels: str) -> Family:
    return Family(f"dqpulse_{name}", per_field, help_text, labels)


VOLUME_RECORDS = _family("volume_records", False, "Records in the newest finalized window")
VOLUME_BYTES = _family("volume_bytes", False, "Bytes of records in the newest finalized window")
LATE_RECORDS = _family("volume_late_records", False,
                       "Records that arrived after their window closed (newest window)")
EVENT_LAG = _family("freshness_event_lag_seconds", False,
                    "Event time to ingest time lag in the newest window (quantile 1 = max)",
                    "quantile")
LAST_RECORD_AGE = _family("freshness_last_record_age_seconds", False,
                          "Seconds from the newest record to the newest window's end")
CONSUMER_LAG = _family("freshness_consumer_lag_records", False,
                       "Records of the topic not yet consumed, at the newest window")
SCHEMA_FIELDS = _family("schema_fields", False,
                        "Fields of the newest window by state (observed, untracked, new, "
                        "removed, type_changed)", "state")
CONTRACT_VIOLATIONS = _family("schema_contract_violations", False,
                              "Records breaking the declared types or required fields")
QUALITY = _family("quality_score_ratio", False,
                  "Quality score of the newest window per dimension (0..1)", "dimension")
NULL_RATIO = _family("completeness_null_ratio", True, "Share of records where the field is null")
EMPTY_RATIO = _family("completeness_empty_ratio", True,
                      "Share of present values that are empty strings or lists")
REQUIRED_VIOLATIONS = _family("completeness_required_violations", True,
                              "Records missing a required field")
STAT = _family("distribution_statistic", True,
               "Field distribution statistic (min, max, mean, std, length_mean) in field units",
               "statistic")
QUANTILE = _family("distribution_quantile", True, "Field value quantile in field units",
                   "quantile")
DISTINCT = _family("distribution_distinct_values", True, "Estimated distinct values of a field")
TOP_K = _family("distribution_top_k_share_ratio", True,
                "Share of values taken by the most frequent ones")
UNSEEN = _family("distribution_unseen_ratio", True,
                 "Share of a field's values not among the trailing windows' frequent values")
DRIFT = _family("distribution_drift", True,
                "Drift of the field's distribution against the previous window or the baseline",
                "statistic", "reference")
VIOLATION = _family("validity_violation_ratio", True,
                    "Share of checked values breaking a rule (field = path:rule)")
DUPLICATES = _family("uniqueness_duplicate_ratio", True, "Share of duplicate keys (field = key)")
CLASS_SHARE = _family("ml_data_class_share_ratio", True,
                      "Share of one label class (field = label=class)")
MINORITY = _family("ml_data_minority_ratio", True, "Smallest over largest class count")
ENTROPY = _family("ml_data_label_entropy_ratio", True, "Normalized label entropy (0..1)")
PARITY = _family("ml_data_parity_difference", True,
                 "Positive-rate difference between groups (field = group)")
IMPACT = _family("ml_data_disparate_impact_ratio", True,
                 "Positive-rate ratio between groups (field = group)")

_DRIFT = ("psi", "ks", "js", "wasserstein", "linf", "chi2")
_QUANTILES = {"p01": "0.01", "p05": "0.05", "p25": "0.25", "p50": "0.5", "p75": "0.75",
              "p95": "0.95", "p99": "0.99"}

MAPPINGS: dict[str, Mapping] = {
    "volume.records": Mapping(VOLUME_RECORDS),
    "volume.bytes": Mapping(VOLUME_BYTES),
    "volume.late_records": Mapping(LATE_RECORDS),
    "freshness.event_lag_p50_seconds": Mapping(EVENT_LAG, ("0.5",)),
    "freshness.event_lag_p95_seconds": Mapping(EVENT_LAG, ("0.95",)),
    "freshness.event_lag_max_seconds": Mapping(EVENT_LAG, ("1",)),
    "freshness.seconds_since_last_record": Mapping(LAST_RECORD_AGE),
    "freshness.consumer_lag_records": Mapping(CONSUMER_LAG),
    "schema.observed_fields": Mapping(SCHEMA_FIELDS, ("observed",)),
    "schema.untracked_fields": Mapping(SCHEMA_FIELDS, ("untracked",)),
    "schema.new_fields": Mapping(SCHEMA_FIELDS, ("new",)),
    "schema.removed_fields": Mapping(SCHEMA_FIELDS, ("removed",)),
    "schema.type_changes": Mapping(SCHEMA_FIELDS, ("type_changed",)),
    "schema.contract_violations": Mapping(CONTRACT_VIOLATIONS),
    **{f"quality.{d}": Mapping(QUALITY, (d,))
       for d in ("completeness", "validity", "uniqueness", "timeliness", "consistency")},
    "completeness.null_ratio": Mapping(NULL_RATIO),
    "completeness.empty_ratio": Mapping(EMPTY_RATIO),
    "completeness.required_violations": Mapping(REQUIRED_VIOLATIONS),
    **{f"distribution.{s}": Mapping(STAT, (s,))
       for s in ("min", "max", "mean", "std", "length_mean")},
    **{f"distribution.{p}": Mapping(QUANTILE, (q,)) for p, q in _QUANTILES.items()},
    "distribution.distinct_count": Mapping(DISTINCT),
    "distribution.top_k_share": Mapping(TOP_K),
    "distribution.unseen_share": Mapping(UNSEEN),
    **{f"distribution.{s}": Mapping(DRIFT, (s, "previous")) for s in _DRIFT},
    **{f"distribution.{s}_baseline": Mapping(DRIFT, (s, "baseline")) for s in _DRIFT},
    "validity.violation_ratio": Mapping(VIOLATION),
    "uniqueness.duplicate_ratio": Mapping(DUPLICATES),
    "ml_data.class_share": Mapping(CLASS_SHARE),
    "ml_data.minority_ratio": Mapping(MINORITY),
    "ml_data.label_entropy": Mapping(ENTROPY),
    "ml_data.parity_difference": Mapping(PARITY),
    "ml_data.disparate_impact": Mapping(IMPACT),
}

DATA_FAMILIES: tuple[Family, ...] = tuple(dict.fromkeys(m.family for m in MAPPINGS.values()))
