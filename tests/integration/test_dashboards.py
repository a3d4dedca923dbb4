"""Dashboards and rules are code, proven on live data.

A private Prometheus (the same binary as the local stack's, on a free loopback port, with
deploy/prometheus/rules) scrapes two real ingest workers, the notifier and the API while
records flow from the real Kafka. Every PromQL target of every panel, with its variables
substituted, must return at least one series with a finite value (a misspelt metric name
returns none and fails); every SQL target must return at least one row from the real
database. Then, with the workers stopped, ``sum by (dataset)`` of the volume and incident
series must equal what the API says, and a dataset removed from the model must lose its
series within two scrape intervals.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import runpy
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML
from sqlalchemy import create_engine, text

from tests.integration.helpers import json_bytes, produce, stop_processes, wait_until
from tests.integration.receivers import webhook_receiver

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "dqpulse.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "dqpulse_test.yml"
SCRAPE_S = 1.0


# -- what the dashboards ask -------------------------------------------------------------
def _targets() -> list[tuple[str, str, dict[str, Any]]]:
    """(dashboard, panel title, target) of every panel target and annotation."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets") or []:
                out.append((path.name, panel["title"], target))
        for annotation in board.get("annotations", {}).get("list", []):
            if "target" in annotation:
                out.append((path.name, f"annotation {annotation['name']}",
                            annotation["target"]))
    return out


def _variables() -> list[tuple[str, str]]:
    return [(path.name, variable["query"]) for path in sorted(DASHBOARDS.glob("*.json"))
            for variable in json.loads(path.read_text()).get("templating", {}).get("list", [])]


def _promql(expr: str, dataset: str) -> str:
    expr = expr.replace('dataset=~"$dataset"', f'dataset=~"{re.escape(dataset)}"')
    expr = expr.replace("$dataset", dataset).replace('field=~"$field"', 'field=~".*"')
    return expr.replace("$__rate_interval", "1m")


def _sql(sql: str, dataset: str) -> str:
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", r"\1 > now() - interval '6 hours'", sql)
    return sql.replace("$dataset", dataset)


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", (expr, body.get("error"))
    return list(body["data"]["result"])


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(item["value"][1])) for item in result)


def _promql_gaps(prometheus: str, dataset: str) -> list[str]:
    gaps = []
    for board, title, target in _targets():
        if "expr" in target and not _finite(_query(prometheus, _promql(target["expr"],
                                                                          dataset))):
            gaps.append(f"{board} / {title}: {target['expr']}")
    for board, query in _variables():
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", query)
        assert match, query
        series = _query(prometheus, _promql(match[1], dataset))
        if not any(match[2] in item["metric"] for item in series):
            gaps.append(f"{board} / variable: {query}")
    return gaps


# -- the processes -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spec(main: str, topic: str, gone: str, gone_topic: str, hook: str, dead: str) -> str:
    gone_entry = f"  - {{name: {gone}, topic: {gone_topic}, window: 2s, lateness: 0s}}\n"
    return f"""datasets:
  - name: {main}
    topic: {topic}
    window: 2s
    lateness: 0s
    owner: team-dash
    freshness_sla: 10m
    quality_objective: 0.99
    key: id
    label: label
    fairness: {{group: group, outcome: label, positive: "yes"}}
    fields:
      amount: {{type: number, min: 0, max: 1000}}
      name: {{type: string}}
      sku: {{type: string, required: true}}
{gone_entry}notifications:
  - {{name: ops, type: webhook, url: "{hook}", secret: s3cret}}
  - {{name: broken, type: webhook, url: "{dead}", secret: s3cret}}
""", gone_entry


def _record(i: int, rng: random.Random) -> bytes:
    record: dict[str, Any] = {
        "id": i if rng.random() > 0.05 else i - 1, "label": rng.choice(["yes", "no", "no"]),
        "group": rng.choice(["a", "b"]), "name": rng.choice(["", "ann", "bob", "carla"]),
        "amount": None if rng.random() < 0.05 else rng.gauss(100, 20) * rng.choice([1, 1, -1]),
    }
    if rng.random() > 0.05:
        record["sku"] = f"sku-{rng.randrange(50)}"
    return json_bytes(record)


