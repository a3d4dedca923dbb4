"""Checkpoints: per-partition partial states and next offsets, saved in one transaction.

This is the exactly-once mechanism: the worker commits Kafka offsets only after
``save`` commits, and on assignment restores the state and seeks to ``next_offset``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from dqpulse.store.tables import dataset_partitions, partition_checkpoints, window_partials


class FencedError(Exception):
    """Another worker saved this partition since we loaded it: our progress is stale."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    dataset: str
    partition: int
    next_offset: int
    watermark: float
    last_record_at: float | None
    state: bytes
    version: int
    #: (offset, hash) of a record the state counted, below ``next_offset`` (None: none
    #: named, as in checkpoints saved before migration 0012): dqpulse.ingest.witness
    witness: tuple[int, int] | None = None
    #: the topic ``next_offset`` is a position in (None: saved before migration 0013)
    topic: str | None = None


def get(conn: Connection, *, dataset: str, partition: int) -> Checkpoint | None:
    row = conn.execute(select(partition_checkpoints).where(
        partition_checkpoints.c.dataset == dataset,
        partition_checkpoints.c.partition == partition)).mappings().first()
    return None if row is None else _checkpoint(row)


def _checkpoint(row: Any) -> Checkpoint:
    witness = (None if row["witness_offset"] is None or row["witness_hash"] is None
               or row["witness_offset"] >= row["next_offset"]
               else (int(row["witness_offset"]), int(row["witness_hash"])))
    return Checkpoint(row["dataset"], int(row["partition"]), row["next_offset"],
                      row["watermark"], row["last_record_at"], bytes(row["state"]),
                      row["version"], witness, row["topic"])


def save(
    conn: Connection,
    *,
    dataset: str,
    partition: int,
    loaded_version: int | None,
    next_offset: int,
    watermark: float,
    last_record_at: float | None,
    high_watermark_offset: int | None,
    state: bytes,
    closed: Sequence[tuple[float, bytes]],
    owner_id: str,
    witness: tuple[int, int] | None = None,
    topic: str | None = None,
) -> int:
    """Write a partition's checkpoint and its newly closed window partials; return the version.
    ``witness``: (offset, hash) of a record the state counted (dqpulse.ingest.witness).
    ``topic``: the topic ``next_offset`` is a position in.

    Raises ``FencedError`` when the stored version is not ``loaded_version`` (the caller
    must roll back, drop the partition's in-memory state and reload).
    """
    values: dict[str, Any] = dict(
        next_offset=next_offset, watermark=watermark, last_record_at=last_record_at,
        high_watermark_offset=high_watermark_offset, state=state, owner_id=owner_id,
        updated_at=func.now(), restores=0, careful_first=None, careful_last=None,
        careful_at=None, careful_tries=None,
        witness_offset=None if witness is None else witness[0],
        witness_hash=None if witness is None else witness[1], topic=topic)
    if loaded_version is None:
        exists = conn.execute(select(partition_checkpoints.c.version).where(
            partition_checkpoints.c.dataset == dataset,
            partition_checkpoints.c.partition == partition)).first()
        if exists is not None:
            raise FencedError(f"{dataset}[{partition}] was checkpointed by another worker")
        try:
            conn.execute(insert(partition_checkpoints).values(
                dataset=dataset, partition=partition, version=1, **values))
        except IntegrityError as exc:  # another worker's first checkpoint won the race
            raise FencedError(
                f"{dataset}[{partition}] was checkpointed by another worker") from exc
        new_version = 1
    else:
        new_version = loaded_version + 1
        c = partition_checkpoints.c
        # a save that read nothing new (a restored partition is saved at its worker's first
        # checkpoint) proves nothing about the records after it: the count of restores and
        # where a careful count was go on with the new version
        moved = c.next_offset != next_offset
        for column in ("restores", "careful_first", "careful_last", "careful_at",
                       "careful_tries"):
            values[column] = case((moved, values[column]), else_=c[column])
        result = conn.execute(update(partition_checkpoints).where(
            c.dataset == dataset, c.partition == partition, c.version == loaded_version,
        ).values(version=new_version, **values))
        if result.rowcount != 1:
            raise FencedError(f"{dataset}[{partition}] was checkpointed by another worker")
    if closed:
        conn.execute(insert(window_partials), [
            {"dataset": dataset, "partition": partition, "window_start": start, "state": blob}
            for start, blob in closed])
    return new_version


