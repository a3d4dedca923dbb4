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


# ---- a window changed in place ------------------------------------------------------------
# Session 48: applying `window: 5m` over a measured `window: 1m` made a running worker's
# checkpoints fail for ever (an open 1m window and a new 5m one share their start, and so
# the key of window_partials) and its ingest stop. Apply now refuses it, naming the line.

def _measured(engine: Engine, dataset: str) -> None:
    from sqlalchemy import insert

    from dqpulse.store.tables import partition_checkpoints

    with engine.begin() as conn:
        conn.execute(insert(partition_checkpoints).values(
            dataset=dataset, partition=0, next_offset=10, watermark=1.7e9, state=b""))


def test_a_window_may_change_until_the_dataset_is_measured(engine: Engine):
    apply_model(engine, _spec(), applied_by="ana")
    second = apply_model(engine, _spec(MODEL.replace("window: 1m", "window: 5m")),
                         applied_by="ana")
    assert second.new_version and second.plan.dataset_changes["orders"] == ["window"]


def test_a_measured_dataset_s_window_cannot_change_in_place(engine: Engine, tmp_path):
    apply_model(engine, _spec(), applied_by="ana")
    _measured(engine, "orders")
    changed = tmp_path / "dqpulse.yaml"
    changed.write_text(MODEL.replace("window: 1m", "window: 5m"))
    for attempt in (lambda s: apply_model(engine, s, applied_by="ana", source=str(changed)),
                    lambda s: plan_apply(engine, s, source=str(changed))):
        with pytest.raises(ConfigError) as caught:
            attempt(_spec(changed.read_text()))
        (problem,) = caught.value.problems
        assert problem.startswith(f"{changed}:5: datasets[0].window: dataset 'orders' has "
                                  "been measured in 1m windows and cannot change to 5m"), problem
        assert "orders_5m" in problem and "keep window: 1m" in problem
    assert current_model(engine).version == 1  # nothing applied
    # the way out it names: the new window under a new name, beside the old dataset
    renamed = MODEL.replace("window: 1m", "window: 1m\n  - name: orders_5m\n    topic: orders"
                                          "\n    window: 5m")
    assert apply_model(engine, _spec(renamed), applied_by="ana").version == 2
    # other changes to the measured dataset apply as before
    looser = renamed.replace("min: 0", "min: -1")
    assert apply_model(engine, _spec(looser), applied_by="ana").version == 3


def test_a_removed_dataset_comes_back_with_its_old_window_only(engine: Engine):
    apply_model(engine, _spec(), applied_by="ana")
    _measured(engine, "orders")
    without = MODEL.replace("  - name: orders\n    topic: orders\n    window: 1m\n"
                            "    fields:\n      amount: {type: number, min: 0}\n", "")
    without = without.replace("lineage:\n  - {from: clicks, to: orders}\n", "")
    assert "orders" not in [d.name for d in _spec(without).datasets]
    apply_model(engine, _spec(without), applied_by="ana")  # removed; its row and state kept
    with pytest.raises(ConfigError, match="'orders' has been measured in 1m windows"):
        apply_model(engine, _spec(MODEL.replace("window: 1m", "window: 30s")), applied_by="ana")
    assert apply_model(engine, _spec(), applied_by="ana").version == 3  # as it was: fine


def test_a_dataset_pruned_and_added_again_keeps_its_window(engine: Engine):
    """`apply --prune` deletes a removed dataset's row but not its checkpoints: its window
    is read from the newest model version that had it."""
    apply_model(engine, _spec(), applied_by="ana")
    _measured(engine, "orders")
    without = MODEL.replace("  - name: orders\n    topic: orders\n    window: 1m\n"
                            "    fields:\n      amount: {type: number, min: 0}\n", "")
    without = without.replace("lineage:\n  - {from: clicks, to: orders}\n", "")
    apply_model(engine, _spec(without), applied_by="ana", prune=True)
    with pytest.raises(ConfigError, match="'orders' has been measured in 1m windows"):
        apply_model(engine, _spec(MODEL.replace("window: 1m", "window: 2m")), applied_by="ana")
    assert apply_model(engine, _spec(), applied_by="ana").version == 3
