"""Dashboards and alert rules are code: every query must run on a real Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from ruamel.yaml import YAML

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        def walk(node: object) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("expr"), str):
                    out.append((path.name, node["expr"]))
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(json.loads(path.read_text()))
    return out


def _rule_exprs() -> list[tuple[str, str]]:
    rules = YAML(typ="safe").load((ROOT / "deploy/prometheus/rules/dqpulse.yml").read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"]
            for rule in group["rules"]]


def test_dashboards_have_queries_and_alert_rules_follow_the_naming_convention():
    assert len(_dashboard_exprs()) >= 5
    rules = YAML(typ="safe").load((ROOT / "deploy/prometheus/rules/dqpulse.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert re.fullmatch(r"Dqpulse[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description"} <= set(rule["annotations"])


@pytest.mark.parametrize("where, expr", _dashboard_exprs() + _rule_exprs())
def test_query_runs_on_the_local_prometheus(stack_env, where, expr):
    prometheus = stack_env.get("DQPULSE_PROMETHEUS_URL", "http://127.0.0.1:19090")
    # Grafana template variables are not PromQL: substitute a match-all value
    query = expr.replace("$dataset", ".*").replace("${dataset}", ".*")
    query = re.sub(r"\$__rate_interval|\$__interval", "1m", query)
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10).json()
    assert body["status"] == "success", (where, query, body.get("error"))
