"""The source interface every stream source implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from dqpulse.records import PartitionBatch, RawMessage

TopicPartition = tuple[str, int]
# Called with newly assigned partitions; returns the offset to start each one from
# (None = from the beginning of the partition).
AssignCallback = Callable[[Sequence[TopicPartition]], Mapping[TopicPartition, int | None]]
RevokeCallback = Callable[[Sequence[TopicPartition]], None]


class Source(Protocol):
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

    def partition_count(self, topic: str) -> int: ...

    def close(self) -> None: ...


class DeadLetterSink(Protocol):
    def send(self, message: RawMessage, reason: str, detail: str) -> None: ...

    def flush(self) -> None: ...
