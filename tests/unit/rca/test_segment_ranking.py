"""Adtributor-style ranking of dimension values: explanatory power, surprise, succinctness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dqpulse.metrics.segments import OTHER_VALUE, SegmentState
from dqpulse.rca.segments import EEP, _js_term, attribute, measure_for
from dqpulse.spec import parse_spec

SPEC = parse_spec("""
datasets:
  - name: orders
    topic: orders
    dimensions: [producer, country]
    fields:
      customer.segment: {type: string}
      amount: {type: number}
""").datasets[0]


def state(tables: dict[str, dict[str, dict[str, float]]]) -> SegmentState:
    """A segment state from ``{dimension: {value: {column: number}}}``."""
    out = SegmentState(SPEC)
    for dimension, values in tables.items():
        rows = np.zeros((len(values), len(out.columns)))
        for i, stats in enumerate(values.values()):
            for column, number in stats.items():
                rows[i, out.columns.index(column)] = number
        out.tables[dimension].add(list(values), rows, out.capacity)
    return out


def volumes(**dimensions: dict[str, float]) -> SegmentState:
    return state({d: {v: {"count": n} for v, n in values.items()}
                  for d, values in dimensions.items()})


def dimension(found: dict, name: str) -> dict:
    return next(d for d in found["dimensions"] if d["dimension"] == name)


def test_explanatory_power_is_each_values_share_of_the_change():
    reference = volumes(producer={"a": 100, "b": 100, "c": 100})
    current = volumes(producer={"a": 100, "b": 160, "c": 140})
    found = attribute("volume.records", "", current, reference)
    assert found is not None and found["measure"] == "volume"
    shares = {v["value"]: v["share"] for v in dimension(found, "producer")["values"]}
    assert shares == pytest.approx({"b": 0.6, "c": 0.4, "a": 0.0})
    assert sum(shares.values()) == pytest.approx(1.0)  # the excesses sum to the change
    assert (found["value"], found["share"]) == ("b", 0.6)
    assert dimension(found, "producer")["explains"] == pytest.approx(1.0)  # b + c
    assert found["text"] == "60% of the volume increase comes from producer=b"


def test_a_value_that_vanished_carries_a_volume_drop():
    reference = volumes(producer={"a": 100, "b": 100, "gone": 200})
    current = volumes(producer={"a": 100, "b": 90})
    found = attribute("volume.records", "", current, reference)
    assert found is not None and found["value"] == "gone"
    assert found["share"] == pytest.approx(200 / 210, abs=1e-4)
    assert found["text"].startswith("95% of the volume decrease comes from producer=gone")


def test_surprise_is_a_jensen_shannon_term_of_expected_and_observed_shares():
    assert _js_term(0.3, 0.3) == 0.0
    assert _js_term(0.0, 0.0) == 0.0
    assert _js_term(0.0, 0.8) == pytest.approx(0.5 * 0.8 * math.log(2))
    assert _js_term(0.1, 0.5) > _js_term(0.1, 0.3) > _js_term(0.1, 0.15) > 0
    assert _js_term(0.1, 0.5) == pytest.approx(_js_term(0.5, 0.1))  # symmetric


def test_of_two_equally_succinct_dimensions_the_more_surprising_one_wins():
    # producer p1 triples; 80% of p1 is DE, so DE also carries 80% of the growth, but DE
    # was already 40% of the volume: its share moved less than p1's (10% -> 25%)
    reference = volumes(producer={f"p{i}": 100 for i in range(1, 11)},
                        country={"DE": 400, "FR": 300, "US": 300})
    current = volumes(producer={**{f"p{i}": 100 for i in range(2, 11)}, "p1": 300},
                      country={"DE": 560, "FR": 320, "US": 320})
    found = attribute("volume.records", "", current, reference)
    assert found is not None
    producer, country = dimension(found, "producer"), dimension(found, "country")
    assert producer["explanatory"] and country["explanatory"]
    assert country["values"][0]["value"] == "DE" and country["explains"] == pytest.approx(0.8)
    assert producer["surprise"] > country["surprise"]
    assert (found["dimension"], found["value"], found["share"]) == ("producer", "p1", 1.0)


def test_one_value_beats_many_small_ones_that_each_explain_a_bit():
    # key prefixes: the change is spread thin, each above EEP; producer: one value
    reference = volumes(producer={"a": 100, "b": 100, "c": 100, "d": 100},
                        country={"k1": 80, "k2": 80, "k3": 80, "k4": 80, "k5": 80})
    current = volumes(producer={"a": 200, "b": 100, "c": 100, "d": 100},
                      country={"k1": 100, "k2": 100, "k3": 100, "k4": 100, "k5": 100})
    found = attribute("volume.records", "", current, reference)
    assert found is not None
    assert [d["dimension"] for d in found["dimensions"]][:2] == ["producer", "country"]
    assert found["value"] == "a"


def test_values_below_the_eep_threshold_are_never_named():
    # 20 values each explain 5%: no value reaches EEP, the dimension is not explanatory
    reference = volumes(producer={f"p{i:02d}": 100 for i in range(20)},
                        country={"DE": 1000, "FR": 1000})
    current = volumes(producer={f"p{i:02d}": 105 for i in range(20)},
                      country={"DE": 1100, "FR": 1000})
    found = attribute("volume.records", "", current, reference)
    assert found is not None
    producer = dimension(found, "producer")
    assert all(v["share"] < EEP for v in producer["values"])
    assert not producer["explanatory"] and producer["explains"] == 0.0
    assert found["dimensions"][0]["dimension"] == "country"  # explanatory ones rank first
    assert (found["dimension"], found["value"]) == ("country", "DE")


def test_null_ratio_excess_is_measured_against_each_values_own_reference_ratio():
    # "big" always had 10% nulls and keeps them; "small" goes from 0% to 50%
    reference = state({"producer": {
        "big": {"count": 1000, "null:customer.segment": 100},
        "small": {"count": 100, "null:customer.segment": 0}}})
    current = state({"producer": {
        "big": {"count": 1000, "null:customer.segment": 100},
        "small": {"count": 100, "null:customer.segment": 50}}})
    measure = measure_for("completeness.null_ratio", "customer.segment", current)
    assert (measure.numerator, measure.denominator) == (["null:customer.segment"], "count")
    found = attribute("completeness.null_ratio", "customer.segment", current, reference)
    assert found is not None and found["value"] == "small"
    assert found["share"] > 0.95  # big's own (shrunk) rate barely moves its expectation
    assert found["text"].endswith("of the null increase in customer.segment comes from "
                                  "producer=small")


def test_a_mean_shift_is_attributed_through_sum_and_count():
    reference = state({"producer": {
        "a": {"count": 500, "sum:amount": 5000, "num:amount": 500},
        "b": {"count": 500, "sum:amount": 5000, "num:amount": 500}}})
    current = state({"producer": {
        "a": {"count": 500, "sum:amount": 5000, "num:amount": 500},
        "b": {"count": 500, "sum:amount": 50_000, "num:amount": 500}}})
    found = attribute("distribution.mean", "amount", current, reference)
    assert found is not None and found["measure"] == "mean"
    assert (found["value"], found["share"]) == ("b", 1.0)
    assert found["text"] == "100% of the increase of the mean of amount comes from producer=b"


def test_the_long_tail_is_named_as_values_outside_the_heavy_hitters():
    reference = volumes(producer={"a": 100, "b": 100})
    current = volumes(producer={"a": 100, "b": 100})
    current.tables["producer"].other = current.tables["producer"].other.copy()
    current.tables["producer"].other[0] = 300  # 300 records of evicted values
    found = attribute("volume.records", "", current, reference)
    assert found is not None and found["value"] == OTHER_VALUE
    assert found["text"] == ("100% of the volume increase comes from values of producer "
                             "outside its heavy hitters")


def test_no_reference_or_no_change_gives_no_attribution():
    same = volumes(producer={"a": 100, "b": 100})
    assert attribute("volume.records", "", same, None) is None
    assert attribute("volume.records", "", same, volumes(producer={"a": 100, "b": 100})) is None
