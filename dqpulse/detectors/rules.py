"""Static rules as detectors: thresholds, freshness SLA, schema contract, validity rules.

A rule scores 1.0 when it is broken and 0.0 otherwise, from the first observation on (no
warm-up, nothing learned). Feedback does not change a rule: the rule is the user's own
contract, changed in ``dqpulse.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dqpulse.detectors.base import Detector, Explanation, empty_explanation, finite, register

__all__ = ["FreshnessSlaRule", "SchemaContractRule", "ThresholdRule", "ValidityRule"]


class _StaticRule(Detector):
    """``x = {"value": v}`` is broken when it leaves ``[low, high]``."""

    def _bounds(self) -> tuple[float, float]:
        raise NotImplementedError

    def learn_one(self, x: Mapping[str, Any]) -> None:
        return None

    def score_one(self, x: Mapping[str, Any]) -> float:
        value = finite(x.get("value"))
        if value is None:
            return 0.0
        low, high = self._bounds()
        return 1.0 if value < low or value > high else 0.0

    def explain(self, x: Mapping[str, Any]) -> Explanation:
        value = finite(x.get("value"))
        low, high = self._bounds()
        explanation = empty_explanation(value)
        explanation["expected_low"] = None if math.isinf(low) else low
        explanation["expected_high"] = None if math.isinf(high) else high
        if value is not None:
            explanation["direction"] = "up" if value > high else "down" if value < low else None
        explanation["rule"] = self.name
        return explanation


@register("threshold")
class ThresholdRule(_StaticRule):
    """Broken when the value is below ``min`` or above ``max`` (either may be omitted).

    >>> rule = ThresholdRule(min=0.0, max=10.0)
    >>> rule.score_one({"value": 11.0}), rule.score_one({"value": 5.0})
    (1.0, 0.0)
    """

    def __init__(self, min: float | None = None, max: float | None = None) -> None:  # noqa: A002
        if min is not None and max is not None and min > max:
            raise ValueError(f"min ({min}) is greater than max ({max})")
        self.min = min
        self.max = max

    def _bounds(self) -> tuple[float, float]:
        return (-math.inf if self.min is None else self.min,
                math.inf if self.max is None else self.max)


@register("freshness_sla")
class FreshnessSlaRule(_StaticRule):
    """Broken when ``freshness.seconds_since_last_record`` exceeds ``sla_seconds``.

    >>> FreshnessSlaRule(sla_seconds=300).score_one({"value": 301.0})
    1.0
    """

    def __init__(self, sla_seconds: float) -> None:
        if sla_seconds <= 0:
            raise ValueError("sla_seconds must be positive")
        self.sla_seconds = sla_seconds

    def _bounds(self) -> tuple[float, float]:
        return -math.inf, self.sla_seconds


@register("schema_contract")
class SchemaContractRule(_StaticRule):
    """Broken when a window has more than ``tolerance`` schema-contract violations.

    >>> SchemaContractRule().score_one({"value": 1}), SchemaContractRule().score_one({"value": 0})
    (1.0, 0.0)
    """

    def __init__(self, tolerance: float = 0.0) -> None:
        self.tolerance = tolerance

    def _bounds(self) -> tuple[float, float]:
        return -math.inf, self.tolerance


@register("validity")
class ValidityRule(_StaticRule):
    """Broken when a validity rule's violation ratio exceeds ``tolerance``.

    >>> ValidityRule(tolerance=0.01).score_one({"value": 0.02})
    1.0
    """

    def __init__(self, tolerance: float = 0.0) -> None:
        if not 0.0 <= tolerance <= 1.0:
            raise ValueError("tolerance is a ratio in [0, 1]")
        self.tolerance = tolerance

    def _bounds(self) -> tuple[float, float]:
        return -math.inf, self.tolerance
