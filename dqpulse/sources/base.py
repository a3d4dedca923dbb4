"""The source interface every stream source implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from dqpulse.records import PartitionBatch, RawMessage

TopicPartition = tuple[str, int]
# Called with newly assigned partitions; returns the offset to start each one from
# (None = from the beginning of the partition).
AssignCallback = Callable[[Sequence[TopicPartition]], Mapping[TopicPartition, int | None]]
RevokeCallback = Callable[[Sequence[TopicPartition]], None]


class SourceStopped(Exception):
    """Asked to stop (SIGTERM) while the source was still waiting for its brokers."""


@dataclass(frozen=True, slots=True)
class OffsetReset:
    """A partition's position that its log did not hold: a fetch at ``at`` was out of
    range where the log held offsets ``low`` .. ``high`` - 1. The source read on from
    :attr:`to`, the log's start, in both cases :attr:`reason` tells apart. Or, with
    ``replaced_at``: the log holds another record at that offset than the one a checkpoint
    read up to ``at`` counted there (dqpulse.ingest.witness); read again from ``low``."""

    topic: str
    partition: int
    at: int
    low: int
    high: int
    replaced_at: int | None = None

    @property
    def reason(self) -> str:
        """``retention``: the records from ``at`` to ``low`` were deleted (retention, or
        deleted records) before they were read; ``log_shorter``: the log ends before
        ``at``, so it is not the log that was read up to there (the topic was deleted and
        recreated, or an unclean leader election truncated it); ``retried``: the log
        holds ``at`` after all (it moved while the fetch failed), read on from there;
        ``replaced``: the log holds another record at ``replaced_at`` than the one counted
        there, so it is not the log that was read up to ``at`` either (the topic was
        deleted and recreated and holds more records than that by now)."""
        if self.replaced_at is not None:
            return "replaced"
        if self.at < self.low:
            return "retention"
        return "log_shorter" if self.at > self.high else "retried"

    @property
    def to(self) -> int:
        """Where the partition is read from now."""
        return self.at if self.reason == "retried" else self.low

    @property
    def unread(self) -> int:
        """Records deleted before they were read (``retention``; else 0)."""
        return self.low - self.at if self.reason == "retention" else 0


class Source(Protocol):
    # Optional, read with getattr: ``witnesses`` (True: a restored partition may start at
    # its checkpoint's witness, one record before its next offset, and a log found replaced
    # is read again after ``seek(topic, partition, 0)``; dqpulse.ingest.witness) and
    # ``seek(topic, partition, offset)``.
    def subscribe(self, topics: Sequence[str], *, on_assign: AssignCallback,
                  on_revoke: RevokeCallback) -> None: ...

    def poll(self, max_records: int, timeout_s: float) -> list[PartitionBatch]:
        """Up to ``max_records`` messages, one ``PartitionBatch`` per partition (offsets
        ascending within each), or none after ``timeout_s``."""

    def end_offsets(self, partitions: Sequence[TopicPartition], *,
                    fresh: bool = True) -> dict[TopicPartition, int]:
        """Log end offsets. ``fresh``: ask the broker now; otherwise the value the client
        learned from its latest fetch responses where it has one (no round trip; may lag
        behind, so not for deciding that a partition is caught up)."""

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``next offset`` per partition to the group (after the checkpoint)."""

    def take_resets(self) -> list[OffsetReset]:
        """The partitions whose position their log did not hold since the last call, each
        already moved to :attr:`OffsetReset.to` (the consumer never resets one silently)."""

    def partition_count(self, topic: str) -> int: ...

    def close(self) -> None: ...


class DeadLetterSink(Protocol):
    def send(self, message: RawMessage, reason: str, detail: str) -> None: ...

    def flush(self) -> None: ...
