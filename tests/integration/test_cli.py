"""The `dqpulse` command line as users run it (real processes, real Postgres)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, select

from dqpulse.store.tables import datasets, lineage_edges

pytestmark = pytest.mark.integration

BAD = """datasets:
  - name: orders
    topic: orders
    window: 1m
    colour: red
  - name: orders
    topic: orders2
    lateness: [1, 2]
"""

GOOD = """datasets:
  - {name: orders_raw, topic: orders-raw}
  - {name: orders, topic: orders, window: 30s, owner: payments}
lineage:
  - {from: orders_raw, to: orders, job: enrich}
"""


def _dqpulse(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_validate_reports_wrong_type_unknown_key_and_duplicate_name_with_lines(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = _dqpulse("validate", "-f", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert f"error: {path}:5: datasets[0].colour: unknown key 'colour'" in lines
    assert any(line.startswith(f"error: {path}:6: datasets[1].name: duplicate dataset name")
               for line in lines)
    assert any(line.startswith(f"error: {path}:8: datasets[1].lateness:") for line in lines)


def test_migrate_then_apply_stores_datasets_and_lineage_all_or_nothing(fresh_db, tmp_path):
    env = {"DQPULSE_DATABASE_URL": fresh_db}
    assert _dqpulse("migrate", env=env).returncode == 0  # idempotent on a migrated database
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    result = _dqpulse("apply", "-f", str(good), env=env)
    assert result.returncode == 0, result.stderr
    assert "dataset orders: created" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("window: 30s", "window: 30s\n    colour: red"))
    assert _dqpulse("apply", "-f", str(bad), env=env).returncode == 2
    engine = create_engine(fresh_db)
    with engine.connect() as conn:
        names = sorted(row.name for row in conn.execute(select(datasets.c.name)))
        edges = conn.execute(select(lineage_edges.c.source, lineage_edges.c.target)).all()
        window = conn.execute(select(datasets.c.spec).where(datasets.c.name == "orders")
                              ).scalar_one()["window"]
    engine.dispose()
    assert names == ["orders", "orders_raw"]
    assert [tuple(e) for e in edges] == [("orders_raw", "orders")]
    assert window == 30.0
    again = _dqpulse("apply", "-f", str(good), env=env)
    assert "dataset orders: unchanged" in again.stdout


def test_bad_setting_is_named(tmp_path):
    result = _dqpulse("validate", "-f", "x.yaml", env={"DQPULSE_POLL_MAX_RECORDS": "lots"})
    assert result.returncode == 2
    assert "poll_max_records" in result.stderr


def test_detect_scores_a_csv_one_row_each_without_look_ahead(tmp_path):
    path = tmp_path / "s.csv"
    rows = ["timestamp,value"] + [f"{1_700_000_000 + 3600 * i},{100 + i % 5}" for i in range(300)]
    rows[250] = f"{1_700_000_000 + 3600 * 249},5000"
    path.write_text("\n".join(rows) + "\n")
    full = _dqpulse("detect", "--csv", str(path), "--detector", "robust")
    assert full.returncode == 0, full.stderr
    scores = [float(line.split(",")[2]) for line in full.stdout.splitlines()[1:]]
    assert len(scores) == 300
    assert scores[249] == max(scores) and scores[249] >= 0.9
    path.write_text("\n".join(rows[:200]) + "\n")  # a prefix scores the same: no look-ahead
    prefix = _dqpulse("detect", "--csv", str(path), "--detector", "robust")
    head = [float(line.split(",")[2]) for line in prefix.stdout.splitlines()[1:]]
    assert head == scores[:199]


def test_detect_takes_a_metric_kind_params_and_a_threshold(tmp_path):
    path = tmp_path / "s.csv"
    rows = ["timestamp,value"] + [f"{1_700_000_000 + 300 * i},{100 + i % 7}" for i in range(400)]
    rows[350] = f"{1_700_000_000 + 300 * 349},900"
    path.write_text("\n".join(rows) + "\n")
    out = _dqpulse("detect", "--csv", str(path), "--detector", "adaptive", "--metric-kind",
                   "volume", "--param", "adopt_after=6", "--threshold", "0.9")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "timestamp,value,alert,score"
    alerts = [int(line.split(",")[2]) for line in lines[1:]]
    assert alerts[349] == 1 and sum(alerts) <= 3
    explained = _dqpulse("detect", "--csv", str(path), "--detector", "adaptive",
                         "--metric-kind", "volume", "--param", "adopt_after=6",
                         "--threshold", "0.9", "--explain")
    assert explained.returncode == 0, explained.stderr
    rows = [line.split(",") for line in explained.stdout.splitlines()]
    assert rows[0] == ["timestamp", "value", "alert", "score", "expected", "expected_low",
                       "expected_high", "z", "evidence"]
    assert [row[:4] for row in rows[1:]] == [line.split(",") for line in lines[1:]]
    spike = rows[350]
    assert spike[2] == "1" and float(spike[1]) > float(spike[6]) > float(spike[4])
    assert "point" in spike[8].split(";") and float(spike[7]) > 4.0
    missing = _dqpulse("detect", "--csv", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert "cannot read" in missing.stderr and "nope.csv" in missing.stderr
    bad = _dqpulse("detect", "--csv", str(path), "--param", "no_such_param=1")
    assert bad.returncode != 0 and "no_such_param" in bad.stderr
    helped = _dqpulse("detect", "--help")
    assert "volume: seasonal" in helped.stdout and "distribution: adaptive" in helped.stdout
