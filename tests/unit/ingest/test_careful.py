"""A careful count (dqpulse.ingest.careful): what it notes in the database before each
count, how it splits a batch around where a worker died, the record it counts alone once
more, and the one it dead-letters (SQLite at Alembic head; the real aggregator, spied on to
read the note at each count)."""

from __future__ import annotations

import numpy as np
import orjson

from dqpulse.aggregate import PartitionAggregator
from dqpulse.ingest import careful as careful_module
from dqpulse.ingest.careful import CarefulCount, count_carefully
from dqpulse.ingest.partition import AddJob
from dqpulse.records import PartitionBatch
from dqpulse.spec import DatasetSpec
from dqpulse.store import checkpoints
from dqpulse.store.db import make_engine, upgrade_to_head

SPEC = DatasetSpec(name="orders", topic="orders", event_time="ts", window=60, lateness=0)


def _batch(first: int, last: int) -> PartitionBatch:
    offsets = np.arange(first, last + 1, dtype=np.int64)
    return PartitionBatch("orders", 0, [orjson.dumps({"ts": 100.0 + int(i), "amount": float(i)})
                                        for i in offsets.tolist()],
                          np.full(len(offsets), 100_000, dtype=np.int64), offsets)


def _setup(tmp_path):
    url = f"sqlite:///{tmp_path / 'careful.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    aggregator = PartitionAggregator(SPEC, 0)
    aggregator.add(_batch(0, 4), now=200.0)
    with engine.begin() as conn:
        checkpoints.save(conn, dataset="orders", partition=0, loaded_version=None,
                         next_offset=5, watermark=104.0, last_record_at=104.0,
                         high_watermark_offset=5, state=aggregator.snapshot(), closed=[],
                         owner_id="w1")
    return engine, aggregator


def _spy(engine, aggregator, counted):
    real = aggregator.add

    def add(batch, now, poll_times=None):
        with engine.connect() as conn:
            note = conn.exec_driver_sql(
                "select careful_first, careful_last, careful_at, careful_tries "
                "from partition_checkpoints").one()
        counted.append(([int(o) for o in batch.offsets], tuple(note)))
        return real(batch, now, poll_times)

    aggregator.add = add


def test_the_second_restore_counts_carefully_and_a_moved_save_ends_it(tmp_path):
    engine, _ = _setup(tmp_path)

    def restore() -> CarefulCount | None:
        with engine.begin() as conn:
            restored = checkpoints.note_restore(conn, dataset="orders", partition=0,
                                                version=checkpoints.get(
                                                    conn, dataset="orders",
                                                    partition=0).version)
        return CarefulCount.after(restored, 5)

    assert restore() is None  # a restart: one restore is no crash loop
    careful = restore()
    assert careful == CarefulCount(since=5)
    assert careful.ahead(5) and not careful.ahead(6)  # until a save moved past the restore
    with engine.begin() as conn:
        checkpoints.note_careful(conn, dataset="orders", partition=0, first=None, last=None,
                                 at=9, tries=1)
        saved = checkpoints.get(conn, dataset="orders", partition=0)
        # the worker's first checkpoint saves what it restored: the count goes on
        checkpoints.save(conn, dataset="orders", partition=0, loaded_version=saved.version,
                         next_offset=5, watermark=104.0, last_record_at=104.0,
                         high_watermark_offset=5, state=saved.state, closed=[],
                         owner_id="w3")
    careful = restore()  # one worker died counting offset 9 alone: no blame yet
    assert careful == CarefulCount(since=5, at=9, deaths=1) and careful.poison is None
    assert careful.ahead(9) and not careful.ahead(10)
    with engine.begin() as conn:
        checkpoints.note_careful(conn, dataset="orders", partition=0, first=None, last=None,
                                 at=9, tries=2)
    careful = restore()  # a second one died counting it alone: dead-letter it
    assert careful == CarefulCount(since=5, at=9, deaths=2) and careful.poison == 9
    with engine.begin() as conn:  # a note from before migration 0011 is a first try
        checkpoints.note_careful(conn, dataset="orders", partition=0, first=None, last=None,
                                 at=9)
    assert restore() == CarefulCount(since=5, at=9, deaths=1)
    with engine.begin() as conn:  # a save that moved: a worker got past it
        saved = checkpoints.get(conn, dataset="orders", partition=0)
        checkpoints.save(conn, dataset="orders", partition=0, loaded_version=saved.version,
                         next_offset=7, watermark=106.0, last_record_at=106.0,
                         high_watermark_offset=7, state=saved.state, closed=[],
                         owner_id="w4")
    assert restore() is None


