"""Volume: records and bytes per window (and per partition), plus late records.

``volume.late_records`` of a window counts records that arrived while this window was the
partition's newest, but whose own window had already closed (see ``dqpulse.aggregate``).
They are in no window's ``volume.records``.
"""

from __future__ import annotations

from dqpulse.metrics.base import FamilyState, register_family
from dqpulse.metrics.codec import pack, unpack
from dqpulse.records import ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec


@register_family
class VolumeState(FamilyState):
    family = "volume"

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        self.records = 0
        self.bytes = 0
        self.late_records = 0
        self.by_partition: dict[int, int] = {}

    def update(self, batch: ColumnBatch) -> None:
        self.records += batch.n
        self.bytes += int(batch.sizes.sum())
        if batch.partition >= 0 and batch.n:
            self.by_partition[batch.partition] = (
                self.by_partition.get(batch.partition, 0) + batch.n
            )

    def add_late(self, count: int) -> None:
        self.late_records += count

    def merge(self, other: VolumeState) -> VolumeState:
        self.records += other.records
        self.bytes += other.bytes
        self.late_records += other.late_records
        for partition, count in other.by_partition.items():
            self.by_partition[partition] = self.by_partition.get(partition, 0) + count
        return self

    def to_bytes(self) -> bytes:
        return pack({
            "records": self.records, "bytes": self.bytes, "late": self.late_records,
            "by_partition": {str(p): c for p, c in sorted(self.by_partition.items())},
        })

    @classmethod
    def from_bytes(cls, spec: DatasetSpec, data: bytes) -> VolumeState:
        header, _ = unpack(data)
        state = cls(spec)
        state.records = header["records"]
        state.bytes = header["bytes"]
        state.late_records = header["late"]
        state.by_partition = {int(p): c for p, c in header["by_partition"].items()}
        return state

    def points(self) -> list[MetricPoint]:
        by_partition = {str(p): c for p, c in sorted(self.by_partition.items())}
        return [
            MetricPoint("volume.records", float(self.records),
                        extra={"by_partition": by_partition}),
            MetricPoint("volume.bytes", float(self.bytes)),
            MetricPoint("volume.late_records", float(self.late_records)),
        ]
