"""Two workers writing the first rows of a new dataset at the same moment, on Postgres.

Found by the end-to-end benchmark: two workers assigned partitions of a brand-new dataset
in the same rebalance both inserted its partition count; the second insert failed on the
primary key inside the rebalance callback and took its worker down.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from dqpulse.store import checkpoints
from dqpulse.store.db import make_engine
from dqpulse.store.tables import dataset_partitions


def _race(url: str, first_write, second_write) -> BaseException | None:
    """Run ``first_write`` in an open transaction, start ``second_write`` on another
    connection (it blocks on the row lock), then commit the first; return the second's
    error, if any."""
    engine = make_engine(url)
    outcome: list[BaseException | None] = []
    try:
        with engine.connect() as first:
            tx = first.begin()
            first_write(first)

            def second() -> None:
                try:
                    with engine.begin() as conn:
                        second_write(conn)
                    outcome.append(None)
                except BaseException as exc:  # noqa: BLE001 - handed to the test
                    outcome.append(exc)

            thread = threading.Thread(target=second)
            thread.start()
            thread.join(0.5)
            assert thread.is_alive(), "the second write should wait for the first's lock"
            tx.commit()
            thread.join(10)
    finally:
        engine.dispose()
    assert outcome, "the second write never finished"
    return outcome[0]


@pytest.mark.integration
def test_concurrent_partition_count_writes_both_succeed(fresh_db: str) -> None:
    error = _race(
        fresh_db,
        lambda conn: checkpoints.set_partition_count(conn, dataset="new", partition_count=4),
        lambda conn: checkpoints.set_partition_count(conn, dataset="new", partition_count=4))
    assert error is None
    engine = make_engine(fresh_db)
    with engine.connect() as conn:
        rows = conn.execute(select(dataset_partitions)).all()
    engine.dispose()
    assert [(r.dataset, r.partition_count) for r in rows] == [("new", 4)]


@pytest.mark.integration
def test_concurrent_first_checkpoints_fence_the_loser(fresh_db: str) -> None:
    def save(conn) -> None:
        checkpoints.save(conn, dataset="new", partition=0, loaded_version=None, next_offset=5,
                         watermark=1.0, last_record_at=1.0, high_watermark_offset=5,
                         state=b"state", closed=[], owner_id="w")

    error = _race(fresh_db, save, save)
    assert isinstance(error, checkpoints.FencedError)
