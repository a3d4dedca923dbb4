"""The model as numbered versions (SQLite at alembic head): apply, plan, secrets kept as
references, and the watch every running process polls."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, select

from dqpulse.errors import ConfigError
from dqpulse.services.model import (
    ModelCache,
    ModelWatch,
    apply_model,
    current_model,
    plan_apply,
)
from dqpulse.spec import expand_secrets, parse_spec
from dqpulse.store.tables import model_versions

MODEL = """
datasets:
  - name: orders
    topic: orders
    window: 1m
    fields:
      amount: {type: number, min: 0}
  - name: clicks
    topic: clicks
lineage:
  - {from: clicks, to: orders}
notifications:
  - name: oncall
    type: webhook
    url: ${HOOK_URL}
    secret: ${HOOK_SECRET}
"""


def _spec(text: str = MODEL):
    return parse_spec(text, expand_env=False)


def test_apply_stores_the_whole_model_as_a_version_with_secrets_as_references(engine: Engine):
    first = apply_model(engine, _spec(), applied_by="ana", source="dqpulse.yaml")
    assert first.new_version and first.version == 1
    assert first.plan.datasets["created"] == ["clicks", "orders"]
    model = current_model(engine)
    assert model.version == 1 and model.applied_by == "ana"
    assert [c.name for c in model.spec.notifications] == ["oncall"]
    assert model.spec.notifications[0].secret == "${HOOK_SECRET}"
    assert [(e.source, e.target) for e in model.spec.lineage] == [("clicks", "orders")]
    with engine.connect() as conn:
        stored = json.dumps(conn.execute(select(model_versions.c.spec)).scalar_one())
    assert "${HOOK_URL}" in stored and "${HOOK_SECRET}" in stored

    again = apply_model(engine, _spec(), applied_by="ana")
    assert not again.new_version and again.version == 1 and again.plan.empty


def test_plan_says_dataset_by_dataset_what_changes(engine: Engine):
    apply_model(engine, _spec(), applied_by="ana")
    changed = MODEL.replace("min: 0", "min: 1").replace(
        "  - name: clicks\n    topic: clicks\n", "  - name: views\n    topic: views\n")
    changed = changed.replace("{from: clicks, to: orders}", "{from: views, to: orders}")
    plan = plan_apply(engine, _spec(changed))
    assert plan.datasets["created"] == ["views"]
    assert plan.datasets["removed"] == ["clicks"]
    assert plan.datasets["updated"] == ["orders"]
    assert plan.dataset_changes["orders"] == ["fields"]
    assert plan.lineage["created"] == ["views -> orders"]
    assert plan.lineage["removed"] == ["clicks -> orders"]
    assert "dataset orders: updated (fields)" in plan.lines()
    assert current_model(engine).version == 1  # planning applies nothing


def test_secrets_expand_only_where_used_and_unset_ones_are_named():
    spec = _spec()
    expanded = expand_secrets(spec, {"HOOK_URL": "http://127.0.0.1:9/x", "HOOK_SECRET": "s"})
    assert expanded.notifications[0].url == "http://127.0.0.1:9/x"
    assert expanded.notifications[0].secret == "s"
    with pytest.raises(ConfigError) as err:
        expand_secrets(spec, {"HOOK_URL": "http://127.0.0.1:9/x"})
    assert err.value.problems == [
        "notifications[oncall].secret: environment variable HOOK_SECRET is not set"]


def test_watch_reports_each_new_version_once_and_the_cache_follows(engine: Engine):
    clock = [0.0]
    apply_model(engine, _spec(), applied_by="ana")
    watch = ModelWatch(engine, 1, interval_s=2.0, clock=lambda: clock[0])
    cache = ModelCache(engine)
    assert [d.name for d in cache.spec().datasets] == ["orders", "clicks"]
    apply_model(engine, _spec(MODEL.replace("window: 1m", "window: 5m")), applied_by="bo")
    assert watch.changed() is None  # not due yet
    clock[0] = 2.5
    newer = watch.changed()
    assert newer is not None and newer.version == 2 and newer.applied_by == "bo"
    assert newer.spec.datasets[0].window == 300
    clock[0] = 5.0
    assert watch.changed() is None
    assert cache.spec().datasets[0].window == 300


def test_a_database_without_versions_runs_its_applied_datasets(engine: Engine):
    from dqpulse.store import datasets as dataset_store

    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=_spec())
    model = current_model(engine)
    assert model.version == 0 and [d.name for d in model.spec.datasets] == ["clicks", "orders"]


def test_the_api_shows_references_and_masks_literal_secrets():
    from dqpulse.services.model import public_document

    spec = _spec(MODEL + """  - name: chat
    type: slack
    url: https://hooks.slack.example/services/T0/B0/tok3n
    secret: literal-s3cret
""")
    shown = public_document(spec.model_dump(mode="json", by_alias=True))
    by_name = {c["name"]: c for c in shown["notifications"]}
    assert by_name["oncall"]["url"] == "${HOOK_URL}"
    assert by_name["oncall"]["secret"] == "${HOOK_SECRET}"
    assert by_name["chat"]["url"] == "https://hooks.slack.example/***"
    assert by_name["chat"]["secret"] == "***"
    assert "tok3n" not in json.dumps(shown) and "literal-s3cret" not in json.dumps(shown)
