"""The record a checkpoint names, checked when the checkpoint is restored.

Offsets alone cannot tell a log from one that replaced it. A topic deleted and created
again while no worker read it, that already holds more records than a checkpoint's offset
when a worker comes back, is read from that offset as if nothing had changed: every record
of the new topic below it would be skipped as "counted before", silently. (A new log that
is shorter than the offset is out of range and met by :mod:`dqpulse.ingest.resets`.)

So each checkpoint also names one record its state counted: the last one aggregated
before its ``next_offset``, by offset and a hash of its key, value and Kafka timestamp
(:func:`witness_of`). A record at an offset never changes in a log, so on assignment the
worker starts the partition one record early, at the witness, and compares what it reads
there (:meth:`Witness.check`):

- the same record: the log is the one counted; the witness is skipped as counted before
  (``OwnedPartition.plan``), at the cost of reading one record again per assignment;
- another record: the log was replaced (the topic was recreated, or an unclean leader
  election truncated the partition and other records were written since): the worker
  counts what it held of the old log, logs an error, counts an ``OffsetReset`` of reason
  ``replaced`` and reads the partition again from offset 0, so every record of the new log
  is counted once;
- nothing there (compaction removed it, retention deleted it, or it was a transaction
  marker's neighbour that is gone): nothing to compare; reading goes on as before.

A source opts in with ``witnesses = True`` (the Kafka sources); the embedded demo source
generates its stream afresh in every process, so it starts at ``next_offset`` as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from dqpulse.records import PartitionBatch

__all__ = ["Witness", "witness_of"]


def witness_of(batch: PartitionBatch, index: int) -> tuple[int, int]:
    """(offset, hash) of the record at position ``index`` of ``batch``: 56 bits of BLAKE2b
    over its timestamp, key and value (fits a signed 64-bit column).

    >>> import numpy as np
    >>> batch = PartitionBatch("t", 0, [b"a", b"b"], np.array([5, 6]), np.array([10, 11]))
    >>> offset, digest = witness_of(batch, 1)
    >>> offset, 0 <= digest < 2 ** 56, digest == witness_of(batch, 1)[1]
    (11, True, True)
    >>> witness_of(batch, 0)[1] == digest
    False
    """
    message = batch.message(index)
    h = hashlib.blake2b(digest_size=7)
    h.update(int(message.timestamp_ms).to_bytes(8, "big", signed=True))
    for part in (message.key, message.value):
        if part is None:
            h.update(b"\x00")
        else:
            h.update(b"\x01" + len(part).to_bytes(8, "big") + part)
    return message.offset, int.from_bytes(h.digest(), "big")


@dataclass(slots=True)
class Witness:
    """A restored checkpoint's witness, until the partition's log has been compared with it."""

    offset: int
    digest: int

    def check(self, batch: PartitionBatch) -> bool | None:
        """Whether ``batch`` (this partition's next records) agrees with the witness:
        ``None`` while the batch ends before it (nothing decided), ``True`` when it holds
        the same record there or none at that offset (nothing to compare), ``False`` when it
        holds another record there (the log was replaced)."""
        if not len(batch) or batch.last_offset < self.offset:
            return None
        index = int(np.searchsorted(batch.offsets, self.offset, side="left"))
        if int(batch.offsets[index]) != self.offset:
            return True
        return witness_of(batch, index)[1] == self.digest