@dataclass(frozen=True, slots=True)
class Restored:
    """A restore of a checkpoint version, counted: how many workers restored it, and where
    the last one counting it carefully was (see :func:`note_careful`)."""

    restores: int
    careful_first: int | None = None
    careful_last: int | None = None
    careful_at: int | None = None
    #: how many workers began counting ``careful_at`` alone (each died counting it)
    careful_tries: int = 0


def note_restore(conn: Connection, *, dataset: str, partition: int,
                 version: int) -> Restored:
    """Count a worker's restore of this checkpoint version on assignment (0 restores when
    it was saved since: the count went with that version)."""
    c = partition_checkpoints.c
    found = conn.execute(update(partition_checkpoints).where(
        c.dataset == dataset, c.partition == partition, c.version == version,
    ).values(restores=c.restores + 1).returning(
        c.restores, c.careful_first, c.careful_last, c.careful_at,
        c.careful_tries)).first()
    if found is None:
        return Restored(0)
    return Restored(int(found.restores), found.careful_first, found.careful_last,
                    found.careful_at, int(found.careful_tries or 0))


def clear_restores(conn: Connection, *, keys: Sequence[tuple[str, int]]) -> None:
    """Forget the restores of these partitions and any careful count's notes: their worker
    is stopping or handing them over in good order (it did not die of them), whether or
    not it read anything since (an idle partition restored at every deploy is no crash
    loop)."""
    c = partition_checkpoints.c
    for start in range(0, len(keys), 500):
        conn.execute(update(partition_checkpoints).where(
            tuple_(c.dataset, c.partition).in_(keys[start:start + 500]),
            (c.restores > 0) | c.careful_first.is_not(None) | c.careful_at.is_not(None),
        ).values(restores=0, careful_first=None, careful_last=None, careful_at=None,
                 careful_tries=None))


def note_careful(conn: Connection, *, dataset: str, partition: int,
                 first: int | None, last: int | None, at: int | None,
                 tries: int | None = None) -> None:
    """Note what a worker counting a partition carefully counts next: the offsets
    ``first`` .. ``last``, or the record ``at`` alone, the ``tries``-th worker to count it
    alone (``None`` for each: nothing, it got through). Not fenced by the version: the
    worker's own checkpoints (a writer thread) move it while it counts, and a note it lost
    would leave an older one standing."""
    c = partition_checkpoints.c
    conn.execute(update(partition_checkpoints).where(
        c.dataset == dataset, c.partition == partition,
    ).values(careful_first=first, careful_last=last, careful_at=at, careful_tries=tries))


def restored_often(conn: Connection, *, at_least: int = 3) -> list[tuple[str, int, int, int]]:
    """(dataset, partition, next_offset, restores) of the checkpoints that ``at_least``
    workers restored on assignment without a newer checkpoint after any of them."""
    c = partition_checkpoints.c
    rows = conn.execute(select(c.dataset, c.partition, c.next_offset, c.restores)
                        .where(c.restores >= at_least).order_by(c.dataset, c.partition))
    return [(row.dataset, int(row.partition), int(row.next_offset), int(row.restores))
            for row in rows]


def move_offset(conn: Connection, *, dataset: str, partition: int, loaded_version: int,
                next_offset: int) -> int | None:
    """Set a partition's checkpointed offset (``dqpulse partitions skip``), its state left as
    it is, if its version is still ``loaded_version``; the new version (which fences the
    worker that owns the partition), or None when it was checkpointed meanwhile."""
    result = conn.execute(update(partition_checkpoints).where(
        partition_checkpoints.c.dataset == dataset,
        partition_checkpoints.c.partition == partition,
        partition_checkpoints.c.version == loaded_version,
    ).values(next_offset=next_offset, version=loaded_version + 1,
             owner_id="dqpulse partitions skip", updated_at=func.now(), restores=0,
             careful_first=None, careful_last=None, careful_at=None, careful_tries=None,
             witness_offset=None, witness_hash=None))
    return loaded_version + 1 if result.rowcount == 1 else None


def set_partition_count(conn: Connection, *, dataset: str,
                        partition_count: int) -> int | None:
    """Record a dataset's partition count; returns the one recorded before (None: none).
    An upsert: workers assigned partitions of a new dataset at the same moment all write
    it (a select-then-insert would let the second one fail on the primary key and take its
    worker down in the middle of a rebalance)."""
    previous = conn.execute(select(dataset_partitions.c.partition_count).where(
        dataset_partitions.c.dataset == dataset)).scalar()
    insert_fn = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert_fn(dataset_partitions).values(dataset=dataset,
                                                partition_count=partition_count)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=["dataset"], set_={"partition_count": stmt.excluded.partition_count},
        where=dataset_partitions.c.partition_count != stmt.excluded.partition_count))
    return None if previous is None else int(previous)


