"""The checkpoint protocol on its own: snapshot -> write (one fenced transaction) -> apply,
or reload after fencing (SQLite here; tests/integration/test_checkpoint_protocol.py runs
the same cases on Postgres)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import numpy as np
import orjson
import pytest
from sqlalchemy import func, select

from dqpulse.config import Settings
from dqpulse.ingest import assignment
from dqpulse.ingest import checkpoint as protocol
from dqpulse.ingest.checkpoint import EndOffsets
from dqpulse.ingest.partition import AggregatorOptions, OwnedPartition
from dqpulse.records import PartitionBatch
from dqpulse.spec import DatasetSpec
from dqpulse.store import checkpoints
from dqpulse.store.tables import partition_checkpoints, window_partials

SETTINGS = Settings()


@pytest.fixture
def topic() -> str:
    # unique names: the Postgres variant shares one database across tests
    return f"t{uuid.uuid4().hex[:10]}"


def dataset(topic: str, name: str = "a") -> DatasetSpec:
    return DatasetSpec(name=f"{topic}_{name}", topic=topic, event_time="ts", window=60,
                       lateness=0)


def batch(topic: str, partition: int, offsets: Sequence[int], ts: float = 10.0
          ) -> PartitionBatch:
    values: list[bytes | None] = [orjson.dumps({"ts": ts, "v": o}) for o in offsets]
    return PartitionBatch(topic, partition, values,
                          np.full(len(values), int(ts * 1000), dtype=np.int64),
                          np.asarray(offsets, dtype=np.int64))


class FakeSource:
    def __init__(self, ends: Mapping[tuple[str, int], int]) -> None:
        self.ends = dict(ends)
        self.asked: list[tuple[list[tuple[str, int]], bool]] = []
        self.seeks: list[tuple[str, int, int | None]] = []

    def end_offsets(self, partitions, *, fresh=True):
        self.asked.append((list(partitions), fresh))
        return {tp: self.ends[tp] for tp in partitions if tp in self.ends}

    def seek(self, topic: str, partition: int, offset: int | None) -> None:
        self.seeks.append((topic, partition, offset))


def owned_for(engine, specs: Sequence[DatasetSpec], partition: int = 0
              ) -> tuple[dict[tuple[str, int], OwnedPartition], dict]:
    options = AggregatorOptions.from_settings(SETTINGS, specs)
    owned: dict[tuple[str, int], OwnedPartition] = {}
    starts = assignment.restore(engine, owned, [(specs[0].topic, partition)],
                                by_topic={specs[0].topic: list(specs)},
                                partition_counts={specs[0].topic: 1}, options=options)
    return owned, starts


def checkpoint(engine, owned, specs, ends: EndOffsets | None = None, now: float = 100.0,
               owner: str = "me") -> dict[tuple[str, int], int]:
    topic_of = {s.name: s.topic for s in specs}.__getitem__
    job = protocol.prepare(owned, list(owned), ends or EndOffsets({}), topic_of, now)
    job.versions = protocol.write(engine, job, owner_id=owner)
    return protocol.apply(owned, job, topic_of)


def stored(engine, spec: DatasetSpec, partition: int = 0) -> checkpoints.Checkpoint | None:
    with engine.begin() as conn:
        return checkpoints.get(conn, dataset=spec.name, partition=partition)


def test_a_written_checkpoint_holds_state_and_offset_and_commits_that_offset(engine, topic):
    spec = dataset(topic)
    owned, starts = owned_for(engine, [spec])
    assert starts == {(topic, 0): None}  # nothing stored: the reset policy decides
    owned[(spec.name, 0)].add(batch(topic, 0, [0, 1, 2]), now=50.0)
    commits = checkpoint(engine, owned, [spec])
    assert commits == {(topic, 0): 3}
    saved = stored(engine, spec)
    assert (saved.next_offset, saved.version) == (3, 1)
    assert owned[(spec.name, 0)].version == 1 and not owned[(spec.name, 0)].dirty
    # nothing new: no row is written, so no offset to commit
    assert checkpoint(engine, owned, [spec]) == {}
    assert stored(engine, spec).version == 1


def test_restore_continues_from_the_stored_state_and_offset(engine, topic):
    spec = dataset(topic)
    owned, _ = owned_for(engine, [spec])
    owned[(spec.name, 0)].add(batch(topic, 0, [0, 1, 2, 3]), now=50.0)
    checkpoint(engine, owned, [spec])
    again, starts = owned_for(engine, [spec])
    assert starts == {(topic, 0): 4}
    restored = again[(spec.name, 0)]
    # dirty: its first checkpoint writes it, which clears the count of restores
    assert (restored.version, restored.next_offset, restored.dirty) == (1, 4, True)
    assert restored.aggregator.counters["accepted"] == 4
    # a replayed batch (from before the stored offset) is not counted twice
    assert restored.add(batch(topic, 0, [2, 3]), now=60.0) is None
    assert restored.aggregator.counters["accepted"] == 4


def test_several_datasets_on_a_topic_resume_from_the_least_advanced(engine, topic):
    first, second = dataset(topic, "a"), dataset(topic, "b")
    owned, starts = owned_for(engine, [first, second])
    owned[(first.name, 0)].add(batch(topic, 0, [0, 1, 2, 3, 4]), now=50.0)
    owned[(second.name, 0)].add(batch(topic, 0, [0, 1]), now=50.0)
    commits = checkpoint(engine, owned, [first, second])
    assert commits == {(topic, 0): 2}  # the group may only move past what both counted
    _, starts = owned_for(engine, [first, second])
    assert starts == {(topic, 0): 2}


def test_a_fenced_write_writes_nothing_and_reload_takes_the_stored_state(engine, topic):
    spec, other = dataset(topic, "a"), dataset(topic, "b")
    mine, _ = owned_for(engine, [spec, other])
    theirs, _ = owned_for(engine, [spec])
    theirs[(spec.name, 0)].add(batch(topic, 0, [0, 1, 2, 3, 4, 5]), now=50.0)
    checkpoint(engine, theirs, [spec], owner="them")
    mine[(spec.name, 0)].add(batch(topic, 0, [0, 1]), now=50.0)
    mine[(other.name, 0)].add(batch(topic, 0, [0, 1]), now=50.0)
    with pytest.raises(checkpoints.FencedError):
        checkpoint(engine, mine, [spec, other])
    assert stored(engine, other) is None  # one transaction: the other row rolled back too
    assert stored(engine, spec).next_offset == 6
    source = FakeSource({})
    keys = list(mine)
    protocol.reload(engine, mine, keys, {spec.name: spec, other.name: other},
                    AggregatorOptions.from_settings(SETTINGS, [spec, other]))
    assignment.resume_positions(source, mine, keys, {spec.name: topic, other.name: topic}.get)
    assert (mine[(spec.name, 0)].version, mine[(spec.name, 0)].next_offset) == (1, 6)
    assert mine[(other.name, 0)].next_offset is None
    assert sorted(source.seeks, key=str) == sorted([(topic, 0, 6), (topic, 0, None)], key=str)


def two_records_snapshotted(engine, topic: str):
    """One partition with records 0..1 and the checkpoint job snapshotted from it."""
    spec = dataset(topic)
    owned, _ = owned_for(engine, [spec])
    owned[(spec.name, 0)].add(batch(topic, 0, [0, 1]), now=50.0)
    topic_of = {spec.name: topic}.__getitem__
    job = protocol.prepare(owned, list(owned), EndOffsets({}), topic_of, 100.0)
    return spec, owned, topic_of, job


def test_a_failed_write_is_written_again_by_the_next_checkpoint(engine, topic):
    spec, owned, topic_of, job = two_records_snapshotted(engine, topic)
    assert len(job.rows) == 1 and not owned[(spec.name, 0)].dirty
    protocol.failed(job)  # as if the transaction had failed
    assert owned[(spec.name, 0)].dirty
    assert checkpoint(engine, owned, [spec]) == {(topic, 0): 2}


def test_a_partition_revoked_while_writing_is_not_updated_or_committed(engine, topic):
    spec, owned, topic_of, job = two_records_snapshotted(engine, topic)
    job.versions = protocol.write(engine, job, owner_id="me")
    revoked = owned.pop((spec.name, 0))
    assert protocol.apply(owned, job, topic_of) == {}
    assert revoked.version is None


def three_records_read_to_the_end(engine, topic: str):
    """One partition holding records 0..2 at event time 10 s, added at 50 s, whose end
    offset (3) says it is caught up."""
    spec = dataset(topic)
    owned, _ = owned_for(engine, [spec])
    owned[(spec.name, 0)].add(batch(topic, 0, [0, 1, 2], ts=10.0), now=50.0)
    return spec, owned, FakeSource({(topic, 0): 3})


def test_a_caught_up_idle_partition_closes_its_windows_into_partials(engine, topic):
    spec, owned, source = three_records_read_to_the_end(engine, topic)
    now = 50.0 + SETTINGS.idle_partition_timeout_s + 200.0  # idle, wall-clock past the window
    ends = protocol.read_end_offsets(source, owned, list(owned), {spec.name: topic}.get, now)
    assert ends.fresh == {(topic, 0)} and source.asked == [([(topic, 0)], True)]
    checkpoint(engine, owned, [spec], ends=ends, now=now)
    with engine.begin() as conn:
        partials = conn.execute(select(func.count()).select_from(window_partials).where(
            window_partials.c.dataset == spec.name)).scalar()
    assert partials == 1 and owned[(spec.name, 0)].pending_closed == []


def test_a_busy_partition_is_not_ticked_on_a_stale_end_offset(engine, topic):
    spec, owned, source = three_records_read_to_the_end(engine, topic)
    ends = protocol.read_end_offsets(source, owned, list(owned), {spec.name: topic}.get, 51.0)
    assert ends.fresh == frozenset() and source.asked == [([(topic, 0)], False)]
    checkpoint(engine, owned, [spec], ends=ends, now=51.0)
    assert owned[(spec.name, 0)].aggregator.open_windows == [0.0]


def test_records_held_for_coalescing_are_saved_as_not_yet_counted(engine, topic):
    """A periodic checkpoint may keep a partition's held records held: it saves the state
    without them and the first held offset, so a restart replays them, once."""
    spec = dataset(topic)
    owned, _ = owned_for(engine, [spec])
    part = owned[(spec.name, 0)]
    part.add(batch(topic, 0, [0, 1, 2, 3]), now=50.0)  # aggregated
    assert part.add(batch(topic, 0, [4, 5]), now=51.0, coalesce=100) is None  # held
    assert (part.next_offset, part.checkpoint_offset) == (6, 4)
    assert checkpoint(engine, owned, [spec]) == {(topic, 0): 4}
    assert stored(engine, spec).next_offset == 4
    # more records held change neither the state nor the saved offset: no row to write
    assert part.add(batch(topic, 0, [6]), now=52.0, coalesce=100) is None
    assert not part.dirty and checkpoint(engine, owned, [spec]) == {}
    # a restart (the held records lost with the process) resumes at the first held one
    again, starts = owned_for(engine, [spec])
    assert starts == {(topic, 0): 4}
    restored = again[(spec.name, 0)]
    report = restored.add(batch(topic, 0, [4, 5, 6]), now=60.0)
    assert report is not None and report.accepted == 3
    assert restored.aggregator.counters["accepted"] == 7  # each record counted once
    # without the restart, the held records reach the state and the next checkpoint
    assert part.flush() is not None and part.dirty
    assert checkpoint(engine, owned, [spec]) == {(topic, 0): 7}
    assert part.aggregator.counters["accepted"] == 7


def test_a_partition_holding_records_is_not_ticked_as_caught_up(engine, topic):
    spec, owned, source = three_records_read_to_the_end(engine, topic)
    part = owned[(spec.name, 0)]
    source.ends[(topic, 0)] = 5
    assert part.add(batch(topic, 0, [3, 4], ts=10.0), now=51.0, coalesce=100) is None
    now = 50.0 + SETTINGS.idle_partition_timeout_s + 200.0  # idle by its aggregated records
    ends = protocol.read_end_offsets(source, owned, list(owned), {spec.name: topic}.get, now)
    assert ends.fresh == {(topic, 0)}  # asked: it may be idle
    checkpoint(engine, owned, [spec], ends=ends, now=now)
    # its window stays open for the held records (ticked, they would all be late)
    assert part.aggregator.open_windows == [0.0]
    report = part.flush()
    assert report is not None and (report.accepted, report.late) == (2, 0)


def test_a_corrupt_checkpoint_state_is_reported_and_the_partition_goes_on_from_its_offset(
        engine, topic):
    """A stored state whose bytes changed used to reach the sketch deserializers, which
    crash the process on some corrupt bytes (and again after every restart). Now its
    checksum fails: the partition goes on from the checkpoint's offset and watermark,
    without the windows it held open, reported; the next checkpoint replaces the state."""
    spec = dataset(topic)
    owned, _ = owned_for(engine, [spec])
    owned[(spec.name, 0)].add(batch(topic, 0, [0, 1, 2], ts=10.0), now=50.0)
    owned[(spec.name, 0)].add(batch(topic, 0, [3, 4], ts=130.0), now=150.0)
    checkpoint(engine, owned, [spec])
    saved = stored(engine, spec)
    corrupt = bytearray(saved.state)
    corrupt[len(corrupt) // 2] ^= 0x10
    with engine.begin() as conn:
        conn.execute(partition_checkpoints.update().where(
            partition_checkpoints.c.dataset == spec.name).values(
            state=bytes(corrupt)))
    reported: list[str] = []
    options = AggregatorOptions.from_settings(SETTINGS, [spec], on_corrupt=reported.append)
    again: dict = {}
    starts = assignment.restore(engine, again, [(topic, 0)], by_topic={topic: [spec]},
                                partition_counts={topic: 1}, options=options)
    assert reported == [spec.name]
    assert starts == {(topic, 0): 5}
    restored = again[(spec.name, 0)]
    assert (restored.version, restored.next_offset, restored.dirty) == (1, 5, True)
    assert restored.aggregator.open_windows == []  # what they held is lost, and said so
    assert restored.aggregator.watermark == saved.watermark == 130.0
    # a record of a window closed before the checkpoint is late, as it was
    report = restored.add(batch(topic, 0, [5], ts=10.0), now=160.0)
    assert (report.accepted, report.late) == (0, 1)
    checkpoint(engine, again, [spec])  # replaces the corrupt state
    reported.clear()
    third: dict = {}
    assignment.restore(engine, third, [(topic, 0)], by_topic={topic: [spec]},
                       partition_counts={topic: 1}, options=options)
    assert reported == [] and third[(spec.name, 0)].next_offset == 6
