"""Counting a partition carefully after its workers died before their first checkpoint.

A record that kills the worker as it is read (a crash in native code: a decoder, a sketch
library; the kernel's out-of-memory killer on one huge record) raises nothing the worker
could catch (:func:`dqpulse.aggregate.add_isolating` isolates the records that raise): it
was read again after every restart, and killed every worker, for ever. Each restore of a
checkpoint is counted (:func:`dqpulse.store.checkpoints.note_restore`); from the second
restore of one version (``CAREFUL_AFTER``), the worker before died before its first
checkpoint, and the new owner counts the partition carefully until it is past the place of
that death:

1. each run of records is noted in the database (its first and last offset) before it is
   counted, and decoded on the counting thread;
2. where a worker died counting a noted run, the next one counts that run's records one at
   a time, each noted before it is counted;
3. where a worker died counting one record alone, the next one counts that record alone
   once more, noted as its second try: a worker killed by something else in those few
   seconds (its supervisor, a node drained) costs no record;
4. where a second worker died counting that record alone (``DEATHS_TO_BLAME``), the next
   one dead-letters it (reason ``killed_worker``, its bytes unchanged, like every
   dead-lettered record) instead of counting it, and goes on.

So a record that kills every worker that reads it costs four deaths after the first
restore (one before the careful count, one in each of its first three steps) instead of
all of them. A save that moved past the restored offset clears the count and the notes, and
so does a worker that stops or hands the partition over in good order (an idle partition
restored at every deploy is no crash loop), or that has owned it for ``SURVIVED_S`` (an
idle partition of a worker that crash-looped on another one) unless it knows where a
worker died on it; a save that did not move (a worker saves what it restored at its first
checkpoint) keeps them. A record is dead-lettered only when two workers in a row died
counting it alone and nothing else; only two outside deaths landing on the same record's
few milliseconds could cost it (dead-lettered and logged, not silently). A note is a
one-row update committed without waiting for the disk (the worker's death does not lose
it; only a crash of Postgres itself could): about a millisecond per run, and per record in
steps 2 and 3 only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from dqpulse.aggregate import AddReport, BadRecord, PartitionAggregator
from dqpulse.ingest.partition import AddJob, PartitionKey
from dqpulse.records import RawMessage
from dqpulse.store import checkpoints
from dqpulse.store.db import relaxed_commit

log = logging.getLogger(__name__)

__all__ = ["CAREFUL_AFTER", "CAREFUL_RUN", "DEATHS_TO_BLAME", "KILLED_WORKER", "SURVIVED_S",
           "CarefulCount", "count_carefully"]

#: restores of one checkpoint version from which its partition is counted carefully
CAREFUL_AFTER = 2
#: the reason of a record that killed the workers counting it alone
KILLED_WORKER = "killed_worker"
#: workers that died counting one record alone before the next one dead-letters it
DEATHS_TO_BLAME = 2
#: the most records noted as one run: where a worker died, the next one counts at most
#: this many records one by one (a second or two; the loop's liveness beats meanwhile)
CAREFUL_RUN = 1000
#: a worker that owned a restored partition this long did not die of it: its count of
#: restores is cleared (an idle partition of a worker that crash-looped on another one
#: would otherwise stay named until it next moves)
SURVIVED_S = 30.0


@dataclass
class CarefulCount:
    """A partition counted carefully, and where the worker before died (if it knew)."""

    #: the offset its checkpoint was restored at
    since: int
    #: the run of offsets the worker before died counting: counted one record at a time
    first: int | None = None
    last: int | None = None
    #: the record ``deaths`` workers before died counting alone: counted alone once
    #: more, or dead-lettered (not counted) once ``DEATHS_TO_BLAME`` died of it
    at: int | None = None
    deaths: int = 0

    @classmethod
    def after(cls, restored: checkpoints.Restored, since: int) -> CarefulCount | None:
        """The careful count a restore at offset ``since`` calls for (None: as usual)."""
        if restored.restores < CAREFUL_AFTER:
            return None
        if restored.careful_at is None:
            return cls(since, restored.careful_first, restored.careful_last)
        # a note from before the tries were counted (migration 0011) is a first try
        return cls(since, restored.careful_first, restored.careful_last,
                   restored.careful_at, max(restored.careful_tries, 1))

    @property
    def poison(self) -> int | None:
        """The record to dead-letter: ``DEATHS_TO_BLAME`` workers died counting it alone."""
        return self.at if self.deaths >= DEATHS_TO_BLAME else None

    def ahead(self, saved: int | None) -> bool:
        """Whether the partition, saved up to offset ``saved``, may still meet what killed
        the workers before: it has not moved since the restore (a worker saves what it
        restored at its first checkpoint), or a place where one died is still ahead."""
        marks = [mark for mark in (self.last, self.at) if mark is not None]
        return saved is None or saved <= self.since or any(mark >= saved for mark in marks)

    @property
    def blind(self) -> bool:
        """Whether the worker before died without saying where (no place noted)."""
        return self.first is None and self.at is None

    def alone(self, offset: int) -> bool:
        return self.first is not None and self.last is not None and (
            self.first <= offset <= self.last)


def count_carefully(engine: Engine, key: PartitionKey, aggregator: PartitionAggregator,
                    job: AddJob, careful: CarefulCount,
                    beat: Callable[[], None] | None = None) -> AddReport:
    """Count ``job`` into ``aggregator`` as the module says, in runs of at most
    ``CAREFUL_RUN`` records, calling ``beat`` after each count (the worker's liveness);
    the report includes the dead-lettered record, if the job holds it."""
    batch, offsets = job.batch, job.batch.offsets
    report = AddReport(0, 0, [], 0, {})
    start, size = 0, len(batch)
    while start < size:
        offset = int(offsets[start])
        if offset == careful.poison:
            report = report.combined(_killer(key, aggregator, batch.message(start)))
            start += 1
            continue
        if offset == careful.at:  # a worker died counting it alone: once more, alone
            stop = start + 1
            _note(engine, key, at=offset, tries=careful.deaths + 1)
        elif careful.alone(offset):
            stop = start + 1
            _note(engine, key, at=offset, tries=1)
        else:
            stop = start + 1
            while stop < size and stop - start < CAREFUL_RUN \
                    and not careful.alone(int(offsets[stop])) \
                    and int(offsets[stop]) != careful.at:
                stop += 1
            _note(engine, key, first=offset, last=int(offsets[stop - 1]))
        poll_times = None if job.poll_times is None else job.poll_times[start:stop]
        report = report.combined(aggregator.add(batch.part(start, stop), job.now, poll_times))
        start = stop
        if beat is not None:
            beat()
    _note(engine, key)  # counted: a death after this is not this job's
    return report


def _killer(key: PartitionKey, aggregator: PartitionAggregator,
            message: RawMessage) -> AddReport:
    log.error("%s[%d] offset %d killed %d workers counting it alone (and the workers "
              "before them: one counting the run it is in, one before): it is "
              "dead-lettered as %s, unchanged, and counted in no metric",
              message.topic, message.partition, message.offset, DEATHS_TO_BLAME,
              KILLED_WORKER,
              extra={"dataset": key[0], "partitions": [key[1]]})
    counter = f"bad.{KILLED_WORKER}"
    aggregator.counters[counter] = aggregator.counters.get(counter, 0) + 1
    detail = (f"{DEATHS_TO_BLAME} workers in a row died (killed, or crashed in native code) "
              "counting this record alone")
    return AddReport(0, 0, [BadRecord(message, KILLED_WORKER, detail)], 0,
                     {KILLED_WORKER: 1})


def _note(engine: Engine, key: PartitionKey, *, first: int | None = None,
          last: int | None = None, at: int | None = None, tries: int | None = None) -> None:
    with engine.begin() as conn:
        relaxed_commit(conn)
        checkpoints.note_careful(conn, dataset=key[0], partition=key[1], first=first,
                                 last=last, at=at, tries=tries)


def clear_restores(engine: Engine, keys: list[PartitionKey]) -> None:
    """Forget the restores and notes of partitions whose worker did not die of them."""
    with engine.begin() as conn:
        relaxed_commit(conn)
        checkpoints.clear_restores(conn, keys=keys)