def beyond(conn: Connection, *, dataset: str, partition_count: int) -> list[Checkpoint]:
    """The checkpoints of partitions from ``partition_count`` on (a topic has no fewer
    partitions than before unless it was deleted and created again), locked until the
    transaction ends: a worker retiring them concurrently waits, then finds none."""
    c = partition_checkpoints.c
    query = select(partition_checkpoints).where(
        c.dataset == dataset, c.partition >= partition_count).order_by(c.partition)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return [_checkpoint(row) for row in conn.execute(query).mappings()]


def retire(conn: Connection, *, dataset: str, partition: int, version: int,
           closed: Sequence[tuple[float, bytes]]) -> bool:
    """Delete a partition's checkpoint, its open windows handed to the finalizer as
    ``closed`` partials (its topic no longer has it); False when another worker saved or
    retired it since it was read."""
    c = partition_checkpoints.c
    gone = conn.execute(delete(partition_checkpoints).where(
        c.dataset == dataset, c.partition == partition, c.version == version))
    if gone.rowcount != 1:
        return False
    if closed:
        conn.execute(insert(window_partials), [
            {"dataset": dataset, "partition": partition, "window_start": start, "state": blob}
            for start, blob in closed])
    return True


@dataclass(frozen=True, slots=True)
class DatasetProgress:
    partition_count: int
    partitions_seen: int
    min_watermark: float | None
    last_record_at: float | None
    consumer_lag_records: int | None
    finalized_until: float | None
    baseline: bytes | None
    last_schema: dict[str, list[str]] | None
    #: finalize passes begun at ``finalize_try_window`` that did not commit past it
    #: (see :func:`note_finalize_try`)
    finalize_try_window: float | None = None
    finalize_tries: int = 0


def get_progress(conn: Connection, *, dataset: str) -> DatasetProgress | None:
    meta = conn.execute(select(dataset_partitions).where(
        dataset_partitions.c.dataset == dataset).with_for_update()).mappings().first() \
        if conn.dialect.name == "postgresql" else conn.execute(select(dataset_partitions).where(
            dataset_partitions.c.dataset == dataset)).mappings().first()
    if meta is None:
        return None
    agg = conn.execute(select(
        func.count().label("n"), func.min(partition_checkpoints.c.watermark).label("wm"),
        func.max(partition_checkpoints.c.last_record_at).label("last"),
        func.sum(func.coalesce(partition_checkpoints.c.high_watermark_offset,
                               partition_checkpoints.c.next_offset)
                 - partition_checkpoints.c.next_offset).label("lag"),
    ).where(partition_checkpoints.c.dataset == dataset)).mappings().one()
    return DatasetProgress(
        partition_count=meta["partition_count"], partitions_seen=agg["n"],
        min_watermark=agg["wm"], last_record_at=agg["last"],
        consumer_lag_records=None if agg["lag"] is None else int(agg["lag"]),
        finalized_until=meta["finalized_until"],
        baseline=None if meta["baseline"] is None else bytes(meta["baseline"]),
        last_schema=meta["last_schema"],
        finalize_try_window=meta["finalize_try_window"],
        finalize_tries=int(meta["finalize_tries"] or 0))


def first_partial_window(conn: Connection, *, dataset: str) -> float | None:
    return conn.execute(select(func.min(window_partials.c.window_start)).where(
        window_partials.c.dataset == dataset)).scalar()


def take_partials(conn: Connection, *, dataset: str, window_start: float) -> list[bytes]:
    """Read and delete every partition's partial of one window (inside the finalize txn)."""
    where = (window_partials.c.dataset == dataset,
             window_partials.c.window_start == window_start)
    if conn.dialect.name == "postgresql":  # one round trip: finalization mostly waits on them
        rows = conn.execute(delete(window_partials).where(*where)
                            .returning(window_partials.c.state)).all()
        return [bytes(row.state) for row in rows]
    rows = conn.execute(select(window_partials.c.state).where(*where)).all()
    conn.execute(delete(window_partials).where(*where))
    return [bytes(row.state) for row in rows]


def mark_finalized(conn: Connection, *, dataset: str, until: float, baseline: bytes,
                   last_schema: dict[str, list[str]]) -> None:
    conn.execute(update(dataset_partitions).where(dataset_partitions.c.dataset == dataset)
                 .values(finalized_until=until, baseline=baseline, last_schema=last_schema,
                         finalize_try_window=None, finalize_tries=0))


