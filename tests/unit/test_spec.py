from __future__ import annotations

import pytest

from dqpulse.errors import ConfigError
from dqpulse.spec import load_spec, parse_duration, parse_spec

VALID = """
datasets:
  - name: orders
    topic: orders
    format: json
    event_time: ts
    window: 1m
    lateness: 30s
    owner: payments
    freshness_sla: 5m
    key: order_id
    label: is_fraud
    fairness: {group: gender, outcome: approved}
    fields:
      amount:  {type: number, required: true, min: 0}
      country: {type: string, allowed: [DE, FR, US]}
      email:   {type: string, pattern: '^[^@]+@[^@]+$'}
lineage:
  - {from: orders, to: orders, job: enrich-orders}
notifications:
  - name: payments-oncall
    type: slack
    url: ${SLACK_WEBHOOK_URL}
    match: {owner: payments, severity: [critical, warning]}
"""


def test_design_example_parses_with_durations_and_env_expansion():
    spec = parse_spec(VALID, environ={"SLACK_WEBHOOK_URL": "http://127.0.0.1:9/hook"})
    orders = spec.dataset("orders")
    assert orders.window == 60.0
    assert orders.lateness == 30.0
    assert orders.freshness_sla == 300.0
    assert orders.fields["amount"].required is True
    assert orders.fairness is not None and orders.fairness.group == "gender"
    assert spec.notifications[0].url == "http://127.0.0.1:9/hook"
    assert spec.lineage[0].source == "orders"


def test_wrong_type_unknown_key_and_duplicate_name_are_all_reported_with_lines():
    text = """datasets:
  - name: orders
    topic: orders
    window: 1m
    colour: red
  - name: orders
    topic: other
    lateness: [1, 2]
"""
    with pytest.raises(ConfigError) as info:
        parse_spec(text, source="bad.yaml")
    problems = info.value.problems
    assert "bad.yaml:5: datasets[0].colour: unknown key 'colour'" in problems
    assert any(p.startswith("bad.yaml:6: datasets[1].name: duplicate dataset name 'orders'")
               for p in problems)
    assert any(p.startswith("bad.yaml:8: datasets[1].lateness:") for p in problems)
    assert len(problems) == 3


def test_missing_environment_variable_names_the_variable_and_line():
    with pytest.raises(ConfigError) as info:
        parse_spec(VALID, environ={})
    assert any("SLACK_WEBHOOK_URL is not set" in p and ":23:" in p for p in info.value.problems)


def test_lineage_to_unknown_dataset_is_rejected():
    text = "datasets:\n  - {name: a, topic: a}\nlineage:\n  - {from: a, to: nope}\n"
    with pytest.raises(ConfigError, match="lineage\\[0\\].to: unknown dataset 'nope'"):
        parse_spec(text)


@pytest.mark.parametrize("bad", ["0s", "2d", "soon"])
def test_window_out_of_range_or_malformed_is_rejected(bad):
    with pytest.raises(ConfigError, match="window"):
        parse_spec(f"datasets:\n  - name: a\n    topic: a\n    window: {bad}\n")


def test_invalid_yaml_reports_line():
    with pytest.raises(ConfigError, match=r"x.yaml:3: invalid YAML"):
        parse_spec("datasets:\n  - name: [unclosed\n", source="x.yaml")


def test_bad_regex_and_inverted_range_are_rejected():
    text = ("datasets:\n  - name: a\n    topic: a\n    fields:\n"
            "      e: {pattern: '('}\n      n: {min: 5, max: 1}\n")
    with pytest.raises(ConfigError) as info:
        parse_spec(text)
    joined = "\n".join(info.value.problems)
    assert "invalid regular expression" in joined
    assert "min (5.0) is greater than max (1.0)" in joined


def test_parse_duration_units():
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1.5h") == 5400.0
    with pytest.raises(ValueError):
        parse_duration("1 fortnight")


def test_a_file_that_is_not_utf8_names_its_line_and_a_bom_is_read(tmp_path):
    path = tmp_path / "dqpulse.yaml"
    path.write_bytes(b"datasets:\n  - name: orders\n    topic: orders # caf\xe9\n")
    with pytest.raises(ConfigError, match=r"dqpulse.yaml:3: not UTF-8 text \(byte 0xe9"):
        load_spec(path)
    path.write_bytes(b"\xef\xbb\xbfdatasets:\n  - name: orders\n    topic: orders\n")
    assert load_spec(path).datasets[0].name == "orders"
    with pytest.raises(ConfigError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