def test_runs_are_noted_before_they_are_counted_and_where_one_died_one_by_one(tmp_path):
    engine, aggregator = _setup(tmp_path)
    counted: list = []
    _spy(engine, aggregator, counted)
    careful = CarefulCount(since=5, first=7, last=9)
    report = count_carefully(engine, ("orders", 0), aggregator,
                             AddJob(_batch(5, 14), now=300.0), careful)
    assert counted == [
        ([5, 6], (5, 6, None, None)),
        ([7], (None, None, 7, 1)), ([8], (None, None, 8, 1)), ([9], (None, None, 9, 1)),
        ([10, 11, 12, 13, 14], (10, 14, None, None)),
    ]
    assert report.accepted == 10 and not report.bad
    with engine.connect() as conn:  # counted: the last note is taken back
        assert conn.exec_driver_sql(
            "select careful_first, careful_last, careful_at, careful_tries "
            "from partition_checkpoints").one() == (None, None, None, None)


def test_a_long_batch_is_noted_in_runs_of_at_most_careful_run_records(tmp_path, monkeypatch):
    engine, aggregator = _setup(tmp_path)
    counted: list = []
    _spy(engine, aggregator, counted)
    monkeypatch.setattr(careful_module, "CAREFUL_RUN", 4)
    beats: list[int] = []
    count_carefully(engine, ("orders", 0), aggregator, AddJob(_batch(5, 14), now=300.0),
                    CarefulCount(since=5), beat=lambda: beats.append(1))
    assert [note for _, note in counted] == [(5, 8, None, None), (9, 12, None, None),
                                             (13, 14, None, None)]
    assert len(beats) == 3  # the loop's liveness, after each run


def _count_after(tmp_path, deaths: int):
    """Offsets 5-14 counted where ``deaths`` workers died counting offset 8 alone."""
    engine, aggregator = _setup(tmp_path)
    counted: list = []
    _spy(engine, aggregator, counted)
    report = count_carefully(engine, ("orders", 0), aggregator,
                             AddJob(_batch(5, 14), now=300.0),
                             CarefulCount(since=5, at=8, deaths=deaths))
    return aggregator, counted, report


def test_the_record_one_worker_died_counting_alone_is_counted_alone_once_more(tmp_path):
    """One death there may be something else's (a supervisor's kill, a drained node): the
    record is counted, alone, noted as its second try; the records after it in runs."""
    aggregator, counted, report = _count_after(tmp_path, 1)
    assert counted == [([5, 6, 7], (5, 7, None, None)), ([8], (None, None, 8, 2)),
                       ([9, 10, 11, 12, 13, 14], (9, 14, None, None))]
    assert report.accepted == 10 and not report.bad
    assert "bad.killed_worker" not in aggregator.counters


def test_the_record_two_workers_died_counting_alone_is_dead_lettered(tmp_path):
    aggregator, counted, report = _count_after(tmp_path, 2)
    assert [offsets for offsets, _ in counted] == [[5, 6, 7], [9, 10, 11, 12, 13, 14]]
    assert report.accepted == 9
    [bad] = report.bad
    assert (bad.reason, bad.message.offset) == ("killed_worker", 8)
    assert orjson.loads(bad.message.value)["amount"] == 8.0  # its bytes, unchanged
    assert report.bad_by_reason == {"killed_worker": 1}
    assert aggregator.counters["bad.killed_worker"] == 1