def finalize_front(conn: Connection, *, dataset: str
                   ) -> tuple[float | None, float | None, int] | None:
    """(``finalized_until``, or the first window with a partial when none was finalized;
    the stored try window; its tries) of ``dataset``: one primary-key read, no lock."""
    row = conn.execute(select(dataset_partitions.c.finalized_until,
                              dataset_partitions.c.finalize_try_window,
                              dataset_partitions.c.finalize_tries)
                       .where(dataset_partitions.c.dataset == dataset)).first()
    if row is None:
        return None
    front = row.finalized_until
    if front is None:
        front = first_partial_window(conn, dataset=dataset)
    return front, row.finalize_try_window, int(row.finalize_tries or 0)


def note_finalize_try(conn: Connection, *, dataset: str, window_start: float,
                      tries: int) -> None:
    """Store how many finalize passes have begun at ``window_start`` without committing past
    it (committed before the pass, so that a pass whose process dies still counts;
    :func:`mark_finalized` clears it)."""
    conn.execute(update(dataset_partitions).where(dataset_partitions.c.dataset == dataset)
                 .values(finalize_try_window=window_start, finalize_tries=tries))


@dataclass(frozen=True, slots=True)
class FinalizeFrontier:
    """Where a dataset's finalization stands, for every dataset at once (one query)."""

    partition_count: int
    partitions_seen: int
    min_watermark: float | None
    #: ``finalized_until``, or the first window with a partial when none was finalized
    next_window: float | None


def get_frontiers(conn: Connection) -> dict[str, FinalizeFrontier]:
    """Every dataset's finalization frontier without locks: which have windows ready (a
    finalize pass skips the others) and how many are waiting (the finalize backlog)."""
    c, w, d = partition_checkpoints.c, window_partials.c, dataset_partitions.c
    marks = (select(c.dataset, func.count().label("n"), func.min(c.watermark).label("wm"))
             .group_by(c.dataset).subquery())
    firsts = (select(w.dataset, func.min(w.window_start).label("first"))
              .group_by(w.dataset).subquery())
    rows = conn.execute(
        select(d.dataset, d.partition_count, d.finalized_until, marks.c.n, marks.c.wm,
               firsts.c.first)
        .outerjoin(marks, marks.c.dataset == d.dataset)
        .outerjoin(firsts, firsts.c.dataset == d.dataset))
    return {row.dataset: FinalizeFrontier(
        partition_count=row.partition_count, partitions_seen=int(row.n or 0),
        min_watermark=row.wm,
        next_window=row.finalized_until if row.finalized_until is not None else row.first)
        for row in rows}


def ready_windows(frontier: FinalizeFrontier | None, *, window: float,
                  lateness: float) -> int:
    """How many windows of a dataset every partition has passed and are not finalized yet
    (what :func:`dqpulse.finalize.finalize_ready` would finalize now)."""
    if (frontier is None or frontier.min_watermark is None or frontier.next_window is None
            or frontier.partitions_seen < frontier.partition_count
            # a partition checkpointed before its first record or idle tick (-inf: the
            # ingest worker could not read its end offsets yet) holds every window back
            or frontier.min_watermark == -math.inf):
        return 0
    return max(0, int((frontier.min_watermark - lateness - frontier.next_window) // window))


def unfinished_finalize(conn: Connection, *, at_least: int = 2
                        ) -> dict[str, tuple[float, int]]:
    """The data sets whose stored finalize tries (passes begun at one window without
    committing past it, :func:`note_finalize_try`) are at least ``at_least``: (that window,
    the tries). One is a pass in flight, or one whose process died; two or more, a pass
    that died and one after it that has not ended (yet): a window that kills its worker."""
    d = dataset_partitions.c
    rows = conn.execute(select(d.dataset, d.finalize_try_window, d.finalize_tries)
                        .where(d.finalize_tries >= at_least).order_by(d.dataset))
    return {row.dataset: (float(row.finalize_try_window), int(row.finalize_tries))
            for row in rows if row.finalize_try_window is not None}


def skipped_windows(conn: Connection) -> dict[str, list[float]]:
    """The windows behind each data set's ``finalized_until`` whose partials are still
    stored: windows that finalization skipped after failing every try
    (:mod:`dqpulse.finalize.failures`), kept for inspection. A finalized window's
    partials are otherwise deleted in its finalize transaction."""
    w, d = window_partials.c, dataset_partitions.c
    rows = conn.execute(
        select(w.dataset, w.window_start).distinct()
        .join(dataset_partitions, d.dataset == w.dataset)
        .where(w.window_start < d.finalized_until)
        .order_by(w.dataset, w.window_start))
    found: dict[str, list[float]] = {}
    for dataset, start in rows:
        found.setdefault(dataset, []).append(float(start))
    return found