class _Producer(threading.Thread):
    """Records flow while the test looks: 400 a second across both topics, some broken."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topics = bootstrap, topics
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng, i = random.Random(7), 0
        try:
            while not self.stop.is_set():
                batch = [(None, _record(i + n, rng) if n % 50 else b"{not json")
                         for n in range(100)]
                for topic in self.topics:
                    produce(self.bootstrap, topic, batch)
                i += 100
                self.stop.wait(0.5)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc


def _prometheus(tmp_path: Path, port: int, api: int, workers: list[int]) -> subprocess.Popen:
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": f"{SCRAPE_S:g}s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "dqpulse-api", "static_configs": [{"targets": [f"127.0.0.1:{api}"]}]},
            {"job_name": "dqpulse-worker",
             "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in workers]}]},
        ]}))
    return subprocess.Popen(
        [shutil.which("prometheus") or "prometheus", f"--config.file={config}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _dqpulse(env: dict[str, str], *args: str, port: int | None = None) -> subprocess.Popen:
    if port is not None:  # the notifier serves on DQPULSE_WORKER_METRICS_PORT + 2
        base = port - 2 if args[-1] == "notify" else port
        env = dict(env, DQPULSE_WORKER_METRICS_PORT=str(base))
    return subprocess.Popen([sys.executable, "-m", "workers.cli", *args], env=env, cwd=ROOT)


@pytest.mark.timeout(300)
def test_every_panel_has_live_data_and_each_value_is_exported_once(
        fresh_db, make_topic, kafka_bootstrap, tmp_path):
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (deploy/local/stack up installs it)")
    topic, gone_topic = make_topic("dash", partitions=2), make_topic("gone", partitions=1)
    dead_letters = make_topic("dash-dlq", partitions=1)
    suffix = topic.split("-")[-1]
    main, gone = f"dash_{suffix}", f"gone_{suffix}"
    hook, refused = webhook_receiver("s3cret"), webhook_receiver("s3cret")
    refused.fail_with(410)  # permanent: dead-lettered at once
    spec, gone_entry = _spec(main, topic, gone, gone_topic, hook.url, refused.url)
    config = tmp_path / "dqpulse.yaml"
    config.write_text(spec)
    api_port, prom_port = _free_port(), _free_port()
    worker_ports = [_free_port(), _free_port(), _free_port()]
    env = dict(os.environ, DQPULSE_DATABASE_URL=fresh_db, DQPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
               DQPULSE_KAFKA_GROUP=f"g-{topic}",
               # the API's own access rules are tested elsewhere: here only its exports
               DQPULSE_AUTH="open",
               DQPULSE_API_PORT=str(api_port), DQPULSE_DEAD_LETTER_TOPIC=dead_letters,
               DQPULSE_IDLE_PARTITION_TIMEOUT_S="2", DQPULSE_AUTOENCODER="off",
               DQPULSE_LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    assert subprocess.run([sys.executable, "-m", "workers.cli", "apply", "-f", str(config)],
                          env=env, cwd=ROOT, check=False).returncode == 0
    api = f"http://127.0.0.1:{api_port}"
    prometheus = f"http://127.0.0.1:{prom_port}"
    producer = _Producer(kafka_bootstrap, [topic, gone_topic])
    ingest = [_dqpulse(env, "worker", "ingest", port=port) for port in worker_ports[:2]]
    others = [_dqpulse(env, "worker", "notify", port=worker_ports[2]), _dqpulse(env, "api"),
              _prometheus(tmp_path, prom_port, api_port, worker_ports)]
    try:
        producer.start()

        def all_panels_have_data() -> bool:
            try:
                httpx.get(f"{api}/api/v1/datasets", timeout=5)  # API latency has samples
                return not _promql_gaps(prometheus, main)
            except httpx.TransportError:
                return False  # a process still starting

        try:
            wait_until(all_panels_have_data, 150, interval_s=2.0,
                       message="every PromQL target to return data")
        except AssertionError:
            pytest.fail("panels without data:\n" + "\n".join(_promql_gaps(prometheus, main)))
        assert producer.error is None, producer.error
        engine = create_engine(fresh_db)
        with engine.connect() as conn:
            empty = [f"{board} / {title}" for board, title, target in _targets()
                     if "rawSql" in target
                     and not conn.execute(text(_sql(target["rawSql"], main))).first()]
        engine.dispose()
        assert not empty, empty

        producer.stop.set()
        producer.join(30)
        stop_processes(ingest)
        time.sleep(3 * SCRAPE_S)  # the API keeps exporting what the database holds
        _assert_exported_once(prometheus, api, main)
        _assert_removed_dataset_goes(prometheus, env, config, spec.replace(gone_entry, ""),
                                     gone)
    finally:
        producer.stop.set()
        stop_processes(ingest + others)
        hook.down()
        refused.down()


def _assert_exported_once(prometheus: str, api: str, dataset: str) -> None:
    row = httpx.get(f"{api}/api/v1/datasets/{dataset}", timeout=5).json()
    points = httpx.get(f"{api}/api/v1/datasets/{dataset}/metrics/volume.records",
                       params={"start": row["last_window_start"]}, timeout=5).json()["points"]
    newest = max(points, key=lambda p: p["window_start"])
    one = f'{{dataset="{dataset}"}}'
    volume = _query(prometheus, f"sum by (dataset) (dqpulse_volume_records{one})")
    incidents = _query(prometheus, f"sum by (dataset) (dqpulse_incidents_open{one})")
    assert row["open_incidents"] > 0
    assert float(volume[0]["value"][1]) == newest["value"]
    assert float(incidents[0]["value"][1]) == row["open_incidents"]
    copies = _query(prometheus, f"count by (dataset) (dqpulse_volume_records{one})")
    assert float(copies[0]["value"][1]) == 1
    assert float(_query(prometheus, "sum(dqpulse_exporter_leader)")[0]["value"][1]) == 1


def _assert_removed_dataset_goes(prometheus: str, env: dict[str, str], config: Path,
                                 spec: str, gone: str) -> None:
    selector = f'{{job="dqpulse-api", dataset="{gone}"}}'
    assert _query(prometheus, selector)
    config.write_text(spec)
    pruned = time.monotonic()
    # a new model version without the dataset (its API rows stay: no --prune)
    assert subprocess.run([sys.executable, "-m", "workers.cli", "apply", "-f", str(config)],
                          env=env, cwd=ROOT, check=False).returncode == 0
    applied = time.monotonic()
    wait_until(lambda: not _query(prometheus, selector), 10, interval_s=0.1,
               message=f"the series of {gone} to go")
    # two scrape intervals after the model changed (plus the query's own round trip)
    assert time.monotonic() - applied <= 2 * SCRAPE_S + 0.5, time.monotonic() - pruned


# -- static checks ------------------------------------------------------------------------
def test_committed_dashboards_are_what_the_generator_writes():
    generator = runpy.run_path(str(ROOT / "deploy" / "grafana" / "generate.py"))
    rendered = generator["render"]()
    assert sorted(rendered) == sorted(p.name for p in DASHBOARDS.glob("*.json"))
    for name, content in rendered.items():
        assert (DASHBOARDS / name).read_text() == content, f"{name}: run generate.py"


def test_every_panel_has_a_unit_thresholds_and_a_description():
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            if panel["type"] == "row":
                continue
            defaults = panel["fieldConfig"]["defaults"]
            assert panel.get("description"), (path.name, panel["title"])
            assert defaults.get("unit"), (path.name, panel["title"])
            assert defaults.get("thresholds", {}).get("steps"), (path.name, panel["title"])
            assert panel.get("targets"), (path.name, panel["title"])


def test_alert_rules_follow_the_convention_and_every_rule_has_a_promtool_test():
    rules = YAML(typ="safe").load(RULES.read_text())
    tests = YAML(typ="safe").load(RULE_TESTS.read_text())["tests"]
    operations = (ROOT / "docs" / "operations.md").read_text().lower()
    alert_cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    recorded = {case["expr"] for test in tests for case in test.get("promql_expr_test", [])}
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                assert rule["record"] in recorded, rule["record"]
                continue
            name = rule["alert"]
            assert re.fullmatch(r"Dqpulse[A-Z][A-Za-z]+", name), name
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
            anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
            assert f"### {name.lower()}" in operations and anchor == name.lower(), name
            cases = [case for case in alert_cases if case["alertname"] == name]
            assert any(case["exp_alerts"] for case in cases), f"{name} never tested firing"
            assert any(not case["exp_alerts"] for case in cases), f"{name} never tested quiet"
