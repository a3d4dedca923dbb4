"""A checkpoint restored on assignment again and again with no newer one: each worker died
before its next checkpoint (a record that kills the worker as it is read). The third
restore is logged as an error and `dqpulse doctor` names the partition; a save clears it
(SQLite at Alembic head; the worker's own restore)."""

from __future__ import annotations

import logging

import orjson

from dqpulse.aggregate import PartitionAggregator
from dqpulse.config import Settings
from dqpulse.doctor import window_checks
from dqpulse.ingest import assignment
from dqpulse.ingest.partition import AggregatorOptions
from dqpulse.records import RawMessage
from dqpulse.spec import DatasetSpec
from dqpulse.store import checkpoints
from dqpulse.store.db import make_engine, upgrade_to_head

SPEC = DatasetSpec(name="orders", topic="orders", event_time="ts", window=60, lateness=0)


def test_the_third_restore_of_one_checkpoint_is_an_error_and_a_save_clears_it(
        tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'restores.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    aggregator = PartitionAggregator(SPEC, 0)
    aggregator.add([RawMessage("orders", 0, i, 1_000, orjson.dumps({"ts": 100.0 + i}))
                    for i in range(5)], now=200.0)
    with engine.begin() as conn:
        checkpoints.save(conn, dataset="orders", partition=0, loaded_version=None,
                         next_offset=5, watermark=104.0, last_record_at=104.0,
                         high_watermark_offset=5, state=aggregator.snapshot(), closed=[],
                         owner_id="w1")
    options = AggregatorOptions.from_settings(Settings(database_url=url), [SPEC])

    def restore() -> dict:
        owned: dict = {}
        starts = assignment.restore(engine, owned, [("orders", 0)],
                                    by_topic={"orders": [SPEC]},
                                    partition_counts={"orders": 1}, options=options)
        assert starts == {("orders", 0): 5} and owned[("orders", 0)] is not None
        return owned

    def doctor_line():
        [line] = [c for c in window_checks(engine, None, 5.0) if c.name == "partitions"]
        return line

    with caplog.at_level(logging.ERROR, logger="dqpulse.ingest.assignment"):
        restore()
        restore()
        assert not caplog.records and doctor_line().ok
        restore()  # the two workers before it died before their next checkpoint
    assert "orders[0] restored from its checkpoint at offset 5 for the 3rd time" \
           in caplog.text and "dqpulse partitions skip" in caplog.text
    line = doctor_line()
    assert not line.ok and "orders[0] at offset 5: 3 restores" in line.detail

    with engine.begin() as conn:  # a worker got as far as its next checkpoint
        checkpoints.save(conn, dataset="orders", partition=0, loaded_version=1,
                         next_offset=7, watermark=106.0, last_record_at=106.0,
                         high_watermark_offset=7, state=aggregator.snapshot(), closed=[],
                         owner_id="w4")
    assert doctor_line().ok
    engine.dispose()
