from __future__ import annotations

import pytest

from dqpulse.detectors.rules import (
    FreshnessSlaRule,
    SchemaContractRule,
    ThresholdRule,
    ValidityRule,
)


def test_threshold_rule_checks_both_bounds_and_explains() -> None:
    rule = ThresholdRule(min=1.0, max=10.0)
    assert [rule.score_one({"value": v}) for v in (0.5, 1.0, 10.0, 10.5)] == [1.0, 0, 0, 1.0]
    explanation = rule.explain({"value": 0.5})
    assert explanation["direction"] == "down" and explanation["expected_low"] == 1.0


def test_threshold_rule_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError):
        ThresholdRule(min=2, max=1)


def test_freshness_sla_breaks_only_above_the_sla() -> None:
    rule = FreshnessSlaRule(sla_seconds=300)
    assert rule.score_one({"value": 300}) == 0.0
    assert rule.score_one({"value": 301}) == 1.0
    assert rule.explain({"value": 301})["direction"] == "up"


def test_schema_contract_breaks_on_any_violation() -> None:
    assert SchemaContractRule().score_one({"value": 0}) == 0.0
    assert SchemaContractRule().score_one({"value": 1}) == 1.0


def test_validity_rule_respects_tolerance() -> None:
    rule = ValidityRule(tolerance=0.01)
    assert rule.score_one({"value": 0.01}) == 0.0
    assert rule.score_one({"value": 0.011}) == 1.0
    assert rule.score_one({"value": None}) == 0.0


def test_rules_ignore_feedback_and_learning() -> None:
    rule = ValidityRule()
    rule.learn_one({"value": 0.5})
    rule.feedback({"value": 0.5}, "false_positive")
    assert rule.score_one({"value": 0.5}) == 1.0
