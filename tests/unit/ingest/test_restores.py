"""A checkpoint restored on assignment again and again with no newer one: each worker died
before its next checkpoint (a record that kills the worker as it is read). The third
restore is logged as an error and `dqpulse doctor` names the partition; a save clears it
(SQLite at Alembic head; the worker's own restore)."""

from __future__ import annotations

import logging
from typing import Any

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


def _database_and_state(tmp_path) -> tuple[str, Any, PartitionAggregator]:
    """A database at Alembic head, and a partition state that counted 5 records."""
    url = f"sqlite:///{tmp_path / 'restores.db'}"
    upgrade_to_head(url)
    aggregator = PartitionAggregator(SPEC, 0)
    aggregator.add([RawMessage("orders", 0, i, 1_000, orjson.dumps({"ts": 100.0 + i}))
                    for i in range(5)], now=200.0)
    return url, make_engine(url), aggregator


def test_the_third_restore_of_one_checkpoint_is_an_error_and_a_save_clears_it(
        tmp_path, caplog):
    url, engine, aggregator = _database_and_state(tmp_path)
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


def test_a_dataset_moved_to_another_topic_reads_it_from_its_start(tmp_path, caplog):
    """The checkpoint names the topic its offsets are positions in (migration 0013): a
    dataset whose topic changed keeps its windows and watermark, and its new topic is
    read from the start, with no record skipped as counted and no error (before session
    48 the move was taken for the old topic deleted and recreated). Partitions the new
    topic lacks are retired, said as a move."""
    url, engine, aggregator = _database_and_state(tmp_path)
    with engine.begin() as conn:
        for partition in (0, 1):
            checkpoints.save(conn, dataset="orders", partition=partition,
                             loaded_version=None, next_offset=5, watermark=104.0,
                             last_record_at=104.0, high_watermark_offset=5,
                             state=aggregator.snapshot(), closed=[], owner_id="w1",
                             witness=(4, 123), topic="orders")
        checkpoints.set_partition_count(conn, dataset="orders", partition_count=2)
    moved = SPEC.model_copy(update={"topic": "orders-v2"})
    options = AggregatorOptions.from_settings(Settings(database_url=url), [moved])
    owned: dict = {}
    with caplog.at_level(logging.INFO, logger="dqpulse.ingest.assignment"):
        starts = assignment.restore(engine, owned, [("orders-v2", 0)],
                                    by_topic={"orders-v2": [moved]},
                                    partition_counts={"orders-v2": 1}, options=options,
                                    witnesses=True)
    assert starts == {("orders-v2", 0): None}  # the new topic's start
    part = owned[("orders", 0)]
    assert part.next_offset is None and part.verify is None and part.witness is None
    assert part.aggregator.watermark == 104.0 and part.dirty  # its windows go on
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert ("dataset orders moved from topic orders to orders-v2: partition 0 is read from "
            "the start of orders-v2") in caplog.text
    assert ("dataset orders moved from topic orders (2 partitions) to orders-v2 (1): the "
            "checkpoints of partitions 1 are retired") in caplog.text
    # once saved with the new topic, a restore starts where it stands
    with engine.begin() as conn:
        checkpoints.save(conn, dataset="orders", partition=0, loaded_version=1,
                         next_offset=3, watermark=110.0, last_record_at=110.0,
                         high_watermark_offset=3, state=aggregator.snapshot(), closed=[],
                         owner_id="w2", topic="orders-v2")
    owned = {}
    assert assignment.restore(engine, owned, [("orders-v2", 0)],
                              by_topic={"orders-v2": [moved]},
                              partition_counts={"orders-v2": 1},
                              options=options) == {("orders-v2", 0): 3}
    engine.dispose()
